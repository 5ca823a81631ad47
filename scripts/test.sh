#!/usr/bin/env bash
# Set up, then run every check: ruff, mypy, the whole pytest suite, the examples and the
# benchmarks in quick mode (they prove they run; timings are never asserted).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src
.venv/bin/mypy
.venv/bin/python examples/hessian_vector_product.py >/dev/null
.venv/bin/python bench/bench_engine.py --quick >/dev/null
.venv/bin/python -m pytest "$@"
