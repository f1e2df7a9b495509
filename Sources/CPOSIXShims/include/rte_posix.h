#ifndef RTE_POSIX_H
#define RTE_POSIX_H
#include <stddef.h>

/* GNU/XSI calls that Swift's Glibc module does not expose. */
int rte_open_pty_master(char *slave_name, size_t slave_name_len);
int rte_pipe_cloexec_nonblock(int fds[2]);
/* glibc's memmem (linear time): the offset of needle in haystack, or -1. */
long rte_find_bytes(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len);
void rte_set_current_thread_name(const char *name);
/* SIGTERM/SIGINT/SIGHUP write one byte (the signal number) to write_fd; async-signal-safe. */
int rte_install_termination_pipe(int write_fd);

/* Starts `file` (PATH searched) with argv/envp (envp NULL: this environment). stdin/stdout/stderr
   are dup'ed from the given descriptors (-1: /dev/null). The child gets an empty signal mask and
   default dispositions: threads of a Swift process block most signals, and posix_spawn would
   otherwise hand that mask to the child, which then ignores SIGTERM. new_group: own process
   group. Returns 0 and the pid, or an errno value. */
int rte_spawn(const char *file, char *const argv[], char *const envp[], const char *directory,
              int stdin_fd, int stdout_fd, int stderr_fd, int new_group, int *pid);
int rte_pipe_cloexec(int fds[2]);
/* A pidfd for `pid` (readable once the process has ended), close-on-exec; -1 and errno on failure. */
int rte_pidfd_open(int pid);

/* Gives free heap pages back to the kernel (glibc malloc_trim; a no-op elsewhere). */
void rte_release_free_heap(void);

/* 1 when child `pid` has ended (not reaped), 0 while it runs, -1 and errno on failure. */
int rte_child_ended(int pid);

#endif
