/* The float32 fused multiply-add peak of the CPUs this process runs on, in GFLOPS.

   Each of `threads` threads (started together) runs CHAINS independent chains
   a = a * b + c on the widest vectors the compiler targets (512-bit where -march=native
   has AVX-512, else 256-bit), `iters` times; enough chains to hide the FMA latency on every
   x86 core in use (4 cycles, two FMA pipes), few enough to stay in registers (12 vectors,
   plus b and c: 14 of AVX2's 16). The figure is all threads' FLOPs (2 per FMA lane) over
   the slowest thread's time, the best of `repeats`. Nothing is read from or written to
   memory in the loop: it is the arithmetic limit a matrix product works against.

   Build: cc -O2 -march=native -pthread peak.c -o peak   (GCC or Clang: vector extensions)
   Run:   ./peak THREADS [ITERS [REPEATS]]  -> one line, the GFLOPS */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__)
#define VBYTES 64
#else
#define VBYTES 32
#endif
#define LANES (VBYTES / 4)
#define CHAINS 12

typedef float vf __attribute__((vector_size(VBYTES)));

static long iters = 20000000;
static pthread_barrier_t start;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *run(void *out) {
    vf zero = {0};
    vf b = zero + 0.999999f, c = zero + 1e-7f;
    /* different starting values, so that no two chains are the same computation */
    vf a0 = zero + 1.00f, a1 = zero + 1.01f, a2 = zero + 1.02f, a3 = zero + 1.03f;
    vf a4 = zero + 1.04f, a5 = zero + 1.05f, a6 = zero + 1.06f, a7 = zero + 1.07f;
    vf a8 = zero + 1.08f, a9 = zero + 1.09f, a10 = zero + 1.10f, a11 = zero + 1.11f;
    pthread_barrier_wait(&start);
    double t = now();
    for (long i = 0; i < iters; i++) {
        a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c;
        a4 = a4 * b + c; a5 = a5 * b + c; a6 = a6 * b + c; a7 = a7 * b + c;
        a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;
    }
    t = now() - t;
    vf s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    volatile float sink = s[0];
    (void)sink;
    *(double *)out = t;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s THREADS [ITERS [REPEATS]]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    if (argc > 2) iters = atol(argv[2]);
    int repeats = argc > 3 ? atoi(argv[3]) : 3;
    if (threads < 1 || threads > 4096 || iters < 1 || repeats < 1) {
        fprintf(stderr, "peak: bad arguments\n");
        return 2;
    }
    pthread_t *tid = malloc(sizeof(pthread_t) * threads);
    double *secs = malloc(sizeof(double) * threads);
    if (!tid || !secs) return 1;
    double best = 0.0;
    for (int r = 0; r < repeats; r++) {
        pthread_barrier_init(&start, NULL, (unsigned)threads);
        for (int i = 0; i < threads; i++)
            if (pthread_create(&tid[i], NULL, run, &secs[i]) != 0) return 1;
        double slowest = 0.0;
        for (int i = 0; i < threads; i++) {
            pthread_join(tid[i], NULL);
            if (secs[i] > slowest) slowest = secs[i];
        }
        pthread_barrier_destroy(&start);
        double gflops = 2.0 * LANES * CHAINS * (double)iters * threads / slowest / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.2f\n", best);
    free(tid);
    free(secs);
    return 0;
}
