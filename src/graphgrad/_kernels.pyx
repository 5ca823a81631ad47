# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Fused elementwise kernels: one pass over memory where NumPy needs several.

Each kernel does, element by element and in the same order of operations, exactly what its
NumPy twin in ``graphgrad/_fused.py`` does with whole-array calls, so both give the same
numbers (bit for bit in float32 and float64, except that the optimiser kernels flush
subnormal numbers, below 1.2e-38 in float32, to zero, as ``torch.set_flush_denormal`` does); the twin is the reference the tests compare
with and the path taken when this module is not built. Arrays arrive flattened, C-contiguous
and of one dtype (``_fused.py`` checks that before calling; the many-parameter updates,
``sgd_many`` and ``adam_many``, check each array themselves); inputs may be read-only
(``const`` memoryviews).

Threads: above ``PAR_MIN`` elements a kernel splits its arrays into contiguous chunks, one per
thread (OpenMP ``prange``, the GIL released; ``set_num_threads`` sets how many). Elementwise
kernels compute each element exactly as the serial loop does, so their results are the same
bit for bit at any thread count. Softmax cross-entropy's forward, a reduction, is arranged so
that it is too: one loss per row in parallel, then the rows added in order on one thread.
(Bias-gradient sums are a GEMV, ``ones @ G``, threaded by the BLAS, each output column a dot
product on one thread.) Built without OpenMP (``OPENMP`` is False), everything runs on the
calling thread.
"""

cimport cython
from cython.parallel cimport prange
from cpython.buffer cimport (PyBUF_ANY_CONTIGUOUS, PyBUF_C_CONTIGUOUS, PyBUF_FORMAT,
                             PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer)
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.math cimport exp, expf, fabs, log, pow, sqrt
from libc.stdlib cimport calloc, free, malloc

cdef extern from *:
    """
    #if defined(__SSE2__) || defined(_M_X64)
    #include <xmmintrin.h>
    /* Flush-to-zero and denormals-are-zero (MXCSR bits 15 and 6) for this thread, until
       restored: the optimiser's running averages of a unit that stopped receiving gradient
       decay through the subnormal range, where each operation costs ~100 cycles. */
    static unsigned int gg_ftz_on(void) {
        unsigned int old = _mm_getcsr();
        _mm_setcsr(old | 0x8040u);
        return old;
    }
    static void gg_ftz_restore(unsigned int old) { _mm_setcsr(old); }
    #else
    static unsigned int gg_ftz_on(void) { return 0; }
    static void gg_ftz_restore(unsigned int old) { (void)old; }
    #endif

    /* The hot loops, written in C so that the pointers can be declared restrict (they never
       alias: _fused.py passes distinct arrays), which lets the compiler vectorise them
       without run-time overlap checks. One element at a time, the same operations in the
       same order as the NumPy twins, so the results are the same bit for bit.

       On x86 (GCC, Clang) each loop is compiled for three instruction sets: the baseline
       (SSE2: 4 floats a vector), AVX2 (8) and AVX-512 (16). The module starts with "auto":
       Adam's loops on the widest set the CPU runs, the memory-bound ones on AVX2 (auto_loops()
       below says why; set_isa() picks another, and the tests run every one). The results do
       not depend on it: every element goes through the same IEEE operations (the build turns
       FMA contraction off), only more of them at a time. */
    #define GG_LOOPS(T, S, V, ATTR)                                                         \
    ATTR static void gg_sgd_mom_##S##_##V(T *restrict w, const T *restrict g,               \
                                          T *restrict v, Py_ssize_t n, T l, T m, int pf) {  \
        const Py_ssize_t line = 64 / (Py_ssize_t)sizeof(T), blk = GG_PFW_LINES * line;     \
        if (!pf) {                                                                          \
            for (Py_ssize_t i = 0; i < n; i++) {                                            \
                T vi = m * v[i] + g[i];                                                     \
                v[i] = vi;                                                                  \
                w[i] = w[i] - l * vi;                                                       \
            }                                                                               \
            return;                                                                         \
        }                                                                                   \
        for (Py_ssize_t i0 = 0; i0 < n; i0 += blk) {                                        \
            Py_ssize_t e = i0 + blk < n ? i0 + blk : n;                                     \
            for (Py_ssize_t p = e; p < e + blk && p < n; p += line) {                       \
                GG_PFW(w + p);                                                              \
                GG_PFW(v + p);                                                              \
            }                                                                               \
            for (Py_ssize_t i = i0; i < e; i++) {                                           \
                T vi = m * v[i] + g[i];                                                     \
                v[i] = vi;                                                                  \
                w[i] = w[i] - l * vi;                                                       \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    ATTR static void gg_sgd_plain_##S##_##V(T *restrict w, const T *restrict g,             \
                                            Py_ssize_t n, T l) {                            \
        for (Py_ssize_t i = 0; i < n; i++) w[i] = w[i] - l * g[i];                          \
    }                                                                                       \
    ATTR static void gg_adam_##S##_##V(T *restrict w, const T *restrict g, T *restrict m,   \
                                       T *restrict v, Py_ssize_t n, T c1, T c1m, T c2,      \
                                       T c2m, T e, T s, T k) {                              \
        for (Py_ssize_t i = 0; i < n; i++) {                                                \
            T gi = g[i];                                                                    \
            T mi = m[i] * c1 + gi * c1m;                                                    \
            T t = gi * gi;                                                                  \
            T vi = v[i] * c2 + t * c2m;                                                     \
            m[i] = mi;                                                                      \
            v[i] = vi;                                                                      \
            t = (T)SQRT_##S(vi) / s + e;                                                    \
            w[i] = w[i] - (mi / t) * k;                                                     \
        }                                                                                   \
    }                                                                                       \
    ATTR static void gg_relu_grad_##S##_##V(const T *restrict g, const T *restrict x,       \
                                            T *restrict o, Py_ssize_t n) {                  \
        for (Py_ssize_t i = 0; i < n; i++) {                                                \
            T gi = g[i];                                                                    \
            o[i] = x[i] > (T)0 ? gi : (T)0;                                                 \
        }                                                                                   \
    }                                                                                       \
    ATTR static void gg_relu_##S##_##V(const T *restrict x, T *restrict o, Py_ssize_t n) {  \
        for (Py_ssize_t i = 0; i < n; i++) {                                                \
            T xi = x[i];                                                                    \
            o[i] = (xi > (T)0 || xi != xi) ? xi : (T)0; /* as np.maximum(x, 0): NaN, +0.0 */ \
        }                                                                                   \
    }                                                                                       \
    /* y += b for r rows of c: b along the rows (y row-major: y[i, j] += b[j]) or down them  \
       (y^T of a column-major y: y[j, i] += b[j]); one add per element, as NumPy's. */      \
    ATTR static void gg_add_bias_##S##_##V(T *restrict y, const T *restrict b, Py_ssize_t r, \
                                           Py_ssize_t c, int down) {                        \
        if (down) {                                                                         \
            for (Py_ssize_t i = 0; i < r; i++) {                                            \
                T bi = b[i];                                                                \
                T *restrict yi = y + i * c;                                                 \
                for (Py_ssize_t j = 0; j < c; j++) yi[j] = yi[j] + bi;                      \
            }                                                                               \
        } else {                                                                            \
            for (Py_ssize_t i = 0; i < r; i++) {                                            \
                T *restrict yi = y + i * c;                                                 \
                for (Py_ssize_t j = 0; j < c; j++) yi[j] = yi[j] + b[j];                    \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
    /* o[i, :] = 0 + a[i] * b for r rows of c (o's rows ld apart, a's elements sa apart):   \
       the product of a column and a row as NumPy's matmul makes it (its own loop, each     \
       element summed from 0, so a -0.0 product gives +0.0). */                             \
    ATTR static void gg_outer_##S##_##V(const T *restrict a, Py_ssize_t sa,                 \
                                        const T *restrict b, T *restrict o, Py_ssize_t r,   \
                                        Py_ssize_t c, Py_ssize_t ld) {                      \
        for (Py_ssize_t i = 0; i < r; i++) {                                                \
            T ai = a[i * sa];                                                               \
            T *restrict oi = o + i * ld;                                                    \
            for (Py_ssize_t j = 0; j < c; j++) oi[j] = (T)0 + ai * b[j];                    \
        }                                                                                   \
    }
    #ifdef _OPENMP
    #define GG_OPENMP 1
    #else
    #define GG_OPENMP 0
    #endif
    /* Write prefetches (PREFETCHW where the instruction set has it): SGD-momentum's loop,
       which updates a weight and its momentum in place, takes them GG_PFW_LINES cache lines
       at a time and first asks for the next GG_PFW_LINES lines of each for writing, when the
       process runs more than one thread (at one, the prefetches only cost: 2-5% on arrays in
       the cache). At 2 threads both cores have often just read a weight (its input-gradient
       product splits the batch between them), and each write to a line the other core holds
       waits for it to drop its copy: on a 2-vCPU Xeon the 256x256 weight's momentum update
       took 44 us after the step's products at 2 threads, 13 at 1, and 10 with these
       prefetches; whole compiled steps took 0.95 (784-256-256-10) and 0.97 (3072-512-512-10)
       of their time. Plain SGD's and Adam's loops gained nothing measurable (1.01, 1.00), so
       they have none. The results do not change (a prefetch moves no data a program can
       see). */
    #ifndef GG_PFW_LINES
    #define GG_PFW_LINES 16
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define GG_PFW(addr) __builtin_prefetch((addr), 1, 3)
    #else
    #define GG_PFW(addr) ((void)0)
    #endif
    #define SQRT_f sqrtf
    #define SQRT_d sqrt
    #define GG_ISA_LOOPS(V, ATTR) GG_LOOPS(float, f, V, ATTR) GG_LOOPS(double, d, V, ATTR)
    GG_ISA_LOOPS(base, )
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define GG_MULTI_ISA 1
    GG_ISA_LOOPS(avx2, __attribute__((target("avx2,prfchw"))))
    GG_ISA_LOOPS(avx512, __attribute__((target("avx512f,prfchw"))))
    #else
    #define GG_MULTI_ISA 0
    #endif

    /* One table of loops per instruction set; the kernels call through gg_isa. */
    #define GG_FIELDS(T, S)                                                                 \
        void (*sgd_mom_##S)(T *, const T *, T *, Py_ssize_t, T, T, int);                    \
        void (*sgd_plain_##S)(T *, const T *, Py_ssize_t, T);                               \
        void (*adam_##S)(T *, const T *, T *, T *, Py_ssize_t, T, T, T, T, T, T, T);        \
        void (*relu_grad_##S)(const T *, const T *, T *, Py_ssize_t);                       \
        void (*relu_##S)(const T *, T *, Py_ssize_t);                                       \
        void (*add_bias_##S)(T *, const T *, Py_ssize_t, Py_ssize_t, int);                  \
        void (*outer_##S)(const T *, Py_ssize_t, const T *, T *, Py_ssize_t, Py_ssize_t,    \
                          Py_ssize_t);
    typedef struct { const char *name; GG_FIELDS(float, f) GG_FIELDS(double, d) } gg_isa_t;
    #define GG_ROW(S, V) gg_sgd_mom_##S##_##V, gg_sgd_plain_##S##_##V, gg_adam_##S##_##V,   \
                         gg_relu_grad_##S##_##V, gg_relu_##S##_##V, gg_add_bias_##S##_##V, \
                         gg_outer_##S##_##V
    static const gg_isa_t gg_isas[] = {
        {"baseline", GG_ROW(f, base), GG_ROW(d, base)},
    #if GG_MULTI_ISA
        {"avx2", GG_ROW(f, avx2), GG_ROW(d, avx2)},
        {"avx512f", GG_ROW(f, avx512), GG_ROW(d, avx512)},
    #endif
    };
    static const int gg_isa_count = (int)(sizeof(gg_isas) / sizeof(gg_isas[0]));
    static const gg_isa_t *gg_isa = &gg_isas[0];

    /* Whether this CPU runs table k's instructions (and the OS saves their registers). */
    static int gg_isa_runs(int k) {
    #if GG_MULTI_ISA
        __builtin_cpu_init();
        if (k == 1) return __builtin_cpu_supports("avx2") != 0;
        if (k == 2) return __builtin_cpu_supports("avx512f") != 0;
    #endif
        return k == 0;
    }
    static void gg_set_isa(int k) { gg_isa = &gg_isas[k]; }
    static const char *gg_isa_name(int k) { return gg_isas[k].name; }

    /* "auto": the memory-bound loops from table mem, Adam's (square root and division per
       element: bound by arithmetic) from table compute. */
    static gg_isa_t gg_auto;
    static void gg_set_auto(int mem, int compute) {
        gg_auto = gg_isas[mem];
        gg_auto.name = "auto";
        gg_auto.adam_f = gg_isas[compute].adam_f;
        gg_auto.adam_d = gg_isas[compute].adam_d;
        gg_isa = &gg_auto;
    }

    #define GG_CALLS(T, S)                                                                  \
    static void gg_sgd_mom_##S(T *w, const T *g, T *v, Py_ssize_t n, T l, T m, int pf) {    \
        gg_isa->sgd_mom_##S(w, g, v, n, l, m, pf);                                          \
    }                                                                                       \
    static void gg_sgd_plain_##S(T *w, const T *g, Py_ssize_t n, T l) {                     \
        gg_isa->sgd_plain_##S(w, g, n, l);                                                  \
    }                                                                                       \
    static void gg_adam_##S(T *w, const T *g, T *m, T *v, Py_ssize_t n, T c1, T c1m, T c2,  \
                            T c2m, T e, T s, T k) {                                         \
        gg_isa->adam_##S(w, g, m, v, n, c1, c1m, c2, c2m, e, s, k);                         \
    }                                                                                       \
    static void gg_relu_grad_##S(const T *g, const T *x, T *o, Py_ssize_t n) {              \
        gg_isa->relu_grad_##S(g, x, o, n);                                                  \
    }                                                                                       \
    static void gg_relu_##S(const T *x, T *o, Py_ssize_t n) { gg_isa->relu_##S(x, o, n); }   \
    static void gg_add_bias_##S(T *y, const T *b, Py_ssize_t r, Py_ssize_t c, int down) {   \
        gg_isa->add_bias_##S(y, b, r, c, down);                                             \
    }                                                                                       \
    static void gg_outer_##S(const T *a, Py_ssize_t sa, const T *b, T *o, Py_ssize_t r,     \
                             Py_ssize_t c, Py_ssize_t ld) {                                 \
        gg_isa->outer_##S(a, sa, b, o, r, c, ld);                                           \
    }
    GG_CALLS(float, f)
    GG_CALLS(double, d)
    """
    unsigned int gg_ftz_on() noexcept nogil
    void gg_ftz_restore(unsigned int old) noexcept nogil
    void gg_sgd_mom_f(float* w, const float* g, float* v, Py_ssize_t n, float l, float m,
                      int pf) noexcept nogil
    void gg_sgd_mom_d(double* w, const double* g, double* v, Py_ssize_t n, double l, double m,
                      int pf) noexcept nogil
    void gg_sgd_plain_f(float* w, const float* g, Py_ssize_t n, float l) noexcept nogil
    void gg_sgd_plain_d(double* w, const double* g, Py_ssize_t n, double l) noexcept nogil
    void gg_adam_f(float* w, const float* g, float* m, float* v, Py_ssize_t n, float c1, float c1m, float c2, float c2m, float e, float s, float k) noexcept nogil
    void gg_adam_d(double* w, const double* g, double* m, double* v, Py_ssize_t n, double c1, double c1m, double c2, double c2m, double e, double s, double k) noexcept nogil
    void gg_relu_grad_f(const float* g, const float* x, float* o, Py_ssize_t n) noexcept nogil
    void gg_relu_grad_d(const double* g, const double* x, double* o, Py_ssize_t n) noexcept nogil
    void gg_relu_f(const float* x, float* o, Py_ssize_t n) noexcept nogil
    void gg_relu_d(const double* x, double* o, Py_ssize_t n) noexcept nogil
    void gg_add_bias_f(float* y, const float* b, Py_ssize_t r, Py_ssize_t c, int down) noexcept nogil
    void gg_add_bias_d(double* y, const double* b, Py_ssize_t r, Py_ssize_t c, int down) noexcept nogil
    void gg_outer_f(const float* a, Py_ssize_t sa, const float* b, float* o, Py_ssize_t r, Py_ssize_t c, Py_ssize_t ld) noexcept nogil
    void gg_outer_d(const double* a, Py_ssize_t sa, const double* b, double* o, Py_ssize_t r, Py_ssize_t c, Py_ssize_t ld) noexcept nogil
    int GG_OPENMP
    int gg_isa_count
    int gg_isa_runs(int k) noexcept nogil
    void gg_set_isa(int k) noexcept nogil
    const char* gg_isa_name(int k) noexcept nogil
    void gg_set_auto(int mem, int compute) noexcept nogil

cdef extern from *:
    """
    /* One thread pool for the matrix products and the kernels. OpenBLAS (0.3.27 on) lets its
       caller run its parallel jobs (openblas_set_threads_callback_function): with this
       callback its GEMMs run on the OpenMP threads the kernels split on, so the kernel after a
       GEMM finds its workers awake, and no second pool spins on the cores. The jobs and their
       split are OpenBLAS's own, so the results are the same bit for bit. */
    #include <pthread.h>
    #include <stddef.h>
    #include <stdlib.h>
    #ifdef _OPENMP
    #include <omp.h>
    #endif
    typedef void (*gg_dojob_t)(int, void *, int);
    /* The first argument of OpenBLAS's job function picks a slot of its worker tables (a
       status word and a buffer, MAX_THREADS of each): its own workers use the lowest ones,
       and LAPACK's parallel LU (getrf) keeps using those workers while the callback is in
       place. So the callback's jobs take the top slots, gg_pool_top - numjobs + k, where
       OpenBLAS's own workers never are (the caller keeps its thread count at most half of
       MAX_THREADS). Two callers at once (two Python threads each in a product) would share
       the top slots, so the jobs of one call run at a time. */
    static pthread_mutex_t gg_pool_lock = PTHREAD_MUTEX_INITIALIZER;
    static long gg_pool_calls = 0, gg_pool_spawned = 0;
    static int gg_pool_top = 0;
    typedef struct { gg_dojob_t dojob; int k; void *data; int arg; } gg_job_t;
    static void *gg_job_main(void *p) {
        gg_job_t *j = (gg_job_t *)p;
        j->dojob(j->k, j->data, j->arg);
        return NULL;
    }
    static void gg_pool_callback(int sync, gg_dojob_t dojob, int numjobs, size_t size,
                                 void *jobs, int arg) {
        (void)sync;  /* OpenBLAS waits for the jobs in any case: this returns when all are done */
        pthread_mutex_lock(&gg_pool_lock);
        gg_pool_calls++;
        int done = 0, base = gg_pool_top - numjobs;
        if (base < 0) base = 0;  /* not reached: the caller keeps numjobs <= gg_pool_top / 2 */
        if (numjobs == 1) {
            dojob(base, jobs, arg);
            done = 1;
        }
    #ifdef _OPENMP
        /* The jobs of a GEMM wait for each other (each packs a share of an operand the others
           read), so they must all run at once: on a team of exactly numjobs threads. */
        if (!done && !omp_in_parallel()) {
            #pragma omp parallel num_threads(numjobs)
            {
                if (omp_get_num_threads() == numjobs) {
                    int k = omp_get_thread_num();
                    dojob(base + k, (char *)jobs + (size_t)k * size, arg);
                    if (k == 0) done = 1;
                }
            }
        }
    #endif
        if (!done) {  /* no such team here (nested, OMP_THREAD_LIMIT, OMP_DYNAMIC): threads of
                         their own, started for this call */
            int n = numjobs;
            gg_job_t *js = (gg_job_t *)calloc((size_t)n, sizeof(gg_job_t));
            pthread_t *ts = (pthread_t *)calloc((size_t)n, sizeof(pthread_t));
            if (js == NULL || ts == NULL) abort();  /* out of memory */
            for (int k = 1; k < n; k++) {
                js[k].dojob = dojob; js[k].k = base + k; js[k].arg = arg;
                js[k].data = (char *)jobs + (size_t)k * size;
                /* no thread: a job run here after job 0 could wait for job 0 forever */
                if (pthread_create(&ts[k], NULL, gg_job_main, &js[k]) != 0) abort();
            }
            dojob(base, jobs, arg);
            for (int k = 1; k < n; k++) pthread_join(ts[k], NULL);
            free(js); free(ts);
            gg_pool_spawned++;
        }
        pthread_mutex_unlock(&gg_pool_lock);
    }
    typedef void (*gg_set_callback_t)(void *);
    static void gg_pool_install(size_t setter, int on, int top) {
        pthread_mutex_lock(&gg_pool_lock);  /* not while a product's jobs run */
        if (on) gg_pool_top = top;
        ((gg_set_callback_t)setter)(on ? (void *)gg_pool_callback : NULL);
        pthread_mutex_unlock(&gg_pool_lock);
    }
    """
    void gg_pool_install(size_t setter, int on, int top) noexcept nogil
    long gg_pool_calls
    long gg_pool_spawned


def install_blas_pool(size_t setter, bint on, int max_threads=0):
    """Call OpenBLAS's ``openblas_set_threads_callback_function`` (its address: ``setter``)
    with graphgrad's pool callback (``on``; its jobs take the slots below ``max_threads``,
    OpenBLAS's MAX_THREADS) or NULL (OpenBLAS's own threads again). Only with OpenMP
    (``OPENMP``), and with OpenBLAS's thread count at most ``max_threads // 2``: the caller
    checks both."""
    if on and max_threads < 2:
        raise ValueError(f"install_blas_pool: max_threads must be at least 2, got {max_threads}")
    with nogil:
        gg_pool_install(setter, 1 if on else 0, max_threads)


def blas_pool_counts():
    """(parallel BLAS calls run by the callback, those that needed threads of their own)."""
    return gg_pool_calls, gg_pool_spawned


ctypedef fused real:
    float
    double


OPENMP = bool(GG_OPENMP)  # built with OpenMP: the kernels below can use several threads

#: Arrays with fewer elements than this are updated on the calling thread: below it, waking
#: the other threads costs more than they save (a few microseconds). A module global, read at
#: each call: ``GRAPHGRAD_PAR_MIN`` (read by _fused.py at import) replaces it.
PAR_MIN = 32768
cdef enum:
    _ALIGN = 16  # chunk boundaries at multiples of 16 elements (64 bytes: one cache line)

cdef int _nthreads = 1


def set_num_threads(int n):
    """Use up to ``n`` threads in the kernels (1: serial)."""
    global _nthreads
    _nthreads = n if n > 1 else 1


def isas():
    """The instruction sets the loops were compiled for that this CPU runs, narrowest first
    (``("baseline",)`` off x86, or where the compiler knows no others)."""
    return tuple(gg_isa_name(k).decode() for k in range(gg_isa_count) if gg_isa_runs(k))


cdef int _isa = 0  # the table in use; -1: "auto"


cdef int _table(str name):
    """The index of table ``name`` (whether or not this CPU runs it), else -1."""
    cdef int k
    for k in range(gg_isa_count):
        if gg_isa_name(k).decode() == name:
            return k
    return -1


def auto_loops():
    """What "auto" runs, loop by loop: Adam's loops (a square root and a division per
    element: bound by arithmetic) on the widest instruction set this CPU runs, the others
    (memory-bound) on AVX2, else the baseline. Measured on an AMD EPYC (Zen 5), 1 thread:
    AVX2 ran every loop 1.3-2.2x faster than the baseline on 32k-268k floats; AVX-512 ran Adam
    1.5x faster than AVX2 there (and a Fashion-MNIST epoch with Adam 7-23% faster), but the
    memory-bound loops on 1.8M floats (SGD momentum, the ReLU VJP) 14-17% slower than the
    baseline: its 64-byte loads straddle cache lines in NumPy's 16-byte-aligned arrays."""
    names = isas()
    mem = "avx2" if "avx2" in names else "baseline"
    widest = names[len(names) - 1]  # no [-1]: wraparound is off
    return {
        "adam": widest, "sgd": mem, "relu": mem, "relu_grad": mem, "add_bias": mem, "outer": mem
    }


