// The one C header Swift sees for libwebsockets. Helpers here exist because Swift cannot import
// the macros they stand for (LWS_PRE, OR-ed option macros, variadic lwsl_* logging); each is
// prefixed `clws_` and says why it exists.
#ifndef CLIBWEBSOCKETS_SHIM_H
#define CLIBWEBSOCKETS_SHIM_H

#include <libwebsockets.h>

/// LWS_PRE is a macro expression Swift cannot import: the headroom lws needs before a payload.
static inline size_t clws_pre(void) { return LWS_PRE; }

#endif
