/* Shared by the load generators of tests/bench: seconds on the monotonic clock. */
#ifndef SNOOPBUS_BENCH_MONOTONIC_H
#define SNOOPBUS_BENCH_MONOTONIC_H
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
#endif
