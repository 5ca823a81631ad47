# Convenience targets; the scripts are the source of truth.
#   make bench        the whole benchmark suite (issue 5), peers at 1 thread: rewrites
#                     bench/RESULTS.md and bench/results.json (a few minutes); then the MLP
#                     step with every peer in its own process at 1 and 2 threads: bench/STEP.md
#   make bench-scaling  step time vs batch, width, depth (graphgrad vs PyTorch):
#                     bench/SCALING.md and bench/scaling.png
#   make bench-quick  the suite in quick mode (CI: proves it runs), written to $(QUICK_OUT)
#   make profile      where an MLP step's time goes, graphgrad vs PyTorch: bench/PROFILE.md
#   make test / main  scripts/test.sh / scripts/main.sh
PY ?= .venv/bin/python
THREADS ?= 1
QUICK_OUT ?= $(or $(TMPDIR),/tmp)/graphgrad-bench-quick

STEP_THREADS ?= 1,2

.PHONY: bench bench-quick bench-jax bench-scaling profile test main

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

profile:
	$(PY) bench/profile_step.py --threads $(THREADS) --speedup 1,2 --md bench/PROFILE.md

test:
	bash scripts/test.sh

main:
	bash scripts/main.sh
