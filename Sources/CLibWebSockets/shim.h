// The one C header Swift sees for libwebsockets. Helpers here exist because Swift cannot import
// the macros they stand for (LWS_PRE, OR-ed option macros, variadic lwsl_* logging) or because a
// C callback needs a context pointer lws does not carry; each is prefixed `clws_` and says why.
#ifndef CLIBWEBSOCKETS_SHIM_H
#define CLIBWEBSOCKETS_SHIM_H

#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <openssl/err.h>

/// LWS_PRE is a macro expression Swift cannot import: the headroom lws needs before a payload.
static inline size_t clws_pre(void) { return LWS_PRE; }

/// Context options: UTF-8 validation of text frames, explicit vhosts so listeners and client
/// vhosts are created later on the loop thread and, when `ssl_global_init`, OpenSSL's global init.
/// lws 4.1 allocates its process-wide OpenSSL ex_data indices anew in every context that asks for
/// the global init, so only the first context of the process may (Transport.createContext). Some of
/// these macros are OR-ed expressions Swift cannot import, so the whole set is built here.
static inline uint64_t clws_context_options(int ssl_global_init) {
    return LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_VALIDATE_UTF8
        | (ssl_global_init ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0);
}

/// Vhost options for a listener. LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT is an OR-ed
/// macro (it implies SSL global init), so Swift cannot import it; mTLS is selected here instead.
/// FAIL_UPON_UNABLE_TO_BIND makes a busy port an error instead of a vhost that never listens.
static inline uint64_t clws_listener_options(int require_client_cert, int tls) {
    uint64_t o = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND
        | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (tls) o |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (require_client_cert) o |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT;
    return o;
}

/// Vhost options for a client-only vhost (no listener): text frames received by clients are
/// validated as UTF-8 as well.
static inline uint64_t clws_client_vhost_options(void) {
    return LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
}

/// A timer for lws's scheduler. lws calls a sul callback with nothing but the sul pointer, so the
/// sul is embedded first in this struct and the callback recovers the owner and the timer id.
typedef struct clws_timer {
    lws_sorted_usec_list_t sul;
    void *owner;
    uint64_t id;
} clws_timer;

/// Recovers the enclosing clws_timer from the sul pointer lws hands to the callback.
static inline clws_timer *clws_timer_from_sul(lws_sorted_usec_list_t *sul) {
    return (clws_timer *)(void *)sul;
}

/// Schedules (or reschedules) a timer `usecs` from now on the context's only service thread.
static inline void clws_timer_schedule(struct lws_context *ctx, clws_timer *t, sul_cb_t cb,
                                       int64_t usecs) {
    lws_sul_schedule(ctx, 0, &t->sul, cb, (lws_usec_t)usecs);
}

/// Cancels a pending timer; harmless when it is not scheduled.
static inline void clws_timer_cancel(clws_timer *t) { lws_sul_cancel(&t->sul); }

/// The payload of LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER is a `char **` cursor plus the room
/// left; this appends one header there (Swift cannot conveniently walk `unsigned char **`).
static inline int clws_append_header(struct lws *wsi, void *in, size_t len, const char *name,
                                     const char *value, int value_len) {
    unsigned char **p = (unsigned char **)in;
    unsigned char *end = (*p) + len;
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, value_len, p, end);
}

/// Writes a complete HTTP response head (status, content type and length, extra header lines
/// already formatted as "name: value\r\n") into `buf` past LWS_PRE and sends it. The
/// `unsigned char **` cursor API of lws is awkward from Swift, so the cursor lives here.
static inline int clws_write_http_head(struct lws *wsi, unsigned char *buf, size_t buflen,
                                       unsigned int status, const char *content_type,
                                       uint64_t content_len, const char *const *names,
                                       const char *const *values, int count) {
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + buflen - 1;
    if (lws_add_http_common_headers(wsi, status, content_type, (lws_filepos_t)content_len, &p,
                                    end))
        return 1;
    for (int i = 0; i < count; i++) {
        if (lws_add_http_header_by_name(wsi, (const unsigned char *)names[i],
                                        (const unsigned char *)values[i],
                                        (int)strlen(values[i]), &p, end))
            return 1;
    }
    return lws_finalize_write_http_header(wsi, start, &p, end);
}

/// Hostile close for a connection that cannot even take a close frame (slow peer): lws drops it
/// at its next timeout check. LWS_TO_KILL_ASYNC is a macro; the reason enum is imported fine.
static inline void clws_kill_soon(struct lws *wsi, int secs) {
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, secs);
}

/// Drops a connection now, without a close frame (LWS_CLOSE_STATUS_NOSTATUS, as lws' own validity
/// timeout did): for a peer that has gone silent. Callbacks (CLOSED) run inside this call.
/// LWS_TO_KILL_SYNC is a macro.
static inline void clws_kill_now(struct lws *wsi) {
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

/// SSL_CTX_set_mode is a macro over SSL_CTX_ctrl. RELEASE_BUFFERS lets OpenSSL free a
/// connection's ~34 KB of record buffers while it is idle, which is most of the memory of an
/// idle TLS link (thousands of backend links are mostly idle).
///
/// SSL_CTX_set_min_proto_version is a macro too. TLS 1.2 is the floor on every server and client
/// context, whatever the system's OpenSSL configuration allows.
static inline void clws_tune_ssl_ctx(void *ctx) {
    SSL_CTX_set_mode((SSL_CTX *)ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_min_proto_version((SSL_CTX *)ctx, TLS1_2_VERSION);
}

/// Loads a new certificate chain and private key into a listener's live SSL_CTX (reload on
/// SIGHUP): connections accepted from now on present them, open ones keep what they have (each SSL
/// copied the certificate when it was created). lws 4.1 has no reload for a vhost whose files
/// were given by path, so it is done on the SSL_CTX directly. Both files are loaded into a scratch
/// SSL_CTX first, so files that do not load or do not match leave the live one untouched.
/// Returns 0, or -1 (certificate unreadable), -2 (key unreadable), -3 (key does not match the
/// certificate), -4 (out of memory), -5 (the live context refused what the scratch one took).
static inline int clws_reload_server_certificate(void *ctx, const char *cert, const char *key) {
    SSL_CTX *scratch = SSL_CTX_new(TLS_server_method());
    if (!scratch) return -4;
    int rc = 0;
    if (SSL_CTX_use_certificate_chain_file(scratch, cert) != 1) rc = -1;
    else if (SSL_CTX_use_PrivateKey_file(scratch, key, SSL_FILETYPE_PEM) != 1) rc = -2;
    else if (SSL_CTX_check_private_key(scratch) != 1) rc = -3;
    SSL_CTX_free(scratch);
    if (rc == 0 && (SSL_CTX_use_certificate_chain_file((SSL_CTX *)ctx, cert) != 1
                    || SSL_CTX_use_PrivateKey_file((SSL_CTX *)ctx, key, SSL_FILETYPE_PEM) != 1
                    || SSL_CTX_check_private_key((SSL_CTX *)ctx) != 1))
        rc = -5;
    ERR_clear_error();
    return rc;
}

#endif
