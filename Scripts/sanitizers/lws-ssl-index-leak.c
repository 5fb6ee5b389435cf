// Run: cc -fsanitize=address Scripts/sanitizers/lws-ssl-index-leak.c $(pkg-config --cflags --libs libwebsockets) -o "${TMPDIR:-/tmp}/lws-leak" && "${TMPDIR:-/tmp}/lws-leak" [noinit]
//
// lws 4.1.6 with OpenSSL, no Muster code: a client vhost's SSL_CTX (with the system CA store and
// lws' reuse record) is never freed when another context was created with
// LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT before the vhost's context is destroyed. Each such context
// re-runs lws_context_init_ssl_library, which stores fresh SSL/SSL_CTX ex_data indices in two
// process-wide globals; the older context's vhost destroy then reads its reuse record at the new
// index, finds none and skips SSL_CTX_free. LeakSanitizer reports ~0.5 MB (exit 1); with
// `noinit` (the second context without the global init, as Transport.createContext does) it
// reports nothing.
#include <libwebsockets.h>
#include <string.h>

static struct lws_context *context(int ssl_global_init) {
    struct lws_context_creation_info i;
    memset(&i, 0, sizeof i);
    i.port = CONTEXT_PORT_NO_LISTEN;
    i.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | (ssl_global_init ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0);
    return lws_create_context(&i);
}

int main(int argc, char **argv) {
    static const struct lws_protocols protocols[] = {{"client", lws_callback_http_dummy, 0, 0}, {0}};
    (void)argv;
    lws_set_log_level(LLL_ERR | LLL_WARN, NULL);
    struct lws_context *a = context(1);
    struct lws_context_creation_info i;
    memset(&i, 0, sizeof i);
    i.port = CONTEXT_PORT_NO_LISTEN;
    i.protocols = protocols;
    i.vhost_name = "client";
    i.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    if (!lws_create_vhost(a, &i)) return 2;
    struct lws_context *b = context(argc < 2); /* a second transport starts */
    lws_context_destroy(a);
    lws_context_destroy(b);
    return 0;
}
