import MusterStore
import Testing

@Suite struct StoreURLTests {
    @Test func parsesMemoryAndSQLiteURLs() throws {
        #expect(try StoreURL(parsing: "memory:") == .memory)
        #expect(
            try StoreURL(parsing: "sqlite:///var/lib/muster/muster.sqlite")
                == .sqlite(path: "/var/lib/muster/muster.sqlite"))
        #expect(try StoreURL(parsing: "sqlite:state/muster.sqlite") == .sqlite(path: "state/muster.sqlite"))
        #expect(try StoreURL(parsing: "sqlite:/abs/one-slash.sqlite") == .sqlite(path: "/abs/one-slash.sqlite"))
        #expect(try StoreURL(parsing: "sqlite:///with space/100%.sqlite") == .sqlite(path: "/with space/100%.sqlite"))
    }

    @Test func parsesPostgresURLsAndKeepsTheirParametersForLibpq() throws {
        for text in [
            "postgres://muster:s3cret@db.example:5432/muster", "postgresql://muster@10.0.0.5/jobs?sslmode=require",
            "postgres://localhost/muster", "postgres:///muster?host=/run/postgresql",
            "postgres://a:5432,b:5433/muster",
        ] {
            #expect(try StoreURL(parsing: text) == .postgres(url: text))
        }
    }

    @Test func aPostgresURLDescribesItselfWithoutItsPassword() throws {
        let url = try StoreURL(parsing: "postgres://muster:s3cret@db.example:5432/muster?sslmode=require")
        #expect(url.description == "postgres://muster:***@db.example:5432/muster?sslmode=require")
        let inQuery = try StoreURL(
            parsing: "postgresql://db.example/muster?user=muster&password=s3cret&sslmode=require")
        #expect(inQuery.description == "postgresql://db.example/muster?user=muster&password=***&sslmode=require")
        #expect(
            try StoreURL(parsing: "postgres://muster@db.example/muster").description
                == "postgres://muster@db.example/muster")
        // A URL libpq cannot parse is refused, and the message does not show the password either.
        let error = #expect(throws: StoreURLError.self) {
            try StoreURL(parsing: "postgres://muster:s3cret@db.example:5432/muster?nosuchoption=1")
        }
        #expect(error?.message.contains("nosuchoption") == true)
        #expect(error?.message.contains("s3cret") == false)
    }

    @Test(arguments: [
        "", "postgres://[::1/muster", "postgres://h/db?sslmode=x&bogus=1", "mysql://localhost/muster", "sqlite:",
        // libpq parses any port text and fails only when it connects.
        "postgres://u:pw@127.0.0.1:notaport/db", "postgres://h:0/db", "postgres://h:65536/db", "postgres://h/db?port=x",
        "sqlite://", "sqlite://host/muster.sqlite",
        "sqlite:///var/lib/muster/", "file:///x.sqlite", "memory:x",
    ])
    func refusesWhatItCannotUse(_ text: String) {
        let error = #expect(throws: StoreURLError.self) { try StoreURL(parsing: text) }
        #expect(error?.message.isEmpty == false)
    }

    @Test func describesItselfAsItParses() throws {
        for text in ["memory:", "sqlite:///var/lib/muster.sqlite", "sqlite:relative/muster.sqlite"] {
            #expect(try StoreURL(parsing: text).description == text)
        }
    }

    @Test func defaultPathFollowsXDGStateHome() {
        #expect(
            StoreURL.defaultSQLitePath(environment: ["XDG_STATE_HOME": "/xdg/state/", "HOME": "/home/ana"])
                == "/xdg/state/muster/muster.sqlite")
        #expect(
            StoreURL.defaultSQLitePath(environment: ["HOME": "/home/ana"])
                == "/home/ana/.local/state/muster/muster.sqlite")
        // A relative XDG_STATE_HOME is invalid per the spec and ignored.
        #expect(
            StoreURL.defaultSQLitePath(environment: ["XDG_STATE_HOME": "state", "HOME": "/home/ana"])
                == "/home/ana/.local/state/muster/muster.sqlite")
        #expect(StoreURL.defaultSQLitePath(environment: ["HOME": "/"]) == "/.local/state/muster/muster.sqlite")
    }

    @Test func makesTheStoreItNames() throws {
        #expect(StoreURL.memory.makeStore() is MemoryJobStore)
        let store = StoreURL.sqlite(path: "/var/lib/muster/x.sqlite").makeStore()
        #expect((store as? SQLiteJobStore)?.path == "/var/lib/muster/x.sqlite")
        let postgres = StoreURL.postgres(url: "postgres://muster:pw@db/muster").makeStore(fencingToken: 7)
        #expect((postgres as? PostgresJobStore)?.target == "postgres://muster:***@db/muster")
    }
}
