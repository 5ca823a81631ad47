# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Fused elementwise kernels: one pass over memory where NumPy needs several.

Each kernel does, element by element and in the same order of operations, exactly what its
NumPy twin in ``graphgrad/_fused.py`` does with whole-array calls, so both give the same
numbers (bit for bit in float32 and float64, except that the optimiser kernels flush
subnormal numbers, below 1.2e-38 in float32, to zero, as ``torch.set_flush_denormal`` does); the twin is the reference the tests compare
with and the path taken when this module is not built. Arrays arrive flattened, C-contiguous
and of one dtype (``_fused.py`` checks that before calling); inputs may be read-only
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
from libc.math cimport exp, expf, log, sqrt
from libc.stdlib cimport free, malloc

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
                                          T *restrict v, Py_ssize_t n, T l, T m) {          \
        for (Py_ssize_t i = 0; i < n; i++) {                                                \
            T vi = m * v[i] + g[i];                                                         \
            v[i] = vi;                                                                      \
            w[i] = w[i] - l * vi;                                                           \
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
    }
    #ifdef _OPENMP
    #define GG_OPENMP 1
    #else
    #define GG_OPENMP 0
    #endif
    #define SQRT_f sqrtf
    #define SQRT_d sqrt
    #define GG_ISA_LOOPS(V, ATTR) GG_LOOPS(float, f, V, ATTR) GG_LOOPS(double, d, V, ATTR)
    GG_ISA_LOOPS(base, )
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define GG_MULTI_ISA 1
    GG_ISA_LOOPS(avx2, __attribute__((target("avx2"))))
    GG_ISA_LOOPS(avx512, __attribute__((target("avx512f"))))
    #else
    #define GG_MULTI_ISA 0
    #endif

    /* One table of loops per instruction set; the kernels call through gg_isa. */
    #define GG_FIELDS(T, S)                                                                 \
        void (*sgd_mom_##S)(T *, const T *, T *, Py_ssize_t, T, T);                         \
        void (*sgd_plain_##S)(T *, const T *, Py_ssize_t, T);                               \
        void (*adam_##S)(T *, const T *, T *, T *, Py_ssize_t, T, T, T, T, T, T, T);        \
        void (*relu_grad_##S)(const T *, const T *, T *, Py_ssize_t);                       \
        void (*relu_##S)(const T *, T *, Py_ssize_t);                                       \
        void (*add_bias_##S)(T *, const T *, Py_ssize_t, Py_ssize_t, int);
    typedef struct { const char *name; GG_FIELDS(float, f) GG_FIELDS(double, d) } gg_isa_t;
    #define GG_ROW(S, V) gg_sgd_mom_##S##_##V, gg_sgd_plain_##S##_##V, gg_adam_##S##_##V,   \
                         gg_relu_grad_##S##_##V, gg_relu_##S##_##V, gg_add_bias_##S##_##V
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
    static void gg_sgd_mom_##S(T *w, const T *g, T *v, Py_ssize_t n, T l, T m) {            \
        gg_isa->sgd_mom_##S(w, g, v, n, l, m);                                              \
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
    }
    GG_CALLS(float, f)
    GG_CALLS(double, d)
    """
    unsigned int gg_ftz_on() noexcept nogil
    void gg_ftz_restore(unsigned int old) noexcept nogil
    void gg_sgd_mom_f(float* w, const float* g, float* v, Py_ssize_t n, float l, float m) noexcept nogil
    void gg_sgd_mom_d(double* w, const double* g, double* v, Py_ssize_t n, double l, double m) noexcept nogil
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
    int GG_OPENMP
    int gg_isa_count
    int gg_isa_runs(int k) noexcept nogil
    void gg_set_isa(int k) noexcept nogil
    const char* gg_isa_name(int k) noexcept nogil
    void gg_set_auto(int mem, int compute) noexcept nogil

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
    return {"adam": widest, "sgd": mem, "relu": mem, "relu_grad": mem, "add_bias": mem}


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
        if real is float:
            gg_sgd_mom_f(wp, gp, vp, n, l, m)
        else:
            gg_sgd_mom_d(wp, gp, vp, n, l, m)
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


def sgd(real[::1] w, const real[::1] g, real[::1] v, double lr, double mu, double wd,
        bint nesterov, bint first):
    """SGD with momentum, in place: g' = g + wd w; v = g' (first step) or mu v + g';
    w -= lr (g' + mu v if nesterov else v). ``v`` is ignored when mu == 0."""
    cdef Py_ssize_t c, lo, hi, n = w.shape[0]
    cdef real l = <real>lr, m = <real>mu, d = <real>wd
    cdef bint has_mu = mu != 0, has_wd = wd != 0
    cdef real* wp = &w[0] if n else NULL
    cdef const real* gp = &g[0] if n else NULL
    cdef real* vp = &v[0] if n else NULL
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, PAR_MIN, &nc)
    if nc == 1:
        with nogil:
            _sgd_chunk(wp, gp, vp, n, l, m, d, has_mu, has_wd, nesterov, first)
        return
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _sgd_chunk(wp + lo, gp + lo, vp + lo, hi - lo, l, m, d, has_mu, has_wd, nesterov, first)


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


def adam(real[::1] w, const real[::1] g, real[::1] m, real[::1] v, double lr, double b1,
         double b2, double eps, double wd, double bc1, double bc2_sqrt):
    """Adam, in place: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
    w -= (m / (sqrt(v) / sqrt(1-b2^t) + eps)) * (lr / (1-b1^t))."""
    cdef Py_ssize_t c, lo, hi, n = w.shape[0]
    cdef real c1 = <real>b1, c1m = <real>(1.0 - b1), c2 = <real>b2, c2m = <real>(1.0 - b2)
    cdef real e = <real>eps, d = <real>wd, s = <real>bc2_sqrt, k = <real>(lr / bc1)
    cdef bint has_wd = wd != 0
    cdef real* wp = &w[0] if n else NULL
    cdef const real* gp = &g[0] if n else NULL
    cdef real* mp = &m[0] if n else NULL
    cdef real* vp = &v[0] if n else NULL
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, PAR_MIN, &nc)
    if nc == 1:
        with nogil:
            _adam_chunk(wp, gp, mp, vp, n, c1, c1m, c2, c2m, e, s, k, d, has_wd)
        return
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _adam_chunk(wp + lo, gp + lo, mp + lo, vp + lo, hi - lo, c1, c1m, c2, c2m, e, s, k,
                    d, has_wd)


cdef inline void _relu_grad_chunk(const real* gp, const real* xp, real* op,
                                  Py_ssize_t n) noexcept nogil:
    # Both loads happen unconditionally, so the compiler turns the loop into vector compares
    # and blends, with no branches.
    if real is float:
        gg_relu_grad_f(gp, xp, op, n)
    else:
        gg_relu_grad_d(gp, xp, op, n)


def relu_grad(const real[::1] g, const real[::1] x, real[::1] out):
    """out = g * (x > 0): g where x > 0, else 0 (ReLU's subgradient at 0 is 0)."""
    cdef Py_ssize_t c, lo, hi, n = g.shape[0]
    cdef const real* gp = &g[0] if n else NULL
    cdef const real* xp = &x[0] if n else NULL
    cdef real* op = &out[0] if n else NULL
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, PAR_MIN, &nc)
    if nc == 1:
        with nogil:
            _relu_grad_chunk(gp, xp, op, n)
        return
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _relu_grad_chunk(gp + lo, xp + lo, op + lo, hi - lo)


cdef inline void _relu_chunk(const real* xp, real* op, Py_ssize_t n) noexcept nogil:
    if real is float:
        gg_relu_f(xp, op, n)
    else:
        gg_relu_d(xp, op, n)


def relu(const real[::1] x, real[::1] out):
    """out = max(x, 0), as ``np.maximum(x, 0)``: NaN stays NaN, -0.0 becomes +0.0."""
    cdef Py_ssize_t c, lo, hi, n = x.shape[0]
    cdef const real* xp = &x[0] if n else NULL
    cdef real* op = &out[0] if n else NULL
    cdef int nc
    cdef Py_ssize_t step = _chunk(n, PAR_MIN, &nc)
    if nc == 1:
        with nogil:
            _relu_chunk(xp, op, n)
        return
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(n, lo + step)
        _relu_chunk(xp + lo, op + lo, hi - lo)


cdef inline void _add_bias_rows(real* yp, const real* bp, Py_ssize_t r, Py_ssize_t n,
                                bint down) noexcept nogil:
    if real is float:
        gg_add_bias_f(yp, bp, r, n, down)
    else:
        gg_add_bias_d(yp, bp, r, n, down)


def add_bias(real[:, ::1] y, const real[::1] b, bint down):
    """y += b in place: ``b`` (length y.shape[1]) added to every row of ``y``, or, with
    ``down``, ``b`` (length y.shape[0]) to every column (``y`` is then the transpose of a
    column-major array). Rows split between threads above ``PAR_MIN`` elements."""
    cdef Py_ssize_t c, lo, hi, step, r = y.shape[0], n = y.shape[1]
    if r == 0 or n == 0:
        return
    cdef real* yp = &y[0, 0]
    cdef const real* bp = &b[0]
    cdef int nc
    _chunk(r * n, PAR_MIN, &nc)  # only how many threads: the split below is by rows
    if nc == 1 or r < nc:
        with nogil:
            _add_bias_rows(yp, bp, r, n, down)
        return
    step = (r + nc - 1) // nc
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(r, lo + step)
        if hi > lo:
            _add_bias_rows(yp + lo * n, (bp + lo) if down else bp, hi - lo, n, down)


cdef inline double _exp(real v) noexcept nogil:
    if real is float:
        return expf(v)  # single precision is enough for float32 logits, and faster
    else:
        return exp(v)


cdef inline double _xent_row(const real* xs, long long y, Py_ssize_t T) noexcept nogil:
    """-log softmax(x_s)[y] for one row: m = max x_s; x_s[y] - m - log sum_j exp(x_sj - m)."""
    cdef Py_ssize_t j
    cdef real m = xs[0]
    cdef double z = 0
    for j in range(1, T):
        if xs[j] > m:
            m = xs[j]
    for j in range(T):
        z += _exp(xs[j] - m)
    return <double>(xs[y] - m) - log(z)


#: softmax cross-entropy splits its rows between threads from this many logits on (exp is
#: dearer than the optimiser's multiply-adds, so from fewer elements).
XENT_PAR_MIN = 16384


def xent_forward(const real[:, ::1] x, const long long[::1] labels):
    """-(1/S) sum_s log softmax(x_s)[labels_s] for logits x (S, T), summed in double, row 0
    first (whatever the thread count: the rows' terms are computed in parallel, then added
    in order)."""
    cdef Py_ssize_t s, c, lo, hi, S = x.shape[0], T = x.shape[1]
    cdef double total = 0
    cdef double* rows
    cdef int nc
    cdef Py_ssize_t step = _chunk(S, 2, &nc) if S * T >= XENT_PAR_MIN else S
    if S * T < XENT_PAR_MIN:
        nc = 1
    if S == 0:
        return float("nan")
    if nc == 1:
        with nogil:
            for s in range(S):
                total += _xent_row(&x[s, 0], labels[s], T)
        return -total / S
    rows = <double*>malloc(S * sizeof(double))
    if rows == NULL:
        raise MemoryError()
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(S, lo + step)
        for s in range(lo, hi):
            rows[s] = _xent_row(&x[s, 0], labels[s], T)
    with nogil:
        for s in range(S):
            total += rows[s]
    free(rows)
    return -total / S


cdef inline void _xent_grad_rows(const real[:, ::1] x, const long long[::1] labels,
                                 double scale, real[:, ::1] out, Py_ssize_t lo,
                                 Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t s, j, T = x.shape[1]
    cdef double z
    cdef real m
    for s in range(lo, hi):
        m = x[s, 0]
        for j in range(1, T):
            if x[s, j] > m:
                m = x[s, j]
        z = 0
        for j in range(T):
            out[s, j] = <real>_exp(x[s, j] - m)
            z += out[s, j]
        z = scale / z
        for j in range(T):
            out[s, j] = <real>(out[s, j] * z)
        out[s, labels[s]] = <real>(out[s, labels[s]] - scale)


def xent_backward(const real[:, ::1] x, const long long[::1] labels, double scale,
                  real[:, ::1] out):
    """out = (softmax(x) - onehot(labels)) * scale, row by row (x, out: (S, T))."""
    cdef Py_ssize_t c, lo, hi, S = x.shape[0], T = x.shape[1]
    cdef int nc
    cdef Py_ssize_t step = _chunk(S, 2, &nc) if S * T >= XENT_PAR_MIN else S
    if S * T < XENT_PAR_MIN:
        nc = 1
    if nc == 1:
        with nogil:
            _xent_grad_rows(x, labels, scale, out, 0, S)
        return
    for c in prange(nc, nogil=True, num_threads=nc, schedule="static"):
        lo = c * step
        hi = min(S, lo + step)
        _xent_grad_rows(x, labels, scale, out, lo, hi)


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


def gemm(size_t fn, const real[:, ::1] a, bint ta, const real[:, ::1] b, bint tb,
         real[:, ::1] out, double beta=0.0, bint ilp64=False):
    """out = op(a) @ op(b) + beta * out (op: transpose when ta/tb; beta = 0: out is not read)
    by the CBLAS ``cblas_?gemm`` (row-major; LP64, or ILP64 when ``ilp64``) at address ``fn``:
    ``graphgrad/_blas.py`` finds it and checks the shapes."""
    cdef long long M = out.shape[0], N = out.shape[1]
    cdef long long K = a.shape[0] if ta else a.shape[1]
    cdef long long lda = a.shape[1], ldb = b.shape[1]
    cdef int opa = 112 if ta else 111, opb = 112 if tb else 111  # CblasTrans, CblasNoTrans
    with nogil:
        if ilp64:
            if real is float:
                (<sgemm64_fn>fn)(101, opa, opb, M, N, K, 1.0, &a[0, 0], lda, &b[0, 0], ldb,
                                 <float>beta, &out[0, 0], N)
            else:
                (<dgemm64_fn>fn)(101, opa, opb, M, N, K, 1.0, &a[0, 0], lda, &b[0, 0], ldb,
                                 beta, &out[0, 0], N)
        elif real is float:
            (<sgemm_fn>fn)(101, opa, opb, <int>M, <int>N, <int>K, 1.0, &a[0, 0], <int>lda,
                           &b[0, 0], <int>ldb, <float>beta, &out[0, 0], <int>N)
        else:
            (<dgemm_fn>fn)(101, opa, opb, <int>M, <int>N, <int>K, 1.0, &a[0, 0], <int>lda,
                           &b[0, 0], <int>ldb, beta, &out[0, 0], <int>N)


def first_bad_label(const long long[::1] labels, long long T):
    """The index of the first label outside [0, T), or -1 if there is none."""
    cdef Py_ssize_t i, bad = -1, n = labels.shape[0]
    with nogil:
        for i in range(n):
            if labels[i] < 0 or labels[i] >= T:
                bad = i
                break
    return bad
