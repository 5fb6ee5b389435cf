// The one C header Swift sees for PostgreSQL's client library (Debian's libpq, found through
// pkg-config).
//
// Why libpq and not postgres-nio: postgres-nio brings SwiftNIO's event loops beside the one
// libwebsockets loop the daemon already runs, and minutes of CI build on two cores. The job store
// already has its own writer thread with group commit, which is exactly what libpq's blocking API
// fits; the leader election needs deadlines, which libpq's asynchronous calls (PQsendQueryParams,
// PQconsumeInput, PQisBusy) with poll() give. A thin wrapper in MusterStore does both.
#ifndef CLIBPQ_SHIM_H
#define CLIBPQ_SHIM_H

#include <libpq-fe.h>

#endif
