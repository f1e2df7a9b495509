#ifndef RTE_POSIX_H
#define RTE_POSIX_H
#include <stddef.h>

/* GNU/XSI calls that Swift's Glibc module does not expose. */
int rte_open_pty_master(char *slave_name, size_t slave_name_len);
int rte_pipe_cloexec_nonblock(int fds[2]);
void rte_set_current_thread_name(const char *name);
/* SIGTERM/SIGINT/SIGHUP write one byte (the signal number) to write_fd; async-signal-safe. */
int rte_install_termination_pipe(int write_fd);

#endif
