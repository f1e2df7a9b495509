#ifndef RTE_CZLIB_SHIM_H
#define RTE_CZLIB_SHIM_H
#include <zlib.h>

/* inflateInit2 is a macro in zlib.h; Swift cannot call macros. 15 + 16: gzip framing only. */
static inline int rte_inflate_init_gzip(z_stream *s) { return inflateInit2(s, 15 + 16); }
#endif