def set_isa(str name):
    """Run the loops compiled for ``name``, one of :func:`isas`, or ``"auto"`` (the default:
    see :func:`auto_loops`); returns the previous name. Only speed depends on it: every
    instruction set gives the same bits."""
    global _isa
    previous = get_isa()
    if name == "auto":
        loops = auto_loops()
        gg_set_auto(_table(loops["sgd"]), _table(loops["adam"]))
        _isa = -1
        return previous
    cdef int k = _table(name)
    if k < 0:
        raise ValueError(
            f"set_isa: unknown instruction set {name!r}; known: auto, {', '.join(isas())}"
        )
    if not gg_isa_runs(k):
        raise ValueError(f"set_isa: this CPU does not run {name}")
    gg_set_isa(k)
    _isa = k
    return previous


def get_isa():
    """The instruction set whose loops run now (``"auto"``: see :func:`auto_loops`)."""
    return "auto" if _isa < 0 else gg_isa_name(_isa).decode()


#: The loops' instruction sets at import: "auto" (see auto_loops); ``set_isa`` and
#: ``GRAPHGRAD_KERNEL_ISA`` (read by ``_fused.py``) choose another.
DEFAULT_ISA = "auto"
set_isa(DEFAULT_ISA)


def get_num_threads():
    """The thread count the kernels use for large arrays."""
    return _nthreads


