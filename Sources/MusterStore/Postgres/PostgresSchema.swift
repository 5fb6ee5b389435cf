/// The PostgreSQL store's schema, in the database the URL names (tables prefixed `muster_`, so the
/// database may hold others). Its version is the row of `muster_schema`; migrations run at
/// start-up in one transaction under an advisory lock, so coordinators starting at once do not
/// race (the second waits, then finds the schema current).
///
/// Like the SQLite schema: one row per batch (entries as `EntriesJSON`), one per job, one per
/// backend name, the epoch; plus `muster_leader`, the lease of `PostgresLeaderElection`, which the
/// store reads to fence commits. Integers that are `UInt64` in Swift are stored as their bit
/// pattern in `bigint`; texts that may hold any byte (keys, owners, results, messages) as `bytea`.
enum PostgresSchema {
    static let version: Int64 = 4
    /// The key of the advisory lock migrations hold ("MSTR").
    static let migrationLock: Int64 = 0x4D53_5452

    /// Steps from version n-1 to n, by index n-1.
    static let migrations: [String] = [
        """
        CREATE TABLE muster_meta (
            id integer PRIMARY KEY CHECK (id = 1),
            epoch bigint NOT NULL
        );
        INSERT INTO muster_meta (id, epoch) VALUES (1, 0);
        CREATE TABLE muster_batches (
            id bigint PRIMARY KEY,
            key bytea UNIQUE,
            first_job bigint NOT NULL,
            job_count bigint NOT NULL,
            submitted_at bigint NOT NULL,
            entries bytea NOT NULL,
            owner bytea
        );
        CREATE TABLE muster_jobs (
            id bigint PRIMARY KEY,
            batch bigint NOT NULL,
            state smallint NOT NULL,
            attempt bigint NOT NULL,
            lost bigint NOT NULL,
            backend bigint,
            lease bigint,
            ended_at bigint,
            result bytea,
            error_code bytea,
            error_message bytea
        );
        CREATE TABLE muster_backends (
            id bigint PRIMARY KEY,
            name bytea NOT NULL UNIQUE,
            incarnation bigint NOT NULL
        );
        CREATE TABLE muster_leader (
            id integer PRIMARY KEY CHECK (id = 1),
            name text NOT NULL,
            address text NOT NULL,
            token bigint NOT NULL,
            expires_at timestamptz NOT NULL
        );
        CREATE FUNCTION muster_check_fence(expected bigint) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            held bigint;
        BEGIN
            -- FOR SHARE: a new leader's takeover (an UPDATE of this row) waits until this
            -- transaction ends, so no commit under an old token can land after a new term began.
            SELECT token INTO held FROM muster_leader WHERE id = 1 FOR SHARE;
            IF held IS DISTINCT FROM expected THEN
                RAISE EXCEPTION 'fenced: another coordinator leads now (token %, this coordinator''s %)',
                    coalesce(held::text, 'none'), expected USING ERRCODE = 'MU001';
            END IF;
        END $$;
        """,
        // Version 2: jobs gained their attempt history and the time of their current binding.
        """
        ALTER TABLE muster_jobs ADD COLUMN bound_at bigint;
        ALTER TABLE muster_jobs ADD COLUMN started_at bigint;
        ALTER TABLE muster_jobs ADD COLUMN history bytea;
        """,
        // Version 3: backends gained whether their link was down (rows before read as up), failed
        // jobs their error's details (`DetailsJSON`; rows before have none).
        """
        ALTER TABLE muster_backends ADD COLUMN down smallint NOT NULL DEFAULT 0;
        ALTER TABLE muster_jobs ADD COLUMN error_details bytea;
        """,
        // Version 4: `down` holds when the link went down (`StoreRows.downCode`: nanoseconds since
        // the epoch; 1 in rows before, a fall at a time not kept).
        """
        ALTER TABLE muster_backends ALTER COLUMN down TYPE bigint;
        """,
    ]

    /// Creates or migrates the schema; refuses a newer one. Blocks on the advisory lock while
    /// another coordinator migrates.
    static func migrate(_ connection: PostgresConnection, until deadline: UInt64) throws(PostgresError) -> Int64 {
        do throws(PostgresError) {
            try connection.run("BEGIN", until: deadline)
            try connection.run("SELECT pg_advisory_xact_lock(\(migrationLock))", until: deadline)
            try connection.run(
                "CREATE TABLE IF NOT EXISTS muster_schema (id integer PRIMARY KEY CHECK (id = 1), version bigint NOT NULL)",
                until: deadline)
            let found = try connection.query("SELECT version FROM muster_schema WHERE id = 1", until: deadline)
            let version = found.flatMap { $0.rows > 0 ? $0.int64(0, 0) : nil } ?? 0
            if version > Self.version {
                try connection.run("ROLLBACK", until: deadline)
                return version
            }
            for step in Int(version)..<Int(Self.version) {
                try connection.run(migrations[step], until: deadline)
            }
            try connection.run(
                "INSERT INTO muster_schema (id, version) VALUES (1, \(Self.version)) ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
                until: deadline)
            try connection.run("COMMIT", until: deadline)
            return Self.version
        } catch {
            if !connection.broken { _ = try? connection.run("ROLLBACK", until: deadline) }
            throw error
        }
    }

