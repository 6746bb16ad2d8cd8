/* A flooder for the isolation test and bench (tests/test_file_flood.py,
 * tests/bench/flood.py): file events as fast as one CPU makes them, counted
 * by the flooder itself, so that what the collector delivered, coalesced,
 * summarized and lost can be checked against what happened.
 *
 * Usage: flood_load DIR MODE SECONDS CPU
 *   same      openat(DIR/one, O_WRONLY) + close, one file (close_write each;
 *             the file is made first: one create, one close_write)
 *   unique    openat(O_CREAT|O_EXCL) + close + unlinkat of a new name each
 *             time (create, close_write, delete)
 *   children  a short-lived child after another, each doing CHILD_ITERS of
 *             unique and exiting (a flooder that is many processes)
 *   threads   THREADS threads doing `same` on one file at once
 * Prints "<iterations> <seconds>" then "<type> <n>" per event type made. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "monotonic.h"

#define CHILD_ITERS 64
#define THREADS 4

struct same_job {
    int dir;
    double end;
    long n;
    int failed;
};

/* openat(one, O_WRONLY) + close until `end`, counted in job->n. */
static void *same_ops(void *arg)
{
    struct same_job *job = arg;
    double t = 0;
    while (t < job->end) {
        for (int i = 0; i < 256; i++, job->n++) {
            int fd = openat(job->dir, "one", O_WRONLY);
            if (fd < 0 || close(fd) != 0) {
                perror("same");
                job->failed = 1;
                return 0;
            }
        }
        t = now();
    }
    return 0;
}

static int unique_ops(int dir, long from, long n)
{
    char name[64];
    for (long i = from; i < from + n; i++) {
        snprintf(name, sizeof(name), "u%d-%ld", getpid(), i);
        int fd = openat(dir, name, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0 || close(fd) != 0 || unlinkat(dir, name, 0) != 0) {
            perror("unique");
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s DIR same|unique|children SECONDS CPU\n", argv[0]);
        return 2;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[4]), &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        perror("sched_setaffinity");
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (dir < 0) {
        perror(argv[1]);
        return 1;
    }
    const char *mode = argv[2];
    double seconds = atof(argv[3]);
    long n = 0, creates = 0, closes = 0, deletes = 0;
    double start = now(), end = start + seconds, t = start;
    if (!strcmp(mode, "same") || !strcmp(mode, "threads")) {
        int fd = openat(dir, "one", O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0 || close(fd) != 0) {
            perror("one");
            return 1;
        }
        creates = closes = 1;
        int nt = strcmp(mode, "same") ? THREADS : 1;
        struct same_job jobs[THREADS] = {};
        pthread_t ids[THREADS];
        for (int i = 0; i < nt; i++) {
            jobs[i].dir = dir;
            jobs[i].end = end;
            if (nt > 1 && pthread_create(&ids[i], 0, same_ops, &jobs[i]) != 0) {
                perror("pthread_create");
                return 1;
            }
        }
        if (nt == 1)
            same_ops(&jobs[0]);
        for (int i = 0; i < nt; i++) {
            if (nt > 1)
                pthread_join(ids[i], 0);
            if (jobs[i].failed)
                return 1;
            n += jobs[i].n;
        }
        t = now();
        closes += n;
    } else if (!strcmp(mode, "unique")) {
        while (t < end) {
            if (unique_ops(dir, n, 256))
                return 1;
            n += 256;
            t = now();
        }
        creates = closes = deletes = n;
    } else if (!strcmp(mode, "children")) {
        while (t < end) {
            pid_t pid = fork();
            if (pid < 0) {
                perror("fork");
                return 1;
            }
            if (pid == 0)
                _exit(unique_ops(dir, 0, CHILD_ITERS));
            int status = 0;
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status)) {
                fprintf(stderr, "a child failed\n");
                return 1;
            }
            n += CHILD_ITERS;
            t = now();
        }
        creates = closes = deletes = n;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%ld %.6f\n", n, t - start);
    printf("create %ld\nclose_write %ld\ndelete %ld\n", creates, closes, deletes);
    return 0;
}