def split_count(Py_ssize_t n):
    """How many threads an elementwise kernel splits ``n`` elements between now (1 below
    ``PAR_MIN`` or with one thread); for tests and benchmarks."""
    cdef int nc
    _chunk(n, PAR_MIN, &nc)
    return nc


cdef inline Py_ssize_t _chunk(Py_ssize_t n, Py_ssize_t par_min, int* nc) noexcept nogil:
    """Split n elements into *nc contiguous chunks (one per thread); returns the chunk length,
    a multiple of _ALIGN. *nc is 1 (serial) below par_min or with one thread."""
    cdef int k = _nthreads if GG_OPENMP else 1
    if n < par_min or k < 2:
        nc[0] = 1
        return n
    cdef Py_ssize_t step = (n + k - 1) // k
    step = (step + _ALIGN - 1) // _ALIGN * _ALIGN
    nc[0] = <int>((n + step - 1) // step)
    return step


cdef void _sgd_chunk(real* wp, const real* gp, real* vp, Py_ssize_t n, real l, real m,
                     real d, bint has_mu, bint has_wd, bint nesterov, bint first) noexcept nogil:
    cdef Py_ssize_t i
    cdef real gi, vi
    cdef unsigned int csr = gg_ftz_on()  # per thread: MXCSR is a thread's register
    if not has_wd and has_mu and not nesterov and not first:  # the common case
        # write prefetches only where another thread may hold the lines (see GG_PFW)
        if real is float:
            gg_sgd_mom_f(wp, gp, vp, n, l, m, _nthreads > 1)
        else:
            gg_sgd_mom_d(wp, gp, vp, n, l, m, _nthreads > 1)
    elif not has_wd and not has_mu:
        if real is float:
            gg_sgd_plain_f(wp, gp, n, l)
        else:
            gg_sgd_plain_d(wp, gp, n, l)
    else:
        for i in range(n):
            gi = gp[i] + d * wp[i] if has_wd else gp[i]
            if not has_mu:
                vi = gi
            else:
                vi = gi if first else m * vp[i] + gi
                vp[i] = vi
            if nesterov:
                vi = gi + m * vi
            wp[i] = wp[i] - l * vi
    gg_ftz_restore(csr)


cdef inline void _sgd_span(real* wp, const real* gp, real* vp, Py_ssize_t lo, Py_ssize_t hi,
                           Py_ssize_t cols, Py_ssize_t ldg, real l, real m, real d,
                           bint has_mu, bint has_wd, bint nesterov,
                           bint first) noexcept nogil:
    """Elements [lo, hi) of the SGD update: w and v contiguous, g in rows of ``cols``
    elements ``ldg`` apart (a padded gradient array; ``ldg == cols``: contiguous too), taken
    a row's piece at a time. Each element goes through the same operations either way."""
    cdef Py_ssize_t r, e
    if ldg == cols:
        _sgd_chunk(wp + lo, gp + lo, vp + lo, hi - lo, l, m, d, has_mu, has_wd, nesterov, first)
        return
    while lo < hi:
        r = lo // cols
        e = min(hi, (r + 1) * cols)
        _sgd_chunk(wp + lo, gp + r * ldg + (lo - r * cols), vp + lo, e - lo, l, m, d, has_mu,
                   has_wd, nesterov, first)
        lo = e


cdef void _sgd_all(real* wp, const real* gp, real* vp, Py_ssize_t n, Py_ssize_t cols,
                   Py_ssize_t ldg, double lr, double mu, double wd, bint nesterov, bint first,
                   Py_ssize_t par_min) noexcept nogil:
    """The SGD update of n elements, split between threads from par_min elements on (g's rows
    of ``cols`` elements ``ldg`` apart: see _sgd_span)."""
    cdef Py_ssize_t c, lo, hi
    cdef real l = <real>lr, m = <real>mu, d = <real>wd
    cdef bint has_mu = mu != 0, has_wd = wd != 0
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, par_min, &nc)
    if nc == 1:
        _sgd_span(wp, gp, vp, 0, n, cols, ldg, l, m, d, has_mu, has_wd, nesterov, first)
        return
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _sgd_span(wp, gp, vp, lo, hi, cols, ldg, l, m, d, has_mu, has_wd, nesterov, first)


cdef int _same_len(str who, Py_ssize_t n, Py_ssize_t m, str what) except -1:
    """Refuse an array of ``m`` elements beside a first one of ``n`` (the loops read ``n``
    from each: a shorter one would be read and written past its end)."""
    if m != n:
        raise ValueError(f"{who}: {what} has {m} elements, the first array {n}")
    return 0


cdef int _check_labels(str who, const long long[::1] labels, Py_ssize_t S,
                       Py_ssize_t T) except -1:
    """Refuse labels that are not S classes in [0, T) (the rows index the logits by them)."""
    cdef Py_ssize_t s
    if labels.shape[0] != S:
        raise ValueError(f"{who}: {labels.shape[0]} labels for {S} rows of logits")
    for s in range(S):
        if labels[s] < 0 or labels[s] >= T:
            raise IndexError(f"{who}: label {labels[s]} of row {s} is not in [0, {T})")
    return 0


def sgd(real[::1] w, const real[::1] g, real[::1] v, double lr, double mu, double wd,
        bint nesterov, bint first):
    """SGD with momentum, in place: g' = g + wd w; v = g' (first step) or mu v + g';
    w -= lr (g' + mu v if nesterov else v). ``v`` is ignored when mu == 0."""
    cdef Py_ssize_t n = w.shape[0], par_min = PAR_MIN
    _same_len("sgd", n, g.shape[0], "g")
    if mu != 0:
        _same_len("sgd", n, v.shape[0], "v")
    cdef real* wp = &w[0] if n else NULL
    cdef const real* gp = &g[0] if n else NULL
    cdef real* vp = &v[0] if n else NULL
    with nogil:
        _sgd_all(wp, gp, vp, n, n, n, lr, mu, wd, nesterov, first, par_min)


cdef Py_ssize_t _row_stride(str name, const real[:, :] g, Py_ssize_t n,
                            Py_ssize_t other) except -1:
    """The row stride (in elements) of ``g``, a padded weight gradient the ``*_rows`` kernels
    take beside flat arrays of ``n`` and ``other`` elements; ValueError naming the kernel
    where the lengths differ from g's or g's rows are not contiguous."""
    cdef Py_ssize_t rows = g.shape[0], cols = g.shape[1]
    cdef Py_ssize_t ldg = g.strides[0] // sizeof(real)
    if n != rows * cols or other != n:
        raise ValueError(f"{name}: arrays of {n} and {other} elements for a {rows}x{cols} g")
    if g.strides[1] != sizeof(real) or g.strides[0] % sizeof(real) or ldg < cols:
        raise ValueError(f"{name}: g's rows must be contiguous, got strides "
                         f"({g.strides[0]}, {g.strides[1]})")
    return ldg


def sgd_rows(real[::1] w, const real[:, :] g, real[::1] v, double lr, double mu, double wd,
             bint nesterov, bint first):
    """:func:`sgd` with the gradient a 2-D array whose rows may lie further apart than its
    width (a padded weight gradient); ``w`` and ``v`` are flat views of arrays of g's shape."""
    cdef Py_ssize_t n = w.shape[0], par_min = PAR_MIN
    cdef Py_ssize_t ldg = _row_stride("sgd_rows", g, n, v.shape[0])
    if n == 0:
        return
    with nogil:
        _sgd_all(&w[0], &g[0, 0], &v[0], n, g.shape[1], ldg, lr, mu, wd, nesterov, first,
                 par_min)


cdef void _adam_chunk(real* wp, const real* gp, real* mp, real* vp, Py_ssize_t n, real c1,
                      real c1m, real c2, real c2m, real e, real s, real k, real d,
                      bint has_wd) noexcept nogil:
    cdef Py_ssize_t i
    cdef real gi, mi, vi, t
    cdef unsigned int csr = gg_ftz_on()
    if not has_wd:  # two copies of the loop, so that neither has a branch inside
        if real is float:
            gg_adam_f(wp, gp, mp, vp, n, c1, c1m, c2, c2m, e, s, k)
        else:
            gg_adam_d(wp, gp, mp, vp, n, c1, c1m, c2, c2m, e, s, k)
    else:
        for i in range(n):
            gi = gp[i] + d * wp[i]
            mi = mp[i] * c1 + gi * c1m
            t = gi * gi
            vi = vp[i] * c2 + t * c2m
            mp[i] = mi
            vp[i] = vi
            t = <real>sqrt(vi) / s + e
            wp[i] = wp[i] - (mi / t) * k
    gg_ftz_restore(csr)


cdef inline void _adam_span(real* wp, const real* gp, real* mp, real* vp, Py_ssize_t lo,
                            Py_ssize_t hi, Py_ssize_t cols, Py_ssize_t ldg, real c1, real c1m,
                            real c2, real c2m, real e, real s, real k, real d,
                            bint has_wd) noexcept nogil:
    """Elements [lo, hi) of the Adam update, g's rows ``ldg`` apart (as _sgd_span)."""
    cdef Py_ssize_t r, end
    if ldg == cols:
        _adam_chunk(wp + lo, gp + lo, mp + lo, vp + lo, hi - lo, c1, c1m, c2, c2m, e, s, k,
                    d, has_wd)
        return
    while lo < hi:
        r = lo // cols
        end = min(hi, (r + 1) * cols)
        _adam_chunk(wp + lo, gp + r * ldg + (lo - r * cols), mp + lo, vp + lo, end - lo, c1,
                    c1m, c2, c2m, e, s, k, d, has_wd)
        lo = end


cdef void _adam_all(real* wp, const real* gp, real* mp, real* vp, Py_ssize_t n,
                    Py_ssize_t cols, Py_ssize_t ldg, double lr, double b1, double b2,
                    double eps, double wd, double bc1, double bc2_sqrt,
                    Py_ssize_t par_min) noexcept nogil:
    """The Adam update of n elements, split between threads from par_min elements on (g's
    rows of ``cols`` elements ``ldg`` apart: see _sgd_span)."""
    cdef Py_ssize_t c, lo, hi
    cdef real c1 = <real>b1, c1m = <real>(1.0 - b1), c2 = <real>b2, c2m = <real>(1.0 - b2)
    cdef real e = <real>eps, d = <real>wd, s = <real>bc2_sqrt, k = <real>(lr / bc1)
    cdef bint has_wd = wd != 0
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, par_min, &nc)
    if nc == 1:
        _adam_span(wp, gp, mp, vp, 0, n, cols, ldg, c1, c1m, c2, c2m, e, s, k, d, has_wd)
        return
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _adam_span(wp, gp, mp, vp, lo, hi, cols, ldg, c1, c1m, c2, c2m, e, s, k, d, has_wd)


def adam(real[::1] w, const real[::1] g, real[::1] m, real[::1] v, double lr, double b1,
         double b2, double eps, double wd, double bc1, double bc2_sqrt):
    """Adam, in place: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
    w -= (m / (sqrt(v) / sqrt(1-b2^t) + eps)) * (lr / (1-b1^t))."""
    cdef Py_ssize_t n = w.shape[0], par_min = PAR_MIN
    _same_len("adam", n, g.shape[0], "g")
    _same_len("adam", n, m.shape[0], "m")
    _same_len("adam", n, v.shape[0], "v")
    cdef real* wp = &w[0] if n else NULL
    cdef const real* gp = &g[0] if n else NULL
    cdef real* mp = &m[0] if n else NULL
    cdef real* vp = &v[0] if n else NULL
    with nogil:
        _adam_all(wp, gp, mp, vp, n, n, n, lr, b1, b2, eps, wd, bc1, bc2_sqrt, par_min)


def adam_rows(real[::1] w, const real[:, :] g, real[::1] m, real[::1] v, double lr,
              double b1, double b2, double eps, double wd, double bc1, double bc2_sqrt):
    """:func:`adam` with the gradient a 2-D array whose rows may lie further apart than its
    width (a padded weight gradient); ``w``, ``m``, ``v`` are flat views of g's shape."""
    cdef Py_ssize_t n = w.shape[0], par_min = PAR_MIN
    cdef Py_ssize_t ldg = _row_stride("adam_rows", g, n, m.shape[0])
    if v.shape[0] != n:
        raise ValueError(f"adam_rows: v has {v.shape[0]} elements, w {n}")
    if n == 0:
        return
    with nogil:
        _adam_all(&w[0], &g[0, 0], &m[0], &v[0], n, g.shape[1], ldg, lr, b1, b2, eps, wd, bc1,
                  bc2_sqrt, par_min)


# ------------------------------------------------------------------------------------------
# The updates of many parameters in one call (an optimiser's step() on NumPy arrays): per
# parameter the same _sgd_all/_adam_all as sgd()/adam() (the same bits, the same threads),
# without a Python call, three flattenings and their checks per parameter, which cost more
# than the update itself for a small layer's bias.

