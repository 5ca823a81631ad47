#!/usr/bin/env bash
# The checks that need a bigger machine than CI's, in one command: on a GPU machine with many
# CPU cores (one with Python, NumPy, Cython and a C compiler, and PyTorch, JAX and CuPy where
# their parts should run; nothing is downloaded):
#
#   1. graphgrad's compiled parts built in place (setup.py build_ext --inplace; src/ on
#      PYTHONPATH), and `python -m graphgrad info` (versions, BLAS, threads, kernels);
#   2. bench/gpu_check.py: the op table, training and the step on the GPU (CuPy) against NumPy
#      and PyTorch CUDA (it says in one line what is missing where it cannot run);
#   3. bench/bench_step_procs.py at 1, 4, 8 and 16 threads on the CPU (or the thread counts in
#      GG_THREADS): graphgrad eager and compiled against PyTorch eager and JAX jit (XLA on the
#      CPU: JAX_PLATFORMS=cpu), each peer in its own process, taking turns.
#
#   bash scripts/device_check.sh [--quick] [--no-build] [OUT]   (OUT: $OUT, else bench/device)
#
# Every part runs even if another fails; each writes its report into OUT (gpu_check.log,
# GPU.md, gpu.json, step_threads.log, STEP_THREADS.md, step_threads.json, info.txt). The exit
# status is 0 when every part ran, else 1. --quick: a tiny step, 2 rounds, 1 and 2 threads,
# the GPU check rehearsed on array-api-strict (proves the script runs on any machine; the tests run
# it so); --no-build: graphgrad as installed (PYTHON's), nothing built.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=()
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=(--quick); shift ;;
        --no-build) build=0; shift ;;
        *) break ;;
    esac
done
out=${1:-${OUT:-bench/device}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

if [ $build -eq 1 ]; then
    echo "== build (in place)"
    if ! "$py" setup.py -q build_ext --inplace >"$out/build.log" 2>&1; then
        echo "the build failed: see $out/build.log (graphgrad then runs its pure-Python code)"
        status=1
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -m graphgrad info >"$out/info.txt" 2>&1 || status=1
cat "$out/info.txt"
nproc >>"$out/info.txt" 2>&1

echo "== GPU check"
if [ ${#quick[@]} -gt 0 ]; then
    gpu_args=(--device array-api-strict --quick)
else
    gpu_args=()
fi
timeout 420 "$py" bench/gpu_check.py "${gpu_args[@]}" --out "$out" 2>&1 | tee "$out/gpu_check.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== the step at several thread counts (CPU)"
threads=${GG_THREADS:-1,4,8,16}
sizes=(--rounds 7)  # the issue's two shapes
if [ ${#quick[@]} -gt 0 ]; then
    threads=${GG_THREADS:-1,2}
    sizes=(--rounds 2 --shape 64,32,32,4:16)
fi
JAX_PLATFORMS=cpu timeout 480 "$py" bench/bench_step_procs.py "${quick[@]}" \
    --threads "$threads" "${sizes[@]}" \
    --peers "graphgrad,graphgrad compiled,pytorch,jax jit" \
    --md "$out/STEP_THREADS.md" --json "$out/step_threads.json" 2>&1 | tee "$out/step_threads.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
