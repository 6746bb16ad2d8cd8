/* File events at a target rate for tests/bench/latency.py: for SECONDS, every
 * millisecond, as many iterations as RATE per second asks (creat + write +
 * close + unlink: create, modify, close_write, delete), and every
 * MARK_EVERY-th iteration on a file named MARK (an alert rule matches it).
 * Prints "<iterations> <seconds>".
 * Usage: rate_load DIR SECONDS RATE MARK_EVERY MARK */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "monotonic.h"


int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s DIR SECONDS RATE MARK_EVERY MARK\n", argv[0]);
        return 2;
    }
    int dir = open(argv[1], O_RDONLY | O_DIRECTORY);
    if (dir < 0) {
        perror(argv[1]);
        return 1;
    }
    double seconds = atof(argv[2]), rate = atof(argv[3]);
    long mark_every = atol(argv[4]);
    const char *mark = argv[5];
    char buf[64] = "snoopbus latency benchmark payload";
    long n = 0;
    double start = now(), end = start + seconds;
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    for (;;) {
        double t = now();
        if (t >= end)
            break;
        long due = (long)((t - start) * rate);
        for (; n < due; n++) {
            const char *name = (mark_every > 0 && n % mark_every == 0) ? mark : "lat.tmp";
            int fd = openat(dir, name, O_CREAT | O_WRONLY | O_TRUNC, 0644);
            if (fd < 0) {
                perror("openat");
                return 1;
            }
            if (write(fd, buf, sizeof(buf)) < 0)
                perror("write");
            close(fd);
            unlinkat(dir, name, 0);
        }
        tick.tv_nsec += 1000000;
        if (tick.tv_nsec >= 1000000000) {
            tick.tv_nsec -= 1000000000;
            tick.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
    }
    printf("%ld %.3f\n", n, now() - start);
    return 0;
}
