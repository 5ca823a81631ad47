# Convenience targets; the scripts are the source of truth.
#   make bench        the whole benchmark suite (issue 5), peers at 1 thread: rewrites
#                     bench/RESULTS.md and bench/results.json (a few minutes); then the MLP
#                     step with every peer in its own process at 1 and 2 threads: bench/STEP.md
#   make bench-scaling  step time vs batch, width, depth (graphgrad vs PyTorch):
#                     bench/SCALING.md and bench/scaling.png
#   make bench-quick  the suite in quick mode (CI: proves it runs), written to $(QUICK_OUT)
#   make profile      where an MLP step's time goes, graphgrad vs PyTorch: bench/PROFILE.md
#   make recalibrate  set_blas("auto")'s measurement again, at 1 and 2 threads (quiet machine)
#   make bench-pools  A/B of the thread-pool settings at 2 threads, each in its own process
#   make bench-wake   what a kernel's parallel region costs, per wait policy: bench/WAKE.md
#   make bench-eager  the eager step against its kernel calls without a graph and the
#                     compiled step (1 thread, pinned to CPU 0 where taskset exists)
#   make test / main  scripts/test.sh / scripts/main.sh
PY ?= .venv/bin/python
THREADS ?= 1
QUICK_OUT ?= $(or $(TMPDIR),/tmp)/graphgrad-bench-quick

STEP_THREADS ?= 1,2

.PHONY: bench bench-quick bench-jax bench-scaling bench-pools bench-wake bench-eager profile recalibrate test main

bench: bench-jax
	$(PY) bench/run_all.py --threads $(THREADS)
	$(PY) bench/bench_step_procs.py --threads $(STEP_THREADS) --md bench/STEP.md \
		--json bench/step_procs.json

bench-scaling:
	$(PY) bench/bench_scaling.py --threads $(THREADS) --md bench/SCALING.md \
		--png bench/scaling.png

bench-quick:
	$(PY) bench/run_all.py --quick --threads $(THREADS) --out $(QUICK_OUT)
	$(PY) bench/bench_step_procs.py --quick --threads 1 --md $(QUICK_OUT)/STEP.md

# JAX is an optional peer: installed for the full run when pip can get it, skipped otherwise.
bench-jax:
	@$(PY) -c "import jax" 2>/dev/null || $(PY) -m pip install -q jax \
		|| echo "bench: jax could not be installed; the JAX peer is skipped"

recalibrate:
	OMP_NUM_THREADS=1 $(PY) -m graphgrad info --recalibrate
	OMP_NUM_THREADS=2 $(PY) -m graphgrad info --recalibrate

# Each variant is graphgrad with extra environment variables, timed in the same rounds and
# reported over its parent (the variant without its last variable, else the plain peer): the
# products on OpenBLAS's own threads instead of graphgrad's pool (GRAPHGRAD_BLAS_POOL), and the
# kernels kept serial (GRAPHGRAD_PAR_MIN).
POOL_PEERS ?= graphgrad,graphgrad compiled,pytorch,jax jit,graphgrad[GRAPHGRAD_BLAS_POOL=openblas],graphgrad compiled[GRAPHGRAD_BLAS_POOL=openblas],graphgrad compiled[GRAPHGRAD_PAR_MIN=1000000000]
bench-pools:
	$(PY) bench/bench_step_procs.py --threads 2 --rounds 15 --peers '$(POOL_PEERS)' \
		--md bench/POOLS.md --json bench/pools.json

# The parallel-region cost under the default (libgomp sleeping) and with short spins.
bench-wake:
	$(PY) bench/bench_wake.py --md bench/WAKE.md
	GOMP_SPINCOUNT=1000 $(PY) bench/bench_wake.py
	GOMP_SPINCOUNT=30000 $(PY) bench/bench_wake.py
	GRAPHGRAD_BLAS=mkl $(PY) bench/bench_wake.py
	GRAPHGRAD_BLAS=mkl GOMP_SPINCOUNT=30000 $(PY) bench/bench_wake.py

bench-eager:
	$$(command -v taskset >/dev/null && echo taskset -c 0) $(PY) bench/bench_eager.py

profile: recalibrate
	$(PY) bench/profile_step.py --threads $(THREADS) --speedup 1,2 --md bench/PROFILE.md

test:
	bash scripts/test.sh

main:
	bash scripts/main.sh
