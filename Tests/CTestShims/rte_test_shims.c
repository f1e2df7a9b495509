#define _GNU_SOURCE
#include "rte_test_shims.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

struct job { void (*body)(void *); void *context; int error; };

static void *run(void *arg) {
    struct job *job = arg;
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = { .len = sizeof(code) / sizeof(code[0]), .filter = code };
    /* Without TSYNC the filter binds this thread only; no_new_privs lets an unprivileged test set it. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        job->error = errno;
        return NULL;
    }
    job->body(job->context);
    return NULL;
}

int rte_test_without_pidfd_open(void (*body)(void *), void *context) {
    struct job job = { body, context, 0 };
    pthread_t thread;
    int r = pthread_create(&thread, NULL, run, &job);
    if (r != 0) return r;
    pthread_join(thread, NULL);
    return job.error;
}
