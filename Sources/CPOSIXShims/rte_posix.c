#define _GNU_SOURCE
#include "rte_posix.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

int rte_open_pty_master(char *slave_name, size_t slave_name_len) {
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return -1;
    if (grantpt(fd) != 0 || unlockpt(fd) != 0 || ptsname_r(fd, slave_name, slave_name_len) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int rte_pipe_cloexec_nonblock(int fds[2]) { return pipe2(fds, O_CLOEXEC | O_NONBLOCK); }

void rte_set_current_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

#include <signal.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

/* A handler, not only sigwait: libdispatch parks Swift's main thread in sigsuspend with every
   signal unblocked, so a blocked-everywhere-else SIGTERM would still reach it and kill the daemon
   before it restores the safe GPIO values. The handler only writes to a pipe. */
static volatile int termination_fd = -1;

static void rte_termination_handler(int signo) {
    unsigned char b = (unsigned char)signo;
    int saved = errno;
    if (termination_fd >= 0) { ssize_t r = write(termination_fd, &b, 1); (void)r; }
    errno = saved;
}

int rte_install_termination_pipe(int write_fd) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = rte_termination_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    termination_fd = write_fd;
    if (sigaction(SIGTERM, &sa, 0) != 0) return -1;
    if (sigaction(SIGINT, &sa, 0) != 0) return -1;
    if (sigaction(SIGHUP, &sa, 0) != 0) return -1;
    return 0;
}
