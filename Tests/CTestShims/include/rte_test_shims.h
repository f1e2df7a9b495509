#ifndef RTE_TEST_SHIMS_H
#define RTE_TEST_SHIMS_H

/* Runs `body(context)` on a new thread whose kernel answers pidfd_open with ENOSYS, as Linux
 * before 5.3 does (a seccomp filter on that thread only: the rest of the test process keeps
 * its pidfds). Returns 0, or an errno value if the thread or the filter could not be set up. */
int rte_test_without_pidfd_open(void (*body)(void *context), void *context);

#endif
