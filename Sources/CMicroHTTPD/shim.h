#ifndef RTE_CMICROHTTPD_SHIM_H
#define RTE_CMICROHTTPD_SHIM_H
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <microhttpd.h>
#endif
