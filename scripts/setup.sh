#!/usr/bin/env bash
# One-time set-up, idempotent: system packages (where we are root), a virtualenv in .venv,
# graphgrad with its extras (Intel MKL and oneDNN on x86-64), and PyTorch 2.13.0 (CPU, from this
# machine's local wheel) as a test/benchmark reference only.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v dot >/dev/null \
      || [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist graphviz chromium >/dev/null 2>&1 \
      || echo "setup: apt-get could not install dataset-fashion-mnist/graphviz/chromium (continuing)" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
extras=test,train,bench,playground,distributed
# Intel MKL and oneDNN for gg.set_blas("mkl"/"onednn") (optional; x86-64 Linux only): tested,
# and measured by set_blas("auto").
if [ "$(uname -m)" = x86_64 ] && [ "$(uname -s)" = Linux ]; then extras=$extras,mkl,onednn; fi
.venv/bin/python -m pip install -q -e ".[$extras]" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c "import torch" 2>/dev/null \
  || .venv/bin/python -m pip install -q torch==2.13.0 2>&1 | { grep -v '^WARNING: Location' || true; }
.venv/bin/python -c "import torch" 2>/dev/null \
  || echo "setup: torch==2.13.0 not installed; PyTorch comparisons will be skipped" >&2
.venv/bin/python -c "import graphgrad, numpy; print('graphgrad', graphgrad.__version__, 'numpy', numpy.__version__)"
