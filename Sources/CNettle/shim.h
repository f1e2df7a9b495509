#ifndef RTE_CNETTLE_SHIM_H
#define RTE_CNETTLE_SHIM_H
#include <stddef.h>
#include <stdint.h>
#include <nettle/sha2.h>
#include <nettle/memops.h>

/* nettle's SHA-256, one call: the Swift side never holds the context. */
static inline void rte_sha256(const uint8_t *data, size_t length, uint8_t digest[SHA256_DIGEST_SIZE]) {
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, length, data);
    sha256_digest(&ctx, SHA256_DIGEST_SIZE, digest);
}
#endif