from numpy import ndarray as _ndarray


cdef bint _take(object a, Py_buffer* b, int flags) except -1:
    """Fill ``b`` with ``a``'s memory if ``a`` is an ndarray a kernel can take (contiguous,
    row- or column-major; writeable where ``flags`` asks): True, else False with nothing
    held."""
    if type(a) is not _ndarray:
        return False
    try:
        PyObject_GetBuffer(a, b, flags | PyBUF_ANY_CONTIGUOUS | PyBUF_FORMAT)
    except (BufferError, ValueError):  # not contiguous, read-only
        return False
    return True


cdef int _float_kind(const Py_buffer* b) noexcept:
    """1 for native float32 elements, 2 for float64, 0 for anything else."""
    if b.format == NULL or b.format[0] == 0 or b.format[1] != 0:
        return 0
    if b.format[0] == b'f' and b.itemsize == 4:
        return 1
    if b.format[0] == b'd' and b.itemsize == 8:
        return 2
    return 0


cdef bint _alike(const Py_buffer* a, const Py_buffer* b) noexcept:
    """The same element format, shape and strides: two contiguous arrays whose elements lie
    in the same order (both row-major or both column-major), so that the k-th element in
    memory of each is the same (row, column)."""
    cdef int i
    if a.ndim != b.ndim or a.itemsize != b.itemsize or a.format[0] != b.format[0]:
        return False
    if b.format[0] == 0 or b.format[1] != 0:
        return False
    for i in range(a.ndim):
        if a.shape[i] != b.shape[i] or a.strides[i] != b.strides[i]:
            return False
    return True


cdef bint _take_all(list arrays, Py_ssize_t k, Py_buffer* bufs, int n_in, int* kind) except -1:
    """Buffers for ``arrays[j][k]``, j < n_in (the first and every one from the third on
    written, the second, the gradient, read), all of one float dtype and one shape: True and
    ``kind[0]`` (1: float32, 2: float64), else False with nothing held."""
    cdef int j, held = 0
    cdef bint ok = True
    for j in range(n_in):
        if not _take((<list>arrays[j])[k], &bufs[j], 0 if j == 1 else PyBUF_WRITABLE):
            ok = False
            break
        held += 1
        if j == 0:
            kind[0] = _float_kind(&bufs[0])
            if kind[0] == 0:
                ok = False
                break
        elif not _alike(&bufs[0], &bufs[j]):
            ok = False
            break
    if not ok:
        for j in range(held):
            PyBuffer_Release(&bufs[j])
    return ok


def sgd_many(list ws, list gs, list vs, double lr, double mu, double wd, bint nesterov):
    """:func:`sgd` (not a first step) on every ``(ws[k], gs[k], vs[k])`` the kernel takes:
    ndarrays of one float dtype, shape and contiguous layout (all row-major or all
    column-major), ``ws[k]`` and ``vs[k]`` writeable
    (``vs[k]`` is ``ws[k]`` itself when mu == 0: then it is not read). Returns the positions k
    it left alone, in order, for the caller's own path (which also names what is wrong)."""
    cdef Py_ssize_t k, n = len(ws), cnt, par_min = PAR_MIN
    cdef Py_buffer bufs[3]
    cdef int kind = 0, j
    if len(gs) != n or len(vs) != n:
        raise ValueError(f"sgd_many: {n} parameters, {len(gs)} gradients, {len(vs)} buffers")
    arrays = [ws, gs, vs]
    declined = []
    for k in range(n):
        if not _take_all(arrays, k, bufs, 3, &kind):
            declined.append(k)
            continue
        cnt = bufs[0].len // bufs[0].itemsize
        with nogil:
            if kind == 1:
                _sgd_all(<float*>bufs[0].buf, <const float*>bufs[1].buf, <float*>bufs[2].buf,
                         cnt, cnt, cnt, lr, mu, wd, nesterov, False, par_min)
            else:
                _sgd_all(<double*>bufs[0].buf, <const double*>bufs[1].buf,
                         <double*>bufs[2].buf, cnt, cnt, cnt, lr, mu, wd, nesterov, False,
                         par_min)
        for j in range(3):
            PyBuffer_Release(&bufs[j])
    return declined


def adam_many(list ws, list gs, list ms, list vs, list steps, double lr, double b1, double b2,
              double eps, double wd):
    """:func:`adam` on every ``(ws[k], gs[k], ms[k], vs[k])`` the kernel takes (as
    :func:`sgd_many`), ``steps[k]`` its step count (from 1): the bias corrections
    1 - b1^t and sqrt(1 - b2^t) are computed as ``_fused.adam`` computes them (C's pow and
    sqrt, which Python's ``**`` and ``math.sqrt`` call). Returns the positions it left
    alone."""
    cdef Py_ssize_t k, n = len(ws), cnt, par_min = PAR_MIN
    cdef Py_buffer bufs[4]
    cdef int kind = 0, j
    cdef double t, bc1, bc2_sqrt
    if len(gs) != n or len(ms) != n or len(vs) != n or len(steps) != n:
        raise ValueError(f"adam_many: {n} parameters, {len(gs)} gradients, {len(ms)} and "
                         f"{len(vs)} moments, {len(steps)} step counts")
    arrays = [ws, gs, ms, vs]
    declined = []
    for k in range(n):
        t = <double>steps[k]  # (before any buffer is held: a bad count raises with none held)
        if not _take_all(arrays, k, bufs, 4, &kind):
            declined.append(k)
            continue
        bc1 = 1.0 - pow(b1, t)
        bc2_sqrt = sqrt(1.0 - pow(b2, t))
        cnt = bufs[0].len // bufs[0].itemsize
        with nogil:
            if kind == 1:
                _adam_all(<float*>bufs[0].buf, <const float*>bufs[1].buf, <float*>bufs[2].buf,
                          <float*>bufs[3].buf, cnt, cnt, cnt, lr, b1, b2, eps, wd, bc1,
                          bc2_sqrt, par_min)
            else:
                _adam_all(<double*>bufs[0].buf, <const double*>bufs[1].buf,
                          <double*>bufs[2].buf, <double*>bufs[3].buf, cnt, cnt, cnt, lr, b1,
                          b2, eps, wd, bc1, bc2_sqrt, par_min)
        for j in range(4):
            PyBuffer_Release(&bufs[j])
    return declined


cdef inline void _relu_grad_chunk(const real* gp, const real* xp, real* op,
                                  Py_ssize_t n) noexcept nogil:
    # Both loads happen unconditionally, so the compiler turns the loop into vector compares
    # and blends, with no branches.
    if real is float:
        gg_relu_grad_f(gp, xp, op, n)
    else:
        gg_relu_grad_d(gp, xp, op, n)


cdef void _relu_grad_all(const real* gp, const real* xp, real* op, Py_ssize_t n,
                         Py_ssize_t par_min) noexcept nogil:
    cdef Py_ssize_t c, lo, hi
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, par_min, &nc)
    if nc == 1:
        _relu_grad_chunk(gp, xp, op, n)
        return
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _relu_grad_chunk(gp + lo, xp + lo, op + lo, hi - lo)


def relu_grad(const real[::1] g, const real[::1] x, real[::1] out):
    """out = g * (x > 0): g where x > 0, else 0 (ReLU's subgradient at 0 is 0)."""
    cdef Py_ssize_t n = g.shape[0], par_min = PAR_MIN
    _same_len("relu_grad", n, x.shape[0], "x")
    _same_len("relu_grad", n, out.shape[0], "out")
    cdef const real* gp = &g[0] if n else NULL
    cdef const real* xp = &x[0] if n else NULL
    cdef real* op = &out[0] if n else NULL
    with nogil:
        _relu_grad_all(gp, xp, op, n, par_min)


cdef inline void _relu_chunk(const real* xp, real* op, Py_ssize_t n) noexcept nogil:
    if real is float:
        gg_relu_f(xp, op, n)
    else:
        gg_relu_d(xp, op, n)


cdef void _relu_all(const real* xp, real* op, Py_ssize_t n, Py_ssize_t par_min) noexcept nogil:
    cdef Py_ssize_t c, lo, hi
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, par_min, &nc)
    if nc == 1:
        _relu_chunk(xp, op, n)
        return
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _relu_chunk(xp + lo, op + lo, hi - lo)


def relu(const real[::1] x, real[::1] out):
    """out = max(x, 0), as ``np.maximum(x, 0)``: NaN stays NaN, -0.0 becomes +0.0."""
    cdef Py_ssize_t n = x.shape[0], par_min = PAR_MIN
    _same_len("relu", n, out.shape[0], "out")
    cdef const real* xp = &x[0] if n else NULL
    cdef real* op = &out[0] if n else NULL
    with nogil:
        _relu_all(xp, op, n, par_min)


cdef inline void _add_bias_rows(real* yp, const real* bp, Py_ssize_t r, Py_ssize_t n,
                                bint down) noexcept nogil:
    if real is float:
        gg_add_bias_f(yp, bp, r, n, down)
    else:
        gg_add_bias_d(yp, bp, r, n, down)


cdef inline int _row_threads(Py_ssize_t r, Py_ssize_t n, Py_ssize_t par_min) noexcept nogil:
    """How many threads split ``r`` rows of ``n`` elements between them (1: the calling thread
    alone): ``_chunk``'s count for the ``r * n`` elements, if there are rows enough."""
    cdef int nc
    _chunk(r * n, par_min, &nc)  # only how many threads: the split is by rows
    return 1 if r < nc else nc


cdef void _add_bias_all(real* yp, const real* bp, Py_ssize_t r, Py_ssize_t n, bint down,
                        Py_ssize_t par_min) noexcept nogil:
    cdef Py_ssize_t c, lo, hi, step
    cdef int nc
    if r == 0 or n == 0:
        return
    nc = _row_threads(r, n, par_min)
    if nc == 1:
        _add_bias_rows(yp, bp, r, n, down)
        return
    step = (r + nc - 1) // nc
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(r, lo + step)
        if hi > lo:
            _add_bias_rows(yp + lo * n, (bp + lo) if down else bp, hi - lo, n, down)


def add_bias(real[:, ::1] y, const real[::1] b, bint down):
    """y += b in place: ``b`` (length y.shape[1]) added to every row of ``y``, or, with
    ``down``, ``b`` (length y.shape[0]) to every column (``y`` is then the transpose of a
    column-major array). Rows split between threads above ``PAR_MIN`` elements."""
    cdef Py_ssize_t r = y.shape[0], n = y.shape[1], par_min = PAR_MIN
    if b.shape[0] != (r if down else n):
        raise ValueError(f"add_bias: b has {b.shape[0]} elements for y {r}x{n} (down={down})")
    if r == 0 or n == 0:
        return
    cdef real* yp = &y[0, 0]
    cdef const real* bp = &b[0]
    with nogil:
        _add_bias_all(yp, bp, r, n, down, par_min)


cdef inline void _outer_rows(const real* ap, Py_ssize_t sa, const real* bp, real* op,
                             Py_ssize_t r, Py_ssize_t n, Py_ssize_t ld) noexcept nogil:
    if real is float:
        gg_outer_f(ap, sa, bp, op, r, n, ld)
    else:
        gg_outer_d(ap, sa, bp, op, r, n, ld)


cdef void _outer_all(const real* ap, Py_ssize_t sa, const real* bp, real* op, Py_ssize_t r,
                     Py_ssize_t n, Py_ssize_t ld, Py_ssize_t par_min) noexcept nogil:
    cdef Py_ssize_t c, lo, hi, step
    cdef int nc
    if r == 0 or n == 0:
        return
    nc = _row_threads(r, n, par_min)
    if nc == 1:
        _outer_rows(ap, sa, bp, op, r, n, ld)
        return
    step = (r + nc - 1) // nc
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(r, lo + step)
        if hi > lo:
            _outer_rows(ap + lo * sa, sa, bp, op + lo * ld, hi - lo, n, ld)


def outer(const real[:] a, const real[::1] b, real[:, :] out):
    """out[i, j] = 0 + a[i] * b[j]: the product of a column ``a`` (M) and a row ``b`` (N) as
    ``np.matmul`` of (M, 1) and (1, N) computes it (a -0.0 product becomes +0.0); ``out``
    (M, N), its rows possibly further apart than N. Rows split between threads above
    ``PAR_MIN`` elements (elementwise: the same bits at any thread count)."""
    cdef Py_ssize_t r = out.shape[0], n = out.shape[1], par_min = PAR_MIN
    cdef Py_ssize_t sa = a.strides[0] // <Py_ssize_t>sizeof(real), ld
    if a.shape[0] != r or b.shape[0] != n:
        raise ValueError(f"outer: a {a.shape[0]}, b {b.shape[0]} and out {r}x{n} do not fit")
    if n > 1 and out.strides[1] != <Py_ssize_t>sizeof(real):
        raise ValueError("outer: out's rows must be contiguous")
    if r == 0 or n == 0:
        return
    ld = out.strides[0] // <Py_ssize_t>sizeof(real)
    cdef const real* ap = &a[0]
    cdef const real* bp = &b[0]
    cdef real* op = &out[0, 0]
    with nogil:
        _outer_all(ap, sa, bp, op, r, n, ld, par_min)


