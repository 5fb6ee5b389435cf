// The one C header Swift sees for SQLite (Debian's libsqlite3, found through pkg-config).
//
// Why the system library and not GRDB or another Swift wrapper: CI builds every dependency from
// scratch on two cores, and the store needs very little of SQLite: one writer thread that owns the
// connection, explicit group commit (BEGIN IMMEDIATE ... COMMIT around everything queued) and a
// handful of prepared statements that are reset and rebound per row. A thin wrapper in MusterStore
// does that in a few hundred lines and keeps every fsync visible.
//
// Helpers here exist because Swift cannot import the macros they stand for; each is prefixed
// `csqlite_` and says why.
#ifndef CSQLITE_SHIM_H
#define CSQLITE_SHIM_H

#include <sqlite3.h>

/// SQLITE_TRANSIENT is a macro casting -1 to a function pointer, which Swift cannot import: binds
/// text that SQLite copies before the call returns (the Swift buffer may move afterwards).
static inline int csqlite_bind_text_transient(sqlite3_stmt *stmt, int index, const char *text,
                                              int length) {
    return sqlite3_bind_text(stmt, index, text, length, SQLITE_TRANSIENT);
}

/// sqlite3_config is variadic, which Swift cannot call. Turns off SQLite's memory statistics
/// (SQLITE_CONFIG_MEMSTATUS, on by default): with them on, every allocation SQLite makes takes a
/// process-wide mutex to count it, and the store never reads the counts. Must run before the
/// library initializes (before the first connection opens); afterwards it returns SQLITE_MISUSE
/// and changes nothing.
static inline int csqlite_disable_memory_statistics(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

#endif
