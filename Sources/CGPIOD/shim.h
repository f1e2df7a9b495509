#ifndef RTE_CGPIOD_SHIM_H
#define RTE_CGPIOD_SHIM_H
#include <gpiod.h>

/* GPIOD_BIT() flag macros do not import into Swift. */
static inline int rte_gpiod_flag_active_low(void) { return GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW; }
static inline int rte_gpiod_flag_open_drain(void) { return GPIOD_LINE_REQUEST_FLAG_OPEN_DRAIN; }
static inline int rte_gpiod_flag_bias_pull_up(void) { return GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP; }
static inline int rte_gpiod_flag_bias_pull_down(void) { return GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN; }
static inline int rte_gpiod_flag_bias_disable(void) { return GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE; }
#endif