cdef inline double _exp(real v) noexcept nogil:
    if real is float:
        return expf(v)  # single precision is enough for float32 logits, and faster
    else:
        return exp(v)


#: softmax cross-entropy splits its rows between threads from this many logits on (exp is
#: dearer than the optimiser's multiply-adds, so from fewer elements).
XENT_PAR_MIN = 16384


def xent_forward(const real[:, ::1] x, const long long[::1] labels):
    """-(1/S) sum_s log softmax(x_s)[labels_s] for logits x (S, T): each row's term
    x_sy - m - log sum_j exp(x_sj - m) (m = max_j x_sj), summed in double, row 0 first
    (whatever the thread count: the rows' terms are computed in parallel, then added in
    order)."""
    cdef Py_ssize_t S = x.shape[0], T = x.shape[1], par_min = XENT_PAR_MIN
    cdef double loss
    _check_labels("xent_forward", labels, S, T)
    if S == 0:
        return float("nan")
    with nogil:
        loss = _xent_both(&x[0, 0], &labels[0], 0.0, <real*>NULL, S, T, par_min)
    return loss


cdef inline double _xent_both_rows(const real* x, const long long* labels, double scale,
                                   real* out, Py_ssize_t T, Py_ssize_t lo, Py_ssize_t hi,
                                   double* rows) noexcept nogil:
    """Softmax cross-entropy of rows lo..hi in one pass, each exponential computed once:
    each row's loss term x_sy - m - log sum_j exp(x_sj - m) (m = max_j x_sj; the sum in
    double, in order), to rows[s] when rows is not NULL, and, when out is not NULL, its
    gradient row out_s = (softmax(x_s) - onehot) * scale. Returns the terms' sum, row lo
    first. (The exponentials are rounded to ``real`` before they are summed either way:
    ``_exp`` of a float is a float, so the loss is the same with or without out.)"""
    cdef Py_ssize_t s, j
    cdef double z, total = 0, term
    cdef real m, e
    cdef const real* xs
    cdef real* os
    cdef long long y
    for s in range(lo, hi):
        xs = x + s * T
        y = labels[s]
        m = xs[0]
        for j in range(1, T):
            if xs[j] > m:
                m = xs[j]
        z = 0
        if out == NULL:
            for j in range(T):
                e = <real>_exp(xs[j] - m)
                z += e
        else:
            os = out + s * T
            for j in range(T):
                os[j] = <real>_exp(xs[j] - m)
                z += os[j]
        term = <double>(xs[y] - m) - log(z)
        if rows != NULL:
            rows[s] = term
        total += term
        if out == NULL:
            continue
        z = scale / z
        for j in range(T):
            os[j] = <real>(os[j] * z)
        os[y] = <real>(os[y] - scale)
    return total


cdef void _xent_grad(const real* x, const long long* labels, double scale, real* out,
                     Py_ssize_t S, Py_ssize_t T, Py_ssize_t par_min) noexcept nogil:
    """out = (softmax(x) - onehot(labels)) * scale, row by row (x, out: (S, T) row-major),
    the rows split between threads from par_min logits on."""
    cdef Py_ssize_t c, lo, hi
    cdef int nc = 1
    cdef Py_ssize_t step = S
    if S * T >= par_min:
        step = _chunk(S, 2, &nc)
    if nc == 1:
        _xent_both_rows(x, labels, scale, out, T, 0, S, NULL)
        return
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(S, lo + step)
        _xent_both_rows(x, labels, scale, out, T, lo, hi, NULL)


cdef double _xent_both(const real* x, const long long* labels, double scale, real* out,
                       Py_ssize_t S, Py_ssize_t T, Py_ssize_t par_min) noexcept nogil:
    """The loss -(1/S) sum of the rows' terms and (unless out is NULL) its gradient
    (``_xent_both_rows``) in one pass over the logits; the rows split between threads from
    par_min logits on, their terms then added in order."""
    cdef Py_ssize_t c, lo, hi, s
    cdef int nc = 1
    cdef Py_ssize_t step = S
    cdef double total = 0
    cdef double* rows = NULL
    if S == 0:
        return 0.0 / 0.0
    if S * T >= par_min:
        step = _chunk(S, 2, &nc)
    if nc > 1:
        rows = <double*>malloc(S * sizeof(double))
    if rows == NULL:
        return -_xent_both_rows(x, labels, scale, out, T, 0, S, NULL) / S
    for c in prange(nc, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(S, lo + step)
        _xent_both_rows(x, labels, scale, out, T, lo, hi, rows)
    for s in range(S):
        total += rows[s]
    free(rows)
    return -total / S


def xent_both(const real[:, ::1] x, const long long[::1] labels, double scale,
              real[:, ::1] out):
    """:func:`xent_forward`'s loss, returned, and :func:`xent_backward`'s ``out``, written, in
    one pass over the logits: the same numbers as the two calls (the same row function)."""
    cdef Py_ssize_t S = x.shape[0], T = x.shape[1], par_min = XENT_PAR_MIN
    cdef double loss
    if S == 0:
        return float("nan")
    if out.shape[0] != S or out.shape[1] != T:
        raise ValueError(f"xent_both: out is {out.shape[0]}x{out.shape[1]}, the logits {S}x{T}")
    _check_labels("xent_both", labels, S, T)
    with nogil:
        loss = _xent_both(&x[0, 0], &labels[0], scale, &out[0, 0], S, T, par_min)
    return loss


def xent_backward(const real[:, ::1] x, const long long[::1] labels, double scale,
                  real[:, ::1] out):
    """out = (softmax(x) - onehot(labels)) * scale, row by row (x, out: (S, T))."""
    cdef Py_ssize_t S = x.shape[0], T = x.shape[1], par_min = XENT_PAR_MIN
    if out.shape[0] != S or out.shape[1] != T:
        raise ValueError(
            f"xent_backward: out is {out.shape[0]}x{out.shape[1]}, the logits {S}x{T}"
        )
    _check_labels("xent_backward", labels, S, T)
    if S == 0:
        return
    with nogil:
        _xent_grad(&x[0, 0], &labels[0], scale, &out[0, 0], S, T, par_min)


ctypedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float*, int, const float*,
                          int, float, float*, int) noexcept nogil
ctypedef void (*dgemm_fn)(int, int, int, int, int, int, double, const double*, int,
                          const double*, int, double, double*, int) noexcept nogil
# ILP64 CBLAS (NumPy's OpenBLAS, scipy_cblas_?gemm64_): 64-bit sizes, int enums
ctypedef void (*sgemm64_fn)(int, int, int, long long, long long, long long, float,
                            const float*, long long, const float*, long long, float, float*,
                            long long) noexcept nogil
ctypedef void (*dgemm64_fn)(int, int, int, long long, long long, long long, double,
                            const double*, long long, const double*, long long, double,
                            double*, long long) noexcept nogil


# oneDNN's dnnl_sgemm (row-major, 'N'/'T', 64-bit sizes; returns a status)
ctypedef int (*dnnl_sgemm_fn)(char, char, long long, long long, long long, float, const float*,
                              long long, const float*, long long, float, float*,
                              long long) noexcept nogil

#: _gemm_at's calling conventions: the CBLAS LP64 and ILP64 ``cblas_?gemm``, oneDNN's sgemm
GEMM_CBLAS, GEMM_CBLAS64, GEMM_DNNL = 0, 1, 2

cdef extern from *:
    """
    #include <pthread.h>
    #include <stdint.h>
    #include <string.h>
    /* oneDNN 3's matmul primitive (its brgemm kernels) for the products x @ W^T (b used
       transposed, a not, beta = 0), where it beat dnnl_sgemm: dnnl_sgemm packs a transposed
       b poorly (measured: docs/speed.md, "oneDNN"). The functions are oneDNN's C API, found
       by graphgrad/_blas.py and handed over as addresses (GG_DNNL_NFN of them, in this
       order); a primitive is made once per (shapes, strides, thread count) and kept in a
       small table, its memory objects pointed at each call's arrays. One mutex guards the
       table, the engine and the stream (a stream is not for two threads at once). */
    typedef void* gg_dh;
    typedef struct { int arg; gg_dh memory; } gg_dnnl_arg;
    enum { GG_DNNL_NFN = 15, GG_DNNL_SLOTS = 64 };
    typedef struct {
        int (*engine_create)(gg_dh*, int, size_t);
        int (*stream_create)(gg_dh*, gg_dh, unsigned);
        int (*md_create)(gg_dh*, int, const int64_t*, int, const int64_t*);
        int (*md_destroy)(gg_dh);
        int (*pd_create)(gg_dh*, gg_dh, gg_dh, gg_dh, gg_dh, gg_dh, gg_dh);
        int (*pd_query)(gg_dh, int, int, void*);
        int (*pd_destroy)(gg_dh);
        int (*prim_create)(gg_dh*, gg_dh);
        int (*prim_destroy)(gg_dh);
        int (*mem_create)(gg_dh*, gg_dh, gg_dh, void*);
        int (*mem_set)(gg_dh, void*);
        int (*mem_destroy)(gg_dh);
        int (*execute)(gg_dh, gg_dh, int, const gg_dnnl_arg*);
        int (*wait)(gg_dh);
        int (*max_threads)(void);
    } gg_dnnl_api_t;
    typedef struct {
        long long key[7];  /* M, N, K, lda, ldb, ldc, threads; M = 0: empty */
        int usable;        /* 0: oneDNN offered only its reference code: dnnl_sgemm */
        gg_dh prim, ma, mb, mc;
    } gg_dnnl_slot;
    static gg_dnnl_api_t gg_dnnl;
    static int gg_dnnl_on = 0;
    static gg_dh gg_dnnl_engine = NULL, gg_dnnl_stream = NULL;
    static gg_dnnl_slot gg_dnnl_slots[GG_DNNL_SLOTS];
    static int gg_dnnl_next = 0;
    static long long gg_dnnl_runs = 0, gg_dnnl_made = 0;
    static pthread_mutex_t gg_dnnl_mu = PTHREAD_MUTEX_INITIALIZER;

    static void gg_dnnl_clear_slot(gg_dnnl_slot* e) {
        if (e->prim) gg_dnnl.prim_destroy(e->prim);
        if (e->ma) gg_dnnl.mem_destroy(e->ma);
        if (e->mb) gg_dnnl.mem_destroy(e->mb);
        if (e->mc) gg_dnnl.mem_destroy(e->mc);
        memset(e, 0, sizeof(*e));
    }

    /* Fill slot e for key k: a primitive and its memory objects, or usable = 0 where oneDNN
       offers only its reference code or fails (that shape then goes to dnnl_sgemm). */
    static void gg_dnnl_make(gg_dnnl_slot* e, const long long* k) {
        int64_t ad[2] = {k[0], k[2]}, as[2] = {k[3], 1};   /* a: (M, K), rows lda apart */
        int64_t bd[2] = {k[2], k[1]}, bs[2] = {1, k[4]};   /* b^T: (K, N) of b (N, K) */
        int64_t cd[2] = {k[0], k[1]}, cs[2] = {k[5], 1};   /* out: (M, N), rows ldc apart */
        gg_dh amd = NULL, bmd = NULL, cmd = NULL, pd = NULL;
        const char* impl = NULL;
        int st = gg_dnnl.md_create(&amd, 2, ad, 3, as);           /* 3: dnnl_f32 */
        if (!st) st = gg_dnnl.md_create(&bmd, 2, bd, 3, bs);
        if (!st) st = gg_dnnl.md_create(&cmd, 2, cd, 3, cs);
        if (!st) st = gg_dnnl.pd_create(&pd, gg_dnnl_engine, amd, bmd, NULL, cmd, NULL);
        if (!st) st = gg_dnnl.pd_query(pd, 8, 0, &impl);      /* 8: dnnl_query_impl_info_str */
        memcpy(e->key, k, sizeof(e->key));
        e->usable = !st && impl && strncmp(impl, "ref", 3) != 0;
        if (e->usable) {
            st = gg_dnnl.prim_create(&e->prim, pd);
            if (!st) st = gg_dnnl.mem_create(&e->ma, amd, gg_dnnl_engine, NULL);
            if (!st) st = gg_dnnl.mem_create(&e->mb, bmd, gg_dnnl_engine, NULL);
            if (!st) st = gg_dnnl.mem_create(&e->mc, cmd, gg_dnnl_engine, NULL);
            if (st) { gg_dnnl_clear_slot(e); memcpy(e->key, k, sizeof(e->key)); }
        }
        if (pd) gg_dnnl.pd_destroy(pd);
        if (amd) gg_dnnl.md_destroy(amd);
        if (bmd) gg_dnnl.md_destroy(bmd);
        if (cmd) gg_dnnl.md_destroy(cmd);
        gg_dnnl_made++;
    }

    /* out (M, N) = a (M, K) @ b^T, b (N, K), by the matmul primitive: 0 when done, -1 when
       the caller should use dnnl_sgemm instead (not set up, no optimised kernel, an error). */
    static int gg_dnnl_matmul(long long M, long long N, long long K, const float* a,
                              long long lda, const float* b, long long ldb, float* out,
                              long long ldc) {
        int done = -1;
        if (!gg_dnnl_on || M <= 0 || N <= 0 || K <= 0) return -1;
        pthread_mutex_lock(&gg_dnnl_mu);
        if (gg_dnnl_on && !gg_dnnl_engine) {
            if (gg_dnnl.engine_create(&gg_dnnl_engine, 1, 0)) gg_dnnl_engine = NULL;  /* 1: cpu */
            else if (gg_dnnl.stream_create(&gg_dnnl_stream, gg_dnnl_engine, 1)) {
                gg_dnnl_stream = NULL;
            }
            if (!gg_dnnl_stream) gg_dnnl_on = 0;
        }
        if (gg_dnnl_on) {
            long long k[7] = {M, N, K, lda, ldb, ldc, gg_dnnl.max_threads()};
            gg_dnnl_slot* e = NULL;
            for (int i = 0; i < GG_DNNL_SLOTS; i++) {
                if (gg_dnnl_slots[i].key[0] && !memcmp(gg_dnnl_slots[i].key, k, sizeof(k))) {
                    e = &gg_dnnl_slots[i];
                    break;
                }
            }
            if (!e) {
                e = &gg_dnnl_slots[gg_dnnl_next];
                gg_dnnl_next = (gg_dnnl_next + 1) % GG_DNNL_SLOTS;
                gg_dnnl_clear_slot(e);
                gg_dnnl_make(e, k);
            }
            if (e->usable && !gg_dnnl.mem_set(e->ma, (void*)a) && !gg_dnnl.mem_set(e->mb, (void*)b)
                && !gg_dnnl.mem_set(e->mc, out)) {
                gg_dnnl_arg args[3] = {{1, e->ma}, {33, e->mb}, {17, e->mc}};  /* SRC, WEIGHTS, DST */
                if (!gg_dnnl.execute(e->prim, gg_dnnl_stream, 3, args) && !gg_dnnl.wait(gg_dnnl_stream)) {
                    done = 0;
                    gg_dnnl_runs++;
                }
            }
        }
        pthread_mutex_unlock(&gg_dnnl_mu);
        return done;
    }

    /* A forked child has only the thread that forked: a mutex another thread held then would
       stay locked forever, so the child starts with it unlocked (what that thread was making,
       a slot it had just cleared, is left to be made again). */
    static void gg_dnnl_atfork_child(void) {
        pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
        gg_dnnl_mu = fresh;
    }

    /* Hand over oneDNN's functions (fns: GG_DNNL_NFN addresses), or with fns NULL stop using
       the primitive and free what was made. */
    static void gg_dnnl_setup(const size_t* fns) {
        static int forks_handled = 0;
        if (!forks_handled) forks_handled = !pthread_atfork(NULL, NULL, gg_dnnl_atfork_child);
        pthread_mutex_lock(&gg_dnnl_mu);
        if (gg_dnnl_on || gg_dnnl_engine) {
            for (int i = 0; i < GG_DNNL_SLOTS; i++) gg_dnnl_clear_slot(&gg_dnnl_slots[i]);
        }
        gg_dnnl_on = 0;
        if (fns) {
            if (!gg_dnnl_engine) memcpy(&gg_dnnl, fns, sizeof(gg_dnnl));
            gg_dnnl_on = 1;
        }
        pthread_mutex_unlock(&gg_dnnl_mu);
    }
    """
    int gg_dnnl_matmul(long long M, long long N, long long K, const float* a, long long lda,
                       const float* b, long long ldb, float* out, long long ldc) noexcept nogil
    void gg_dnnl_setup(const size_t* fns) noexcept nogil
    enum: GG_DNNL_NFN
    long long gg_dnnl_runs, gg_dnnl_made
    int gg_dnnl_on


