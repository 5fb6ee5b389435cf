// The one C header Swift sees for libwebsockets. Helpers here exist because Swift cannot import
// the macros they stand for (LWS_PRE, OR-ed option macros, variadic lwsl_* logging) or because a
// C callback needs a context pointer lws does not carry; each is prefixed `clws_` and says why.
#ifndef CLIBWEBSOCKETS_SHIM_H
#define CLIBWEBSOCKETS_SHIM_H

#include <libwebsockets.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <string.h>

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
/// Puts `reason` in place of the reason phrase lws wrote in the HTTP/1 status line at `start`
/// ("HTTP/1.x NNN <phrase>" then CRLF). lws 4.1 has phrases for a few statuses only and writes
/// "HTTP/1.1 429 " with none for the rest; this way every status line carries the transport's
/// phrase, as the responses it writes whole do. 1 when it does not fit.
static inline int clws_set_reason(unsigned char *start, unsigned char **p, unsigned char *end,
                                  const char *reason) {
    if (*p - start < 15 || memcmp(start, "HTTP/1.", 7) != 0 || start[12] != ' ') return 0;
    unsigned char *from = start + 13, *to = from; /* the phrase: from "HTTP/1.1 NNN " to CRLF */
    while (to + 1 < *p && !(to[0] == '\r' && to[1] == '\n')) to++;
    if (to + 1 >= *p) return 0;
    size_t len = strlen(reason), old = (size_t)(to - from);
    if (len > old && *p + (len - old) > end) return 1;
    memmove(from + len, to, (size_t)(*p - to));
    memcpy(from, reason, len);
    *p = *p - old + len;
    return 0;
}

static inline int clws_write_http_head(struct lws *wsi, unsigned char *buf, size_t buflen,
                                       unsigned int status, const char *reason,
                                       const char *content_type, uint64_t content_len,
                                       const char *const *names, const char *const *values,
                                       int count) {
    unsigned char *start = buf + LWS_PRE, *p = start, *end = buf + buflen - 1;
    if (lws_add_http_common_headers(wsi, status, content_type, (lws_filepos_t)content_len, &p,
                                    end))
        return 1;
    if (clws_set_reason(start, &p, end, reason)) return 1;
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

/// Replaces the client-certificate CA of a listener's live SSL_CTX (reload on SIGHUP) with the
/// certificates in `ca`: handshakes from now on are verified against the new store, open
/// connections were verified already. lws 4.1 loads `ssl_ca_filepath` once, at vhost creation.
/// The file is loaded into a fresh X509_STORE first, so a file that does not load leaves the live
/// store untouched. The session id context changes as well, so a session (or TLS 1.3 ticket)
/// issued under the old CA cannot be resumed past the new verification.
/// With `apply` 0 it only checks that the file loads (so a reload can refuse before changing
/// anything). Returns 0, or -1 (the file holds no loadable certificate), -4 (out of memory).
static inline int clws_reload_client_ca(void *ctx, const char *ca, unsigned int generation, int apply) {
    X509_STORE *store = X509_STORE_new();
    if (!store) return -4;
    if (X509_STORE_load_locations(store, ca, NULL) != 1) {
        X509_STORE_free(store);
        ERR_clear_error();
        return -1;
    }
    if (!apply) {
        X509_STORE_free(store);
        return 0;
    }
    SSL_CTX_set_cert_store((SSL_CTX *)ctx, store); /* frees the old store */
    unsigned char sid[16] = "muster-ca-";
    memcpy(sid + 10, &generation, sizeof(generation));
    SSL_CTX_set_session_id_context((SSL_CTX *)ctx, sid, sizeof(sid));
    SSL_CTX_flush_sessions((SSL_CTX *)ctx, 0x7fffffffL);
    ERR_clear_error();
    return 0;
}

/// The subject common name of the peer's client certificate, when the connection is TLS, the
/// peer presented one and it verified against the listener's client CA; written NUL-terminated
/// into `out`. lws_tls_peer_cert_info (4.1) is not used: it finds the CN by searching the
/// one-line subject for "/CN=" and keeps whatever follows, so a subject with an RDN after the CN
/// (or a "/CN=" inside another field) would name the wrong credential. Here the CN is the
/// subject's one and only commonName entry, as UTF-8; a subject with none or several has none.
/// Returns the CN's length, or -1 (no verified certificate, no single CN, or it does not fit).
static inline int clws_peer_common_name(struct lws *wsi, char *out, size_t len) {
    SSL *ssl = lws_get_ssl(lws_get_network_wsi(wsi));
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK) return -1;
    X509 *x = SSL_get_peer_certificate(ssl);
    if (!x) return -1;
    int rc = -1;
    X509_NAME *subject = X509_get_subject_name(x);
    int at = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
    if (at >= 0 && X509_NAME_get_index_by_NID(subject, NID_commonName, at) < 0) {
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
        if (n >= 0 && (size_t)n < len && memchr(utf8, 0, (size_t)n) == NULL) {
            memcpy(out, utf8, (size_t)n);
            out[n] = 0;
            rc = n;
        }
        OPENSSL_free(utf8);
    }
    X509_free(x);
    ERR_clear_error();
    return rc;
}

#endif
