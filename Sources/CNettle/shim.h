#ifndef RTE_CNETTLE_SHIM_H
#define RTE_CNETTLE_SHIM_H
#include <stddef.h>
#include <stdint.h>
#include <nettle/sha2.h>
#include <nettle/memops.h>
#include <nettle/md5.h>
#include <stdlib.h>

/* nettle's SHA-256, one call: the Swift side never holds the context. */
static inline void rte_sha256(const uint8_t *data, size_t length, uint8_t digest[SHA256_DIGEST_SIZE]) {
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, length, data);
    sha256_digest(&ctx, SHA256_DIGEST_SIZE, digest);
}
/* SHA-256 over data that arrives in pieces (an upload streamed to disk). */
static inline struct sha256_ctx *rte_sha256_new(void) {
    struct sha256_ctx *c = malloc(sizeof *c);
    if (c) sha256_init(c);
    return c;
}
static inline void rte_sha256_update(struct sha256_ctx *c, const uint8_t *data, size_t length) { sha256_update(c, length, data); }
static inline void rte_sha256_finish(struct sha256_ctx *c, uint8_t digest[SHA256_DIGEST_SIZE]) { sha256_digest(c, SHA256_DIGEST_SIZE, digest); }
static inline void rte_sha256_free(struct sha256_ctx *c) { free(c); }

/* MD5 only because RteCtrl's flash API names uploads by it (file_md5); never for secrets. */
static inline void rte_md5(const uint8_t *data, size_t length, uint8_t digest[MD5_DIGEST_SIZE]) {
    struct md5_ctx ctx;
    md5_init(&ctx);
    md5_update(&ctx, length, data);
    md5_digest(&ctx, MD5_DIGEST_SIZE, digest);
}
#endif
