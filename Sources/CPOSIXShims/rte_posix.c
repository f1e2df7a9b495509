#define _GNU_SOURCE
#include "rte_posix.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

long rte_find_bytes(const void *haystack, size_t haystack_len, const void *needle, size_t needle_len) {
    const char *hit = memmem(haystack, haystack_len, needle, needle_len);
    return hit ? (long)(hit - (const char *)haystack) : -1;
}

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

#include <spawn.h>

extern char **environ;

int rte_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

#include <sys/syscall.h>

/* pidfds are close-on-exec from birth. */
int rte_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

#include <stdio.h>
#include <sys/stat.h>

/* The program posix_spawnp would run, looked up here first: an implementation that cannot carry
   exec's error back from the child (glibc's under qemu-user, where CLONE_VFORK becomes a plain
   fork) would otherwise report a missing program as a child that exits 127. 0 with `out` set, or
   the errno exec would give (ENOENT, EACCES, ENAMETOOLONG). A name with a slash is taken as it is
   (a relative one is the child's, after its chdir). */
static int rte_find_program(const char *file, const char *directory, char *out, size_t size) {
    if (!*file) return ENOENT;
    if (strchr(file, '/')) {
        if (strlen(file) >= size) return ENAMETOOLONG;
        strcpy(out, file);
        if (file[0] != '/' && directory) return 0;
        return access(file, X_OK) == 0 ? 0 : errno;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/bin:/usr/bin";
    int found_unrunnable = 0;
    for (const char *p = path;; ) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        /* An empty PATH element is the working directory. */
        int n = len ? snprintf(out, size, "%.*s/%s", (int)len, p, file) : snprintf(out, size, "%s", file);
        if (n > 0 && (size_t)n < size) {
            struct stat st;
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
                if (access(out, X_OK) == 0) return 0;
                found_unrunnable = 1;
            }
        }
        if (!colon) break;
        p = colon + 1;
    }
    return found_unrunnable ? EACCES : ENOENT;
}

int rte_spawn(const char *file, char *const argv[], char *const envp[], const char *directory,
              int stdin_fd, int stdout_fd, int stderr_fd, int new_group, int *pid) {
    char program[4096];
    int found = rte_find_program(file, directory, program, sizeof program);
    if (found != 0) return found;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int r = posix_spawn_file_actions_init(&actions);
    if (r != 0) return r;
    r = posix_spawnattr_init(&attr);
    if (r != 0) { posix_spawn_file_actions_destroy(&actions); return r; }
    const int sources[3] = {stdin_fd, stdout_fd, stderr_fd};
    for (int target = 0; target < 3 && r == 0; target++) {
        if (sources[target] < 0)
            r = posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0);
        else
            r = posix_spawn_file_actions_adddup2(&actions, sources[target], target);
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* Nothing but 0-2 crosses over: a descriptor some library left inheritable would otherwise
       reach the child (mmdebstrap's own descriptors then got numbers past 9, which its `sh -c
       'cat >&28'` hooks cannot name: CI saw it fail). After the dup2s, which read from above 2. */
    if (r == 0) r = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
    if (r == 0 && directory) r = posix_spawn_file_actions_addchdir_np(&actions, directory);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | (new_group ? POSIX_SPAWN_SETPGROUP : 0);
    if (r == 0) r = posix_spawnattr_setsigmask(&attr, &none);
    if (r == 0) r = posix_spawnattr_setsigdefault(&attr, &all);
    if (r == 0 && new_group) r = posix_spawnattr_setpgroup(&attr, 0);
    if (r == 0) r = posix_spawnattr_setflags(&attr, flags);
    if (r == 0) r = posix_spawn(pid, program, &actions, &attr, argv, envp ? envp : environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return r;
}

#if defined(__GLIBC__)
#include <malloc.h>
#endif
/* glibc's malloc_trim: free heap pages back to the kernel. Other C libraries: nothing to do. */
void rte_release_free_heap(void) {
#if defined(__GLIBC__)
    malloc_trim(0);
#endif
}

#include <sys/wait.h>
/* 1 when the child has ended (left unreaped: WNOWAIT), 0 while it runs, -1 and errno on failure. */
int rte_child_ended(int pid) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int r;
    do { r = waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT); } while (r < 0 && errno == EINTR);
    if (r < 0) return -1;
    return info.si_pid == pid ? 1 : 0;
}