    // The store's statements, prepared once per connection: name, SQL, parameter types (OIDs:
    // 20 bigint, 17 bytea). The writes replace whole rows, as the SQLite store's INSERT OR
    // REPLACE does, so a retried commit can never fail on a constraint.
    static let int8: UInt32 = 20
    static let bytea: UInt32 = 17

    static let statements: [(name: String, sql: String, types: [UInt32])] = [
        ("fence", "SELECT muster_check_fence($1)", [int8]),
        ("drop_batch_key", "DELETE FROM muster_batches WHERE key = $2 AND id <> $1", [int8, bytea]),
        (
            "insert_batch",
            """
            INSERT INTO muster_batches (id, key, first_job, job_count, submitted_at, entries, owner)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key, first_job = EXCLUDED.first_job,
                job_count = EXCLUDED.job_count, submitted_at = EXCLUDED.submitted_at, entries = EXCLUDED.entries,
                owner = EXCLUDED.owner
            """, [int8, bytea, int8, int8, int8, bytea, bytea]
        ),
        (
            "insert_jobs",
            """
            INSERT INTO muster_jobs (id, batch, state, attempt, lost)
            SELECT g, $2, 0, 0, 0 FROM generate_series($1, $1 + $3 - 1) AS g
            ON CONFLICT (id) DO UPDATE SET batch = EXCLUDED.batch, state = 0, attempt = 0, lost = 0, backend = NULL,
                lease = NULL, ended_at = NULL, result = NULL, error_code = NULL, error_message = NULL, bound_at = NULL,
                started_at = NULL, history = NULL, error_details = NULL
            """, [int8, int8, int8]
        ),
        (
            "bind_job",
            """
            UPDATE muster_jobs SET state = 1, backend = $2, lease = $3, attempt = $4, bound_at = $5, started_at = NULL
                WHERE id = $1
            """, [int8, int8, int8, int8, int8]
        ),
        ("start_job", "UPDATE muster_jobs SET started_at = $2 WHERE id = $1 AND state = 1", [int8, int8]),
        (
            "requeue_job",
            """
            UPDATE muster_jobs SET state = 0, backend = NULL, lease = NULL, attempt = $2, lost = $3, bound_at = NULL,
                started_at = NULL, history = $4 WHERE id = $1
            """, [int8, int8, int8, bytea]
        ),
        (
            "end_job",
            """
            UPDATE muster_jobs SET state = $2, backend = $3, lease = $4, attempt = $5, lost = $6, ended_at = $7,
                result = $8, error_code = $9, error_message = $10, bound_at = $11, started_at = $12, history = $13,
                error_details = $14 WHERE id = $1
            """, [int8, int8, int8, int8, int8, int8, int8, bytea, bytea, bytea, int8, int8, bytea, bytea]
        ),
        ("delete_job", "DELETE FROM muster_jobs WHERE id = $1", [int8]),
        ("delete_batch", "DELETE FROM muster_batches WHERE id = $1", [int8]),
        ("drop_backend_name", "DELETE FROM muster_backends WHERE name = $2 AND id <> $1", [int8, bytea]),
        (
            "upsert_backend",
            """
            INSERT INTO muster_backends (id, name, incarnation, down) VALUES ($1, $2, $3, 0)
            ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, incarnation = EXCLUDED.incarnation, down = 0
            """, [int8, bytea, int8]
        ),
        ("backend_down", "UPDATE muster_backends SET down = $2 WHERE id = $1", [int8, int8]),
        ("forget_backend", "DELETE FROM muster_backends WHERE id = $1", [int8]),
        (
            "sizes",
            """
            SELECT (pg_total_relation_size('muster_jobs') + pg_total_relation_size('muster_batches')
                + pg_total_relation_size('muster_backends') + pg_total_relation_size('muster_meta'))::bigint
            """, []
        ),
    ]

    static let selectBatches =
        "SELECT id, key, first_job, job_count, submitted_at, entries, owner FROM muster_batches ORDER BY id"
    static let declareJobs = """
        DECLARE muster_jobs_cursor NO SCROLL CURSOR FOR
        SELECT id, batch, state, backend, lease, attempt, lost, ended_at, result, error_code, error_message,
            bound_at, started_at, history, error_details
        FROM muster_jobs ORDER BY id
        """
    static let selectBackends = "SELECT id, name, incarnation, down FROM muster_backends ORDER BY id"
}
