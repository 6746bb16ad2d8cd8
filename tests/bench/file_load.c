/* File-operation load for tests/bench/file_ops.py: on one CPU, for N seconds,
 * loop openat(O_CREAT) + write + close + renameat + unlinkat in DIR, at full
 * speed or, given RATE > 0, at RATE iterations per second (paced every ms).
 * Prints "<iterations> <seconds>" (5 file operations per iteration).
 * Usage: file_load DIR SECONDS CPU [RATE] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "monotonic.h"


int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s DIR SECONDS CPU [RATE]\n", argv[0]);
        return 2;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[3]), &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        perror("sched_setaffinity");
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (dir < 0) {
        perror(argv[1]);
        return 1;
    }
    double seconds = atof(argv[2]), rate = argc == 5 ? atof(argv[4]) : 0;
    char buf[64] = "snoopbus file_ops benchmark payload .........................";
    long n = 0;
    double start = now(), end = start + seconds, t = start;
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    while (t < end) {
        /* Full speed: read the clock every 256 iterations; paced: do what is due. */
        long batch = rate > 0 ? (long)((t - start) * rate) - n : 256;
        for (long i = 0; i < batch; i++, n++) {
            int fd = openat(dir, "bench.tmp", O_CREAT | O_WRONLY | O_TRUNC, 0644);
            if (fd < 0 || write(fd, buf, sizeof(buf)) != sizeof(buf) || close(fd) != 0
                || renameat(dir, "bench.tmp", dir, "bench.done") != 0
                || unlinkat(dir, "bench.done", 0) != 0) {
                perror("file op");
                return 1;
            }
        }
        if (rate > 0) {
            tick.tv_nsec += 1000000;
            if (tick.tv_nsec >= 1000000000) {
                tick.tv_nsec -= 1000000000;
                tick.tv_sec++;
            }
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
        }
        t = now();
    }
    printf("%ld %.6f\n", n, t - start);
    return 0;
}
