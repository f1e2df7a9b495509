#ifndef RTE_CMICROHTTPD_SHIM_H
#define RTE_CMICROHTTPD_SHIM_H
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <microhttpd.h>

/* MHD_start_daemon is variadic and several enum constants do not import into Swift:
   these small wrappers are the whole C surface the Swift side uses. */

typedef enum MHD_Result (*rte_mhd_access_handler)(void *cls, struct MHD_Connection *connection,
    const char *url, const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **req_cls);
typedef void (*rte_mhd_completed_handler)(void *cls, struct MHD_Connection *connection,
    void **req_cls, enum MHD_RequestTerminationCode toe);
/* started: 1 when a connection opens, 0 when it closes. */
typedef void (*rte_mhd_connection_handler)(void *cls, struct MHD_Connection *connection, int started);

/* MHD's connection callback with its enum turned into a flag Swift can read. */
struct rte_mhd_connection_notify { rte_mhd_connection_handler handler; void *cls; };
static inline void rte_mhd_connection_trampoline(void *cls, struct MHD_Connection *connection,
    void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
    (void)socket_context;
    struct rte_mhd_connection_notify *n = (struct rte_mhd_connection_notify *)cls;
    n->handler(n->cls, connection, toe == MHD_CONNECTION_NOTIFY_STARTED ? 1 : 0);
}

/* The connection's socket, to watch it for a hang-up while the connection is suspended. */
static inline int rte_mhd_connection_fd(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info ? info->connect_fd : -1;
}

/* Starts a daemon with its own epoll thread. host: IPv4 or IPv6 literal. Returns NULL on failure. */
/* Decodes %XX in a path or query value as MHD's own unescaping does, except %00: a NUL would cut
   the value short in every C string after it ("k%00x" became the artifact "k"), so it stays
   "%00" and the route sees a name it refuses. */
static inline int rte_hex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}
static size_t rte_mhd_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls; (void)c;
    char *r = s, *w = s;
    while (*r) {
        int hi = r[0] == '%' && r[1] ? rte_hex(r[1]) : -1, lo = hi >= 0 && r[2] ? rte_hex(r[2]) : -1;
        if (hi >= 0 && lo >= 0 && (hi | lo) != 0) { *w++ = (char)(hi * 16 + lo); r += 3; } else { *w++ = *r++; }
    }
    *w = 0;
    return (size_t)(w - s);
}

static inline struct MHD_Daemon *rte_mhd_start(const char *host, uint16_t port, int tls,
    rte_mhd_access_handler handler, void *cls, rte_mhd_completed_handler completed,
    unsigned int connection_timeout, unsigned int connection_limit, unsigned int per_address_limit,
    struct rte_mhd_connection_notify *notify,
    const char *cert_pem, const char *key_pem)
{
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME
        | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG;
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof(addr));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1) return NULL;
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        if (inet_pton(AF_INET, host, &a4->sin_addr) != 1) return NULL;
    }
    if (tls) {
        flags |= MHD_USE_TLS;
        return MHD_start_daemon(flags, port, NULL, NULL, handler, cls,
            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
            MHD_OPTION_NOTIFY_COMPLETED, completed, cls,
            MHD_OPTION_CONNECTION_TIMEOUT, connection_timeout,
            MHD_OPTION_CONNECTION_LIMIT, connection_limit,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address_limit,
            MHD_OPTION_NOTIFY_CONNECTION, rte_mhd_connection_trampoline, notify,
            MHD_OPTION_HTTPS_MEM_CERT, cert_pem,
            MHD_OPTION_HTTPS_MEM_KEY, key_pem,
            MHD_OPTION_UNESCAPE_CALLBACK, rte_mhd_unescape, NULL,
            MHD_OPTION_END);
    }
    return MHD_start_daemon(flags, port, NULL, NULL, handler, cls,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_NOTIFY_COMPLETED, completed, cls,
        MHD_OPTION_CONNECTION_TIMEOUT, connection_timeout,
        MHD_OPTION_CONNECTION_LIMIT, connection_limit,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address_limit,
        MHD_OPTION_NOTIFY_CONNECTION, rte_mhd_connection_trampoline, notify,
        MHD_OPTION_UNESCAPE_CALLBACK, rte_mhd_unescape, NULL,
        MHD_OPTION_END);
}

/* The port actually bound (for port 0). */
/* 1 when this libmicrohttpd can serve HTTPS (Debian's can; one configured --disable-https cannot). */
static inline int rte_mhd_supports_tls(void) { return MHD_is_feature_supported(MHD_FEATURE_TLS) == MHD_YES; }

static inline uint16_t rte_mhd_bound_port(struct MHD_Daemon *d) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

static inline struct MHD_Response *rte_mhd_response_copy(size_t size, const void *data) {
    return MHD_create_response_from_buffer(size, (void *)data, MHD_RESPMEM_MUST_COPY);
}

typedef ssize_t (*rte_mhd_reader)(void *cls, uint64_t pos, char *buf, size_t max);
typedef void (*rte_mhd_free)(void *cls);

static inline struct MHD_Response *rte_mhd_response_stream(rte_mhd_reader reader, void *cls, rte_mhd_free free_cb) {
    return MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, reader, cls, free_cb);
}

/* A file region; MHD closes fd when the response is destroyed. */
static inline struct MHD_Response *rte_mhd_response_file(uint64_t size, int fd, uint64_t offset) {
    return MHD_create_response_from_fd_at_offset64(size, fd, offset);
}

static inline ssize_t rte_mhd_reader_end(void) { return MHD_CONTENT_READER_END_OF_STREAM; }
static inline ssize_t rte_mhd_reader_error(void) { return MHD_CONTENT_READER_END_WITH_ERROR; }

typedef void (*rte_mhd_upgrade)(void *cls, struct MHD_Connection *connection, void *req_cls,
    const char *extra_in, size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh);

static inline struct MHD_Response *rte_mhd_response_upgrade(rte_mhd_upgrade handler, void *cls) {
    return MHD_create_response_for_upgrade(handler, cls);
}

static inline void rte_mhd_upgrade_close(struct MHD_UpgradeResponseHandle *urh) {
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
}

/* Client address as text ("192.0.2.1" or "::1"). */
static inline void rte_mhd_client_address(struct MHD_Connection *c, char *out, size_t len) {
    out[0] = 0;
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr) return;
    const struct sockaddr *sa = info->client_addr;
    if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, len);
    else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) inet_ntop(AF_INET, &a6->s6_addr[12], out, len);
        else inet_ntop(AF_INET6, a6, out, len);
    }
}

typedef enum MHD_Result (*rte_mhd_header_iterator)(void *cls, enum MHD_ValueKind kind, const char *key, const char *value);

static inline int rte_mhd_headers(struct MHD_Connection *c, rte_mhd_header_iterator it, void *cls) {
    return MHD_get_connection_values(c, MHD_HEADER_KIND, it, cls);
}
static inline int rte_mhd_query(struct MHD_Connection *c, rte_mhd_header_iterator it, void *cls) {
    return MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, it, cls);
}

static inline int rte_mhd_completed_ok(enum MHD_RequestTerminationCode toe) { return toe == MHD_REQUEST_TERMINATED_COMPLETED_OK; }
static inline enum MHD_Result rte_mhd_yes(void) { return MHD_YES; }
static inline enum MHD_Result rte_mhd_no(void) { return MHD_NO; }
#endif
