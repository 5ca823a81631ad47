#!/usr/bin/env bash
# Set up, then run every check: ruff, mypy, the whole pytest suite, the examples and the
# benchmarks in quick mode (they prove they run; timings are never asserted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# setup.sh installs MKL on x86-64 Linux: there its tests must run, not skip.
if [ "$(uname -m)" = x86_64 ] && [ "$(uname -s)" = Linux ]; then export GRAPHGRAD_REQUIRE_MKL=1; fi
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
.venv/bin/python examples/hessian_vector_product.py >/dev/null
.venv/bin/python bench/bench_engine.py --quick >/dev/null
.venv/bin/python bench/bench_playground.py --quick >/dev/null
.venv/bin/python -m pytest "$@"
if [ $# -eq 0 ]; then
  # The pure-Python/NumPy twins of the compiled parts, as an install without a compiler runs them.
  GRAPHGRAD_PURE_PYTHON=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_scalar.py tests/test_scalar_core.py tests/test_units.py tests/test_paths.py \
    tests/test_fused.py tests/test_optim.py tests/test_engine.py tests/test_compiled.py
fi