def dnnl_matmul_setup(fns):
    """Use oneDNN 3's matmul primitive for float32 products ``x @ Wᵀ`` under ``GEMM_DNNL``:
    ``fns`` holds the addresses of the functions ``graphgrad/_blas.py`` names in
    ``ONEDNN_MATMUL_FUNCTIONS``, in that order; None stops using it (every such product then
    goes to ``dnnl_sgemm``) and frees the primitives made."""
    cdef size_t table[GG_DNNL_NFN]
    if fns is None:
        gg_dnnl_setup(NULL)
        return
    if len(fns) != GG_DNNL_NFN or not all(fns):
        raise ValueError(f"dnnl_matmul_setup: {GG_DNNL_NFN} nonzero addresses, got {fns!r}")
    for i in range(GG_DNNL_NFN):
        table[i] = fns[i]
    gg_dnnl_setup(table)


def dnnl_matmul_stats():
    """``(on, primitives made, products run by them)`` since the module was loaded: whether
    the matmul primitive is in use and how much (for tests and benchmarks)."""
    return bool(gg_dnnl_on), gg_dnnl_made, gg_dnnl_runs


cdef void _gemm_at(size_t fn, int conv, bint dbl, bint ta, bint tb, long long M,
                   long long N, long long K, const void* a, long long lda, const void* b,
                   long long ldb, double beta, void* out, long long ldc) noexcept nogil:
    """out = op(a) @ op(b) + beta * out (row-major; op: transpose when ta/tb) by the GEMM at
    address ``fn`` (float64 when ``dbl``): by ``conv``, a CBLAS ``cblas_?gemm`` (0: LP64,
    1: ILP64) or oneDNN's ``dnnl_sgemm`` (2: float32 only; ``graphgrad/_blas.py`` never
    pairs it with float64; the products a @ bᵀ with beta = 0 go to oneDNN's matmul primitive
    instead where it is set up, ``gg_dnnl_matmul``)."""
    cdef int opa = 112 if ta else 111, opb = 112 if tb else 111  # CblasTrans, CblasNoTrans
    if conv == 2:
        if tb and not ta and beta == 0.0 and gg_dnnl_matmul(
                M, N, K, <const float*>a, lda, <const float*>b, ldb, <float*>out, ldc) == 0:
            return
        (<dnnl_sgemm_fn>fn)(b'T' if ta else b'N', b'T' if tb else b'N', M, N, K, 1.0,
                            <const float*>a, lda, <const float*>b, ldb, <float>beta,
                            <float*>out, ldc)
    elif conv == 1:
        if dbl:
            (<dgemm64_fn>fn)(101, opa, opb, M, N, K, 1.0, <const double*>a, lda,
                             <const double*>b, ldb, beta, <double*>out, ldc)
        else:
            (<sgemm64_fn>fn)(101, opa, opb, M, N, K, 1.0, <const float*>a, lda,
                             <const float*>b, ldb, <float>beta, <float*>out, ldc)
    elif dbl:
        (<dgemm_fn>fn)(101, opa, opb, <int>M, <int>N, <int>K, 1.0, <const double*>a, <int>lda,
                       <const double*>b, <int>ldb, beta, <double*>out, <int>ldc)
    else:
        (<sgemm_fn>fn)(101, opa, opb, <int>M, <int>N, <int>K, 1.0, <const float*>a, <int>lda,
                       <const float*>b, <int>ldb, <float>beta, <float*>out, <int>ldc)


cdef str _conv_error(int conv, bint dbl):
    """Why ``_gemm_at`` cannot call by convention ``conv`` for this dtype, or None."""
    if conv < 0 or conv > 2 or (conv == 2 and dbl):
        return (f"calling convention {conv} for {'float64' if dbl else 'float32'} "
                f"(0, 1; 2 for float32 only)")
    return None


def gemm(size_t fn, const real[:, ::1] a, bint ta, const real[:, ::1] b, bint tb,
         real[:, :] out, double beta=0.0, int conv=0):
    """out = op(a) @ op(b) + beta * out (op: transpose when ta/tb; beta = 0: out is not read)
    by the GEMM at address ``fn``, called by convention ``conv`` (``GEMM_CBLAS``: the CBLAS
    ``cblas_?gemm``, row-major, LP64; ``GEMM_CBLAS64``: ILP64; ``GEMM_DNNL``: oneDNN's
    ``dnnl_sgemm``, float32 only): ``graphgrad/_blas.py`` finds it and checks the shapes."""
    cdef long long M = out.shape[0], N = out.shape[1]
    cdef long long K = a.shape[0] if ta else a.shape[1]
    cdef long long lda = a.shape[1], ldb = b.shape[1]
    cdef long long ldc = out.strides[0] // sizeof(real)  # N, or more for a padded out
    cdef bint dbl = real is double
    if out.strides[1] != sizeof(real) or out.strides[0] % sizeof(real) or ldc < max(N, 1):
        raise ValueError(f"gemm: out's rows must be contiguous, got strides "
                         f"({out.strides[0]}, {out.strides[1]})")
    why = _conv_error(conv, dbl)
    if why is not None:
        raise ValueError(f"gemm: {why}")
    with nogil:
        _gemm_at(fn, conv, dbl, ta, tb, M, N, K, &a[0, 0], lda, &b[0, 0], ldb, beta,
                 &out[0, 0], ldc)


ctypedef void (*sgemv_fn)(int, int, int, int, float, const float*, int, const float*, int,
                          float, float*, int) noexcept nogil
ctypedef void (*dgemv_fn)(int, int, int, int, double, const double*, int, const double*, int,
                          double, double*, int) noexcept nogil
ctypedef void (*sgemv64_fn)(int, int, long long, long long, float, const float*, long long,
                            const float*, long long, float, float*, long long) noexcept nogil
ctypedef void (*dgemv64_fn)(int, int, long long, long long, double, const double*, long long,
                            const double*, long long, double, double*, long long) noexcept nogil


cdef void _sum_rows_at(size_t fn, bint ilp64, bint dbl, const void* g, long long S,
                       long long n, const void* ones, void* out, bint gt) noexcept nogil:
    """out (n,) = ones (S,) @ g (S, n): the GEMV NumPy's ``ones @ g`` makes, by the CBLAS
    ``cblas_?gemv`` at address ``fn``: for a row-major g ``(RowMajor, Trans)`` over g; for a
    column-major one (``gt``: g points at its row-major transpose, (n, S)) ``(RowMajor,
    NoTrans)`` over that."""
    cdef long long M = n if gt else S, N = S if gt else n
    cdef int op = 111 if gt else 112  # CblasNoTrans, CblasTrans
    if ilp64:
        if dbl:
            (<dgemv64_fn>fn)(101, op, M, N, 1.0, <const double*>g, N, <const double*>ones,
                             1, 0.0, <double*>out, 1)
        else:
            (<sgemv64_fn>fn)(101, op, M, N, 1.0, <const float*>g, N, <const float*>ones, 1,
                             0.0, <float*>out, 1)
    elif dbl:
        (<dgemv_fn>fn)(101, op, <int>M, <int>N, 1.0, <const double*>g, <int>N,
                       <const double*>ones, 1, 0.0, <double*>out, 1)
    else:
        (<sgemv_fn>fn)(101, op, <int>M, <int>N, 1.0, <const float*>g, <int>N,
                       <const float*>ones, 1, 0.0, <float*>out, 1)


cdef void _gemv_at(size_t fn, bint ilp64, bint dbl, int order, int trans, long long M,
                   long long N, const void* a, long long lda, const void* x, long long incx,
                   void* y, long long incy) noexcept nogil:
    """y = op(A) x by the CBLAS ``cblas_?gemv`` at address ``fn`` (alpha 1, beta 0), the
    arguments as given: the call NumPy's matmul makes for a vector times a matrix."""
    if ilp64:
        if dbl:
            (<dgemv64_fn>fn)(order, trans, M, N, 1.0, <const double*>a, lda,
                             <const double*>x, incx, 0.0, <double*>y, incy)
        else:
            (<sgemv64_fn>fn)(order, trans, M, N, 1.0, <const float*>a, lda,
                             <const float*>x, incx, 0.0, <float*>y, incy)
    elif dbl:
        (<dgemv_fn>fn)(order, trans, <int>M, <int>N, 1.0, <const double*>a, <int>lda,
                       <const double*>x, <int>incx, 0.0, <double*>y, <int>incy)
    else:
        (<sgemv_fn>fn)(order, trans, <int>M, <int>N, 1.0, <const float*>a, <int>lda,
                       <const float*>x, <int>incx, 0.0, <float*>y, <int>incy)


