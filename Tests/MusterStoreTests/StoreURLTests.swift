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

    @Test(arguments: [
        "", "postgres://localhost/muster", "sqlite:", "sqlite://", "sqlite://host/muster.sqlite",
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
    }
}
