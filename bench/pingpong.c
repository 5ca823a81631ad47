/* Core-to-core latency: two threads, pinned to CPUs A and B, pass one cache line back and
 * forth N times; prints the one-way time in nanoseconds (half a round trip).
 *
 *   cc -O2 -pthread bench/pingpong.c -o pingpong && ./pingpong 0 1 50000
 *
 * On a virtual machine the host decides where the vCPUs sit: near (cores sharing a cache,
 * tens of ns) or far (hundreds of ns), and it can move them while a benchmark runs. Built
 * and run by bench/benchlib.py (core_latency_ns). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Atomic int flag __attribute__((aligned(64)));
static long n_trips;
static int cpu_b;

static int pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *answer(void *arg) {
    (void)arg;
    if (pin(cpu_b) != 0) {
        fprintf(stderr, "pingpong: cannot run on CPU %d\n", cpu_b);
        exit(2);
    }
    for (long i = 0; i < n_trips; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {
        }
        atomic_store_explicit(&flag, 0, memory_order_release);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: pingpong CPU_A CPU_B TRIPS\n");
        return 2;
    }
    int cpu_a = atoi(argv[1]);
    cpu_b = atoi(argv[2]);
    n_trips = atol(argv[3]);
    if (pin(cpu_a) != 0) {
        fprintf(stderr, "pingpong: cannot run on CPU %d\n", cpu_a);
        return 2;
    }
    pthread_t t;
    pthread_create(&t, NULL, answer, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n_trips; i++) {
        atomic_store_explicit(&flag, 1, memory_order_release);
        while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(t, NULL);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n_trips / 2;
    printf("%.1f\n", ns);
    return 0;
}