def sum_rows(size_t fn, const real[:, ::1] g, const real[::1] ones, real[::1] out,
             bint ilp64=False, bint gt=False):
    """out = ones @ g by the CBLAS ``cblas_?gemv`` at address ``fn`` (``gt``: ``g`` is the
    row-major transpose of a column-major (S, n) array); for tests: the plans' bias gradients
    must be NumPy's ``ones @ g`` bit for bit."""
    cdef bint dbl = real is double
    cdef long long S = g.shape[1] if gt else g.shape[0], n = g.shape[0] if gt else g.shape[1]
    if S == 0 or n == 0:
        return
    with nogil:
        _sum_rows_at(fn, ilp64, dbl, &g[0, 0], S, n, &ones[0], &out[0], gt)


cdef void _copy_t(const char* src, char* dst, Py_ssize_t r, Py_ssize_t c,
                  Py_ssize_t size) noexcept nogil:
    """dst (c, r) = the transpose of src (r, c), both row-major, elements of ``size`` bytes."""
    cdef Py_ssize_t i, j
    if size == 8:
        for j in range(c):
            for i in range(r):
                (<double*>dst)[j * r + i] = (<const double*>src)[i * c + j]
    else:
        for j in range(c):
            for i in range(r):
                (<float*>dst)[j * r + i] = (<const float*>src)[i * c + j]


# ------------------------------------------------------------------------------------------
# Plans: a whole training step as one call (graphgrad.compiled builds them)

cdef enum:
    OP_GEMM = 1       # p0 @ p1 -> p2: f0 ta, f1 tb, f2 conv, f3 first (beta 0 once);
                      # n0..n5 M N K lda ldb ldc; s0 beta
    OP_SUM_ROWS = 2   # ones p1 @ p0 (n0, n1) -> p2: f2 ilp64, f0: p0 is the (n1, n0) transpose
    OP_BIAS = 3       # p0 (n0, n1) += p1 (a row; f0: a column, p0 a column-major array's
                      # transpose)
    OP_XENT = 5       # loss of logits p0 (n0, n1) and the labels; p1 = its gradient, s0 scale
    OP_SGD = 7        # w p0, g p1, v p2, n0: s1 mu, s2 wd, f0 nesterov, f3 first
    OP_ADAM = 8       # w p0, g p1, m p2, v p3, n0: s1 b1, s2 b2, s3 eps, s4 wd
    OP_COPY_T = 9     # p1 (n1, n0) = the transpose of p0 (n0, n1)
    OP_ACT = 10       # p1 = a(p0), n0 elements: f0 the activation (ACT_*), s0 its parameter;
                      # fn (aux1) the NumPy loop(s) it calls (tanh; exp; minimum, expm1)
    OP_ACT_GRAD = 11  # p3 = the VJP of a at input p1, output p2, of gradient p0 (f0, s0)
    OP_GEMV = 12      # p2 = op(p0) @ p1 by cblas_?gemv: f0 order, f1 trans, f2 ilp64;
                      # n0..n4 M N lda incx incy (alpha 1, beta 0)
    OP_OUTER = 13     # p2 (n0, n1; rows n2 apart) = 0 + p0 (n0; elements n3 apart) x p1 (n1)

cdef enum:
    ACT_RELU = 0  # the ReLU kernels (relu, relu_grad): threaded, per instruction set
    ACT_TANH = 1
    ACT_SIGMOID = 2
    ACT_ELU = 3
    ACT_LEAKY = 4

#: The plans' operations, by name (the codes the tuples given to ``Plan`` use).
PLAN_OPS = {"gemm": OP_GEMM, "sum_rows": OP_SUM_ROWS, "bias": OP_BIAS, "xent": OP_XENT,
            "sgd": OP_SGD, "adam": OP_ADAM, "copy_t": OP_COPY_T, "act": OP_ACT,
            "act_grad": OP_ACT_GRAD, "gemv": OP_GEMV, "outer": OP_OUTER}
#: The activations a plan computes, by name (OP_ACT's and OP_ACT_GRAD's f0).
PLAN_ACTIVATIONS = {"relu": ACT_RELU, "tanh": ACT_TANH, "sigmoid": ACT_SIGMOID,
                    "elu": ACT_ELU, "leaky_relu": ACT_LEAKY}

cdef struct Instr:
    int op
    bint dbl
    int f[4]
    size_t fn
    size_t aux[4]  # OP_ACT: aux0 fn's data, aux1 a second NumPy loop, aux2 its data
    char* p[4]
    int xmask  # bit k set: p[k] is the batch input (given to each run)
    long long n[6]
    double s[6]


ctypedef void (*ufunc_loop)(char**, const Py_ssize_t*, const Py_ssize_t*, void*) noexcept nogil


cdef inline void _loop1(size_t fn, size_t data, char* src, char* dst, Py_ssize_t n,
                        Py_ssize_t size) noexcept nogil:
    """dst = f(src) by NumPy's own inner loop of a unary ufunc (n contiguous elements)."""
    cdef char* args[2]
    cdef Py_ssize_t steps[2]
    args[0], args[1] = src, dst
    steps[0], steps[1] = size, size
    (<ufunc_loop>fn)(args, &n, steps, <void*>data)


cdef void _act_forward(Instr* ins, const real* y, real* a, Py_ssize_t n,
                       Py_ssize_t par_min) noexcept nogil:
    """a = act(y) as graphgrad's forwards compute it: relu: the ``relu`` kernel; the others
    with NumPy's own loops for the transcendental part (so the same bits): tanh:
    np.tanh(y); sigmoid: e = exp(-|y|),
    where(y >= 0, 1, e) / (1 + e); elu: where(y > 0, y, alpha expm1(minimum(y, 0)));
    leaky_relu: where(y > 0, y, y slope)."""
    cdef Py_ssize_t i
    cdef real c = <real>ins.s[0], e
    cdef real zero = 0
    cdef char* args[3]
    cdef Py_ssize_t steps[3]
    cdef Py_ssize_t size = sizeof(real)
    cdef int kind = ins.f[0]
    if kind == ACT_RELU:
        _relu_all(y, a, n, par_min)
    elif kind == ACT_TANH:
        _loop1(ins.fn, ins.aux[0], <char*>y, <char*>a, n, size)
    elif kind == ACT_SIGMOID:
        for i in range(n):
            a[i] = -<real>fabs(y[i])  # as -np.abs(y), NaN's sign bit included
        _loop1(ins.fn, ins.aux[0], <char*>a, <char*>a, n, size)
        for i in range(n):
            e = a[i]
            a[i] = (<real>1 if y[i] >= 0 else e) / (<real>1 + e)
    elif kind == ACT_ELU:
        args[0], args[1], args[2] = <char*>y, <char*>&zero, <char*>a
        steps[0], steps[1], steps[2] = size, 0, size
        (<ufunc_loop>ins.aux[1])(args, &n, steps, <void*>ins.aux[2])  # minimum(y, 0)
        _loop1(ins.fn, ins.aux[0], <char*>a, <char*>a, n, size)  # expm1
        for i in range(n):
            a[i] = y[i] if y[i] > 0 else c * a[i]
    else:  # ACT_LEAKY
        for i in range(n):
            a[i] = y[i] if y[i] > 0 else y[i] * c


cdef void _act_grad(int kind, double param, const real* g, const real* y, const real* a,
                    real* out, Py_ssize_t n, Py_ssize_t par_min) noexcept nogil:
    """out = the VJP of the activation at y (output a) of gradient g, as graphgrad's rules
    compute it: relu: the ``relu_grad`` kernel (g where y > 0, else 0); tanh: (1 - a a) g; sigmoid: ((1 - a) a) g; elu: where(y > 0, g,
    g (a + alpha)); leaky_relu: g where(y > 0, 1, slope)."""
    cdef Py_ssize_t i
    cdef real c = <real>param, t
    if kind == ACT_RELU:
        _relu_grad_all(g, y, out, n, par_min)
    elif kind == ACT_TANH:
        for i in range(n):
            t = a[i] * a[i]
            t = 1 - t
            out[i] = t * g[i]
    elif kind == ACT_SIGMOID:
        for i in range(n):
            t = 1 - a[i]
            t = t * a[i]
            out[i] = t * g[i]
    elif kind == ACT_ELU:
        for i in range(n):
            out[i] = g[i] if y[i] > 0 else g[i] * (a[i] + c)
    else:  # ACT_LEAKY
        for i in range(n):
            out[i] = g[i] * (<real>1 if y[i] > 0 else c)


cdef double _run_plan(Instr* code, int count, char* x, const long long* labels, double lr,
                      double t, Py_ssize_t par_min, Py_ssize_t xent_min) noexcept nogil:
    cdef int k, j
    cdef Instr* ins
    cdef char* p[4]
    cdef double loss = 0.0 / 0.0
    cdef double beta, bc1, bc2
    cdef Py_ssize_t cols, ldg
    for k in range(count):
        ins = &code[k]
        for j in range(4):
            p[j] = x if (ins.xmask >> j) & 1 else ins.p[j]
        if ins.op == OP_GEMM:
            beta = 0.0 if ins.f[3] else ins.s[0]
            ins.f[3] = 0
            _gemm_at(ins.fn, ins.f[2], ins.dbl, ins.f[0], ins.f[1], ins.n[0], ins.n[1],
                     ins.n[2], p[0], ins.n[3], p[1], ins.n[4], beta, p[2], ins.n[5])
        elif ins.op == OP_SUM_ROWS:
            _sum_rows_at(ins.fn, ins.f[2], ins.dbl, p[0], ins.n[0], ins.n[1], p[1], p[2],
                         ins.f[0])
        elif ins.op == OP_GEMV:
            _gemv_at(ins.fn, ins.f[2], ins.dbl, ins.f[0], ins.f[1], ins.n[0], ins.n[1], p[0],
                     ins.n[2], p[1], ins.n[3], p[2], ins.n[4])
        elif ins.op == OP_OUTER:
            if ins.dbl:
                _outer_all(<const double*>p[0], ins.n[3], <const double*>p[1],
                           <double*>p[2], ins.n[0], ins.n[1], ins.n[2], par_min)
            else:
                _outer_all(<const float*>p[0], ins.n[3], <const float*>p[1], <float*>p[2],
                           ins.n[0], ins.n[1], ins.n[2], par_min)
        elif ins.op == OP_COPY_T:
            _copy_t(p[0], p[1], ins.n[0], ins.n[1], 8 if ins.dbl else 4)
        elif ins.op == OP_ACT:
            if ins.dbl:
                _act_forward(ins, <const double*>p[0], <double*>p[1], ins.n[0], par_min)
            else:
                _act_forward(ins, <const float*>p[0], <float*>p[1], ins.n[0], par_min)
        elif ins.op == OP_ACT_GRAD:
            if ins.dbl:
                _act_grad(ins.f[0], ins.s[0], <const double*>p[0], <const double*>p[1],
                          <const double*>p[2], <double*>p[3], ins.n[0], par_min)
            else:
                _act_grad(ins.f[0], ins.s[0], <const float*>p[0], <const float*>p[1],
                          <const float*>p[2], <float*>p[3], ins.n[0], par_min)
        elif ins.op == OP_BIAS:
            if ins.dbl:
                _add_bias_all(<double*>p[0], <const double*>p[1], ins.n[0], ins.n[1],
                              ins.f[0], par_min)
            else:
                _add_bias_all(<float*>p[0], <const float*>p[1], ins.n[0], ins.n[1],
                              ins.f[0], par_min)
        elif ins.op == OP_XENT:
            if ins.dbl:
                loss = _xent_both(<const double*>p[0], labels, ins.s[0], <double*>p[1],
                                  ins.n[0], ins.n[1], xent_min)
            else:
                loss = _xent_both(<const float*>p[0], labels, ins.s[0], <float*>p[1],
                                  ins.n[0], ins.n[1], xent_min)
        elif ins.op == OP_SGD:
            # n: (elements, g's row length, g's row stride); 0: g contiguous
            cols = ins.n[1] if ins.n[1] else ins.n[0]
            ldg = ins.n[2] if ins.n[2] else cols
            if ins.dbl:
                _sgd_all(<double*>p[0], <const double*>p[1], <double*>p[2], ins.n[0], cols,
                         ldg, lr, ins.s[1], ins.s[2], ins.f[0], ins.f[3], par_min)
            else:
                _sgd_all(<float*>p[0], <const float*>p[1], <float*>p[2], ins.n[0], cols, ldg,
                         lr, ins.s[1], ins.s[2], ins.f[0], ins.f[3], par_min)
            ins.f[3] = 0
        elif ins.op == OP_ADAM:
            bc1 = 1.0 - pow(ins.s[1], t)
            bc2 = sqrt(1.0 - pow(ins.s[2], t))
            cols = ins.n[1] if ins.n[1] else ins.n[0]
            ldg = ins.n[2] if ins.n[2] else cols
            if ins.dbl:
                _adam_all(<double*>p[0], <const double*>p[1], <double*>p[2], <double*>p[3],
                          ins.n[0], cols, ldg, lr, ins.s[1], ins.s[2], ins.s[3], ins.s[4], bc1,
                          bc2, par_min)
            else:
                _adam_all(<float*>p[0], <const float*>p[1], <float*>p[2], <float*>p[3],
                          ins.n[0], cols, ldg, lr, ins.s[1], ins.s[2], ins.s[3], ins.s[4], bc1,
                          bc2, par_min)
    return loss


