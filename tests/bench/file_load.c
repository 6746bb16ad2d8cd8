/* File-operation load for tests/bench/file_ops.py: on one CPU, for N seconds,
 * loop openat(O_CREAT) + write + close + renameat + unlinkat in DIR.
 * Prints "<iterations> <seconds>" (5 file operations per iteration).
 * Usage: file_load DIR SECONDS CPU */
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
    if (argc != 4) {
        fprintf(stderr, "usage: %s DIR SECONDS CPU\n", argv[0]);
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
    double seconds = atof(argv[2]);
    char buf[64] = "snoopbus file_ops benchmark payload .........................";
    long n = 0;
    double start = now(), end = start + seconds, t = start;
    while (t < end) {
        for (int i = 0; i < 256; i++, n++) {  /* read the clock every 256 iterations */
            int fd = openat(dir, "bench.tmp", O_CREAT | O_WRONLY | O_TRUNC, 0644);
            if (fd < 0 || write(fd, buf, sizeof(buf)) != sizeof(buf) || close(fd) != 0
                || renameat(dir, "bench.tmp", dir, "bench.done") != 0
                || unlinkat(dir, "bench.done", 0) != 0) {
                perror("file op");
                return 1;
            }
        }
        t = now();
    }
    printf("%ld %.6f\n", n, t - start);
    return 0;
}
