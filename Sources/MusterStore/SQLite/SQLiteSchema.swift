import MusterProtocol

/// The SQLite store's schema. Its version is the database's `user_version`; `application_id`
/// marks the file as a Muster store.
///
/// One row per batch (its entries as JSON, see `EntriesJSON`), one row per job (inserted with its
/// batch, updated in place, deleted on eviction), one row per backend name, and the epoch.
/// Integers that are `UInt64` in Swift (ids, leases, incarnations, instants) are stored as their
/// bit pattern in SQLite's signed 64-bit INTEGER.
enum SQLiteSchema {
    /// The version this build writes; a store with a larger one is refused (written by a newer
    /// Muster), a smaller one is migrated.
    static let version: Int64 = 4
    /// "MSTR".
    static let applicationID: Int64 = 0x4D53_5452

    static let create = """
        CREATE TABLE meta (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            epoch INTEGER NOT NULL
        );
        INSERT INTO meta (id, epoch) VALUES (1, 0);
        CREATE TABLE batches (
            id INTEGER PRIMARY KEY,
            key TEXT UNIQUE,
            first_job INTEGER NOT NULL,
            job_count INTEGER NOT NULL,
            submitted_at INTEGER NOT NULL,
            entries TEXT NOT NULL,
            owner TEXT
        );
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            batch INTEGER NOT NULL,
            state INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            lost INTEGER NOT NULL,
            backend INTEGER,
            lease INTEGER,
            ended_at INTEGER,
            result TEXT,
            error_code TEXT,
            error_message TEXT,
            bound_at INTEGER,
            started_at INTEGER,
            history TEXT,
            error_details TEXT
        );
        CREATE TABLE backends (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            incarnation INTEGER NOT NULL,
            down INTEGER NOT NULL DEFAULT 0
        );
        PRAGMA application_id = \(applicationID);
        PRAGMA user_version = \(version);
        """

    // Writes. INSERT OR REPLACE, so that applying a change twice can never fail on a constraint
    // (a failed commit is retried as a whole; a change that could never succeed would stall the
    // store). For backends, REPLACE also drops the row of a name that moved to another id.
    static let insertBatch =
        "INSERT OR REPLACE INTO batches (id, key, first_job, job_count, submitted_at, entries, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    static let insertJob = "INSERT OR REPLACE INTO jobs (id, batch, state, attempt, lost) VALUES (?1, ?2, 0, 0, 0)"
    static let bindJob =
        "UPDATE jobs SET state = 1, backend = ?2, lease = ?3, attempt = ?4, bound_at = ?5, started_at = NULL WHERE id = ?1"
    static let startJob = "UPDATE jobs SET started_at = ?2 WHERE id = ?1 AND state = 1"
    static let requeueJob = """
        UPDATE jobs SET state = 0, backend = NULL, lease = NULL, attempt = ?2, lost = ?3, bound_at = NULL,
            started_at = NULL, history = ?4 WHERE id = ?1
        """
    static let endJob = """
        UPDATE jobs SET state = ?2, backend = ?3, lease = ?4, attempt = ?5, lost = ?6, ended_at = ?7, result = ?8,
            error_code = ?9, error_message = ?10, bound_at = ?11, started_at = ?12, history = ?13, error_details = ?14
            WHERE id = ?1
        """
    /// The jobs of one run of consecutive ids (the writer keeps a run on one side of the sign bit,
    /// since the ids' bit patterns compare as signed integers).
    static let deleteJobs = "DELETE FROM jobs WHERE id BETWEEN ?1 AND ?2"
    static let deleteBatch = "DELETE FROM batches WHERE id = ?1"
    /// A registration stores the backend up (`down` back to its default, 0).
    static let upsertBackend = "INSERT OR REPLACE INTO backends (id, name, incarnation) VALUES (?1, ?2, ?3)"
    /// `down` holds when the link went down (`StoreRows.downCode`; 1 in rows written before).
    static let backendDown = "UPDATE backends SET down = ?2 WHERE id = ?1"
    static let forgetBackend = "DELETE FROM backends WHERE id = ?1"

    // Reads, in id order (the rowid order: no sort).
    static let selectBatches =
        "SELECT id, key, first_job, job_count, submitted_at, entries, owner FROM batches ORDER BY id"

    /// Version 1 to 2: batches gained their owner. Rows written before have none (NULL), and read
    /// back as owned by their first entry's owner, which is what version 1 meant.
    static let migrateToVersion2 = """
        ALTER TABLE batches ADD COLUMN owner TEXT;
        PRAGMA user_version = 2;
        """
    /// Version 2 to 3: jobs gained their attempt history and binding times (`StoreRows.job`,
    /// `finalHistory`). Rows written before have none (NULL): their history reads as empty, as it
    /// did then.
    static let migrateToVersion3 = """
        ALTER TABLE jobs ADD COLUMN bound_at INTEGER;
        ALTER TABLE jobs ADD COLUMN started_at INTEGER;
        ALTER TABLE jobs ADD COLUMN history TEXT;
        PRAGMA user_version = 3;
        """
    /// Version 3 to 4: backends gained whether their link was down, failed jobs their error's
    /// details (`DetailsJSON`). Rows written before read as up, and without details, which is
    /// what a restart made of them then.
    static let migrateToVersion4 = """
        ALTER TABLE backends ADD COLUMN down INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE jobs ADD COLUMN error_details TEXT;
        PRAGMA user_version = 4;
        """
    static let selectJobs = """
        SELECT id, batch, state, backend, lease, attempt, lost, ended_at, result, error_code, error_message,
            bound_at, started_at, history, error_details
        FROM jobs ORDER BY id
        """
    static let selectJobsFrom = """
        SELECT id, batch, state, backend, lease, attempt, lost, ended_at, result, error_code, error_message,
            bound_at, started_at, history, error_details
        FROM jobs WHERE id >= ?1 ORDER BY id
        """
    static let selectJobsBelow = """
        SELECT id, batch, state, backend, lease, attempt, lost, ended_at, result, error_code, error_message,
            bound_at, started_at, history, error_details
        FROM jobs WHERE id < ?1 ORDER BY id
        """
    static let selectBackends = "SELECT id, name, incarnation, down FROM backends ORDER BY id"
}