cdef class Plan:
    """A list of kernel calls over fixed arrays, run as one call with the GIL released: a
    training step compiled by ``graphgrad.compiled``, which builds the instructions, checks
    every shape and keeps every array alive (``keep``). Each instruction is a tuple
    ``(op, float64, flags[4], fn, addresses[4], sizes[6], scalars[6][, aux[4]])`` (see
    ``PLAN_OPS``); an
    address of -1 stands for the batch input given to :meth:`run`. ``serial``: the kernels
    stay on the calling thread whatever ``PAR_MIN`` says (the products' BLAS keeps its
    threads)."""

    cdef Instr* code
    cdef int count
    cdef readonly object keep
    cdef readonly Py_ssize_t x_bytes, n_labels
    cdef readonly long long n_classes
    cdef readonly bint serial

    def __cinit__(self, list instrs, list keep, Py_ssize_t x_bytes, Py_ssize_t n_labels,
                  long long n_classes, bint serial=False):
        cdef int k, j
        cdef Instr* ins
        self.count = len(instrs)
        self.code = <Instr*>calloc(self.count if self.count else 1, sizeof(Instr))
        if self.code == NULL:
            raise MemoryError()
        self.keep, self.x_bytes, self.n_labels = keep, x_bytes, n_labels
        self.n_classes = n_classes
        self.serial = serial
        for k, item in enumerate(instrs):
            op, dbl, flags, fn, ptrs, sizes, scalars = item[:7]
            aux = item[7] if len(item) > 7 else (0, 0, 0, 0)
            ins = &self.code[k]
            ins.op = PLAN_OPS[op]
            why = _conv_error(flags[2], dbl) if ins.op == OP_GEMM else None
            if why is not None:
                raise ValueError(f"Plan: instruction {k}: GEMM {why}")
            ins.dbl = dbl
            ins.fn = fn
            for j in range(4):
                ins.aux[j] = aux[j]
            for j in range(4):
                ins.f[j] = flags[j]
                if ptrs[j] == -1:
                    ins.xmask |= 1 << j
                else:
                    ins.p[j] = <char*><size_t>ptrs[j]
            for j in range(6):
                ins.n[j] = sizes[j]
                ins.s[j] = scalars[j]

    def __dealloc__(self):
        free(self.code)

    def __len__(self):
        return self.count

    def run(self, x, labels, double lr, double t, int start=0, int stop=-1):
        """Run instructions ``start`` to ``stop`` (-1: the last) once, in order: ``x`` is the
        batch input (C-contiguous, ``x_bytes`` long), ``labels`` its int64 labels
        (``n_labels``; the first outside [0, ``n_classes``) raises IndexError before
        anything runs), ``lr`` the learning rate, ``t`` Adam's step count; returns the loss
        (float64) of the plan's cross-entropy instruction if it ran, else NaN."""
        return self._run(x, labels, lr, t, start, stop)

    cdef double _run(self, x, labels, double lr, double t, int start, int stop) except? -1:
        cdef Py_buffer bx, bl
        cdef double loss
        cdef Py_ssize_t bad
        cdef Py_ssize_t par_min = PAR_MIN, xent_min = XENT_PAR_MIN
        if self.serial:
            par_min = xent_min = PY_SSIZE_T_MAX
        if stop < 0 or stop > self.count:
            stop = self.count
        if start < 0 or start > stop:
            raise ValueError(f"Plan.run: bad range {start}..{stop} of {self.count}")
        PyObject_GetBuffer(x, &bx, PyBUF_C_CONTIGUOUS)
        try:
            PyObject_GetBuffer(labels, &bl, PyBUF_C_CONTIGUOUS)
            try:
                if bx.len != self.x_bytes or bl.len != self.n_labels * 8:
                    raise ValueError(
                        f"Plan.run: the plan takes {self.x_bytes} bytes of input and "
                        f"{self.n_labels} labels, got {bx.len} bytes and {bl.len // 8}"
                    )
                with nogil:
                    bad = _first_bad(<const long long*>bl.buf, self.n_labels, self.n_classes)
                if bad >= 0:
                    raise IndexError(
                        f"Plan.run: label {(<const long long*>bl.buf)[bad]} at index {bad} is "
                        f"outside [0, {self.n_classes})"
                    )
                with nogil:
                    loss = _run_plan(self.code + start, stop - start, <char*>bx.buf,
                                     <const long long*>bl.buf, lr, t, par_min, xent_min)
            finally:
                PyBuffer_Release(&bl)
        finally:
            PyBuffer_Release(&bx)
        return loss


cdef class Guard:
    """What a compiled step's checks read before its plan last ran, kept to see, in a few
    identity comparisons, that nothing has changed since: then the same plan runs again
    (:meth:`run`) without them. ``graphgrad.compiled`` arms it after a checked call that ran
    the plan, listing what those checks read; any difference, and any batch that is not
    exactly like the last one, returns None before anything runs, and the checked path
    decides (it disarms and re-arms). Entries:

    - ``attrs``: triples (object, name, expected): ``getattr(object, name) is expected``
      (a flag that must be on: expected ``True``);
    - ``items``: triples (dict or list, key, expected): ``container[key] is expected``
      (``MISSING`` for a key a dict must not have);
    - ``orders``: pairs (dict or list, tuple): the dict's values, or the list's items, in
      order, are the tuple's items;
    - ``ctx``: pairs (ContextVar, expected): ``var.get() is expected``;
    - the batch: ``type(x)`` and ``type(labels)`` are ``array_type`` (or ``tensor_type``,
      whose ``.data`` is taken), ``x.dtype`` is ``x_dtype``, ``x.shape == x_shape``,
      ``labels.dtype`` is ``label_dtype``, ``labels.shape == (S,)`` (contiguity:
      :meth:`Plan.run` refuses what is not); labels of another integer dtype than int64 go
      through ``to_int64`` first, as on the checked path.

    :meth:`run` then runs the plan as the checked path does: forward and loss, and unless
    ``skip_nonfinite`` finds the loss NaN or infinite, backward and update at
    ``getattr(optimizer, "lr")``; each ``grads`` pair (Tensor, array) sets ``.grad``. With
    Adam, ``adam`` lists the parameters' state dicts: their ``"step"`` counts must be equal
    (else None), the plan runs at t = step + 1 and they advance by one after the update.

    A guard armed for a reduced (data-parallel) step's plan (``into``: its weight and the
    ``write`` and ``read`` dicts, whose entries ``items`` lists) answers only
    :meth:`run_reduced`, and a plain one only :meth:`run`."""

    cdef list attrs, items, orders, ctx, grads, adam
    cdef object array_type, tensor_type, x_dtype, x_shape, label_dtype, label_shape
    cdef object optimizer, to_int64, write, read
    cdef Plan plan
    cdef int n_forward
    cdef double weight
    cdef bint reduced
    cdef bint dbl
    cdef readonly long hits

    def __init__(self, Plan plan, int n_forward, bint dbl, optimizer, list grads, list adam,
                 list attrs, list items, list orders, list ctx, array_type, tensor_type,
                 x_dtype, tuple x_shape, label_dtype, to_int64, tuple into=None):
        """``n_forward``: the instructions before the test of the loss (a reduced step's:
        before the reduction); ``into``: a reduced step's ``(weight, write, read)``."""
        self.plan, self.n_forward, self.dbl, self.optimizer = plan, n_forward, dbl, optimizer
        self.reduced = into is not None
        if into is not None:
            self.weight, self.write, self.read = into
        self.grads, self.adam = grads, adam
        self.attrs, self.items, self.orders = attrs, items, orders
        self.ctx = ctx
        self.array_type, self.tensor_type = array_type, tensor_type
        self.x_dtype, self.x_shape = x_dtype, x_shape
        self.label_dtype, self.label_shape = label_dtype, (x_shape[0],)
        self.to_int64 = to_int64
        self.hits = 0

    cdef bint _same(self, x, labels) except -1:
        cdef Py_ssize_t k, n
        cdef list a
        if type(x) is not self.array_type or type(labels) is not self.array_type:
            return False
        if x.dtype is not self.x_dtype or labels.dtype is not self.label_dtype:
            return False
        if x.shape != self.x_shape or labels.shape != self.label_shape:
            return False
        a = self.ctx
        n = len(a)
        for k in range(0, n, 2):
            if a[k].get() is not a[k + 1]:
                return False
        a = self.attrs
        n = len(a)
        for k in range(0, n, 3):
            if getattr(a[k], a[k + 1]) is not a[k + 2]:
                return False
        a = self.orders
        n = len(a)
        for k in range(0, n, 2):
            if not _same_values(a[k], a[k + 1]):
                return False
        a = self.items
        n = len(a)
        for k in range(0, n, 3):
            if _item(a[k], a[k + 1]) is not a[k + 2]:
                return False
        return True

    def run(self, x, labels, bint skip_nonfinite):
        """The step's loss (a float), or None when anything differs from the snapshot (nothing
        ran: the checked path decides)."""
        if self.reduced:
            return None
        return self._go(x, labels, skip_nonfinite, None)

    def run_reduced(self, x, labels, double weight, write, read, between):
        """A reduced step (``CompiledStep.reduced_step``'s arguments): its loss, or None
        when anything differs (nothing ran). ``between(loss)`` runs after the backward pass
        and says whether the update runs (at the learning rate as it is then)."""
        if not self.reduced or weight != self.weight:
            return None
        if write is not self.write or read is not self.read:
            return None
        return self._go(x, labels, False, between)

    cdef object _go(self, x, labels, bint skip_nonfinite, between):
        cdef double value, loss, t = 0.0
        cdef Py_ssize_t k, n
        cdef list g
        cdef object step = None
        if type(x) is self.tensor_type:
            x = getattr(x, "data")
        if type(labels) is self.tensor_type:
            labels = getattr(labels, "data")
        if not self._same(x, labels):
            return None
        if self.adam:
            step = self.adam[0]["step"]
            if type(step) is not int:
                return None
            for st in self.adam:
                if st["step"] != step:
                    return None
            t = <double>(step + 1)
        if self.to_int64 is not None:
            labels = self.to_int64(labels)
        lr = getattr(self.optimizer, "lr")
        try:
            value = self.plan._run(x, labels, lr, t, 0, self.n_forward)
        except (IndexError, ValueError, BufferError):  # a label out of range, a strided batch
            return None
        loss = value if self.dbl else <double><float>value
        if between is not None:
            if not between(loss):
                return loss
            lr = getattr(self.optimizer, "lr")  # (the reduction's callback may set it)
        elif skip_nonfinite and not (loss - loss == 0):  # NaN or infinite: no update
            return loss
        self.plan._run(x, labels, lr, t, self.n_forward, -1)
        g = self.grads
        n = len(g)
        for k in range(0, n, 2):
            setattr(g[k], "grad", g[k + 1])
        if self.adam:
            for st in self.adam:
                st["step"] = step + 1
        self.hits += 1
        return loss


#: What a dict entry of a :class:`Guard` expects where the dict must not have the key.
MISSING = object()


cdef bint _same_values(container, tuple t) except -1:
    """Whether ``container``'s values (a dict's, in order) or items (a list's) are ``t``'s
    items (the same objects)."""
    cdef Py_ssize_t pos = 0, k = 0
    cdef PyObject* key
    cdef PyObject* value
    if len(container) != len(t):
        return False
    if type(container) is dict:
        while PyDict_Next(container, &pos, &key, &value):
            if value != PyTuple_GET_ITEM(t, k):
                return False
            k += 1
        return True
    for k in range(len(t)):
        if container[k] is not <object>PyTuple_GET_ITEM(t, k):
            return False
    return True


cdef object _item(container, key):
    if type(container) is dict:
        return (<dict>container).get(key, MISSING)
    return container[key]


cdef Py_ssize_t _first_bad(const long long* labels, Py_ssize_t n, long long T) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if labels[i] < 0 or labels[i] >= T:
            return i
    return -1


def first_bad_label(const long long[::1] labels, long long T):
    """The index of the first label outside [0, T), or -1 if there is none."""
    cdef Py_ssize_t bad, n = labels.shape[0]
    if n == 0:
        return -1
    with nogil:
        bad = _first_bad(&labels[0], n, T)
    return bad
