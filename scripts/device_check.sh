#!/usr/bin/env bash
# The checks that need a bigger machine than CI's, in one command: on a GPU machine with many
# CPU cores (one with Python, NumPy, Cython and a C compiler, and PyTorch, JAX and CuPy where
# their parts should run; nothing is downloaded). In order, most needed first:
#
#   1. graphgrad's compiled parts built in place (setup.py build_ext --inplace; src/ on
#      PYTHONPATH), and `python -m graphgrad info` (versions, BLAS, threads, kernels);
#   2. bench/bench_step_procs.py at 1, 4, 8 and 16 threads on the CPU (or the thread counts in
#      GG_THREADS): graphgrad eager and compiled against PyTorch eager and JAX jit (XLA on the
#      CPU: JAX_PLATFORMS=cpu), each peer in its own process, taking turns;
#   3. bench/profile_step.py --parts speedup at the same thread counts: the non-GEMM part of
#      the eager and the compiled step, and its speed-up from 1 thread to each count;
#   4. bench/gpu_check.py: the op table, training and the step on the GPU (CuPy) against NumPy
#      and PyTorch CUDA (it says in one line what is missing where it cannot run).
#
#   bash scripts/device_check.sh [--quick] [--no-build] [OUT]   (OUT: $OUT, else bench/device)
#
# The whole run keeps within GG_BUDGET seconds (default 480, so that one 600-second command
# holds it): each part gets a timeout from what is left (the step table about 45% of the
# budget, the speed-ups 15%, the GPU check the rest), and a part cut short says so in its
# log. Every part runs even if another fails; each writes its report into OUT (build.log,
# info.txt, step_threads.log, STEP_THREADS.md, step_threads.json, speedup.log, SPEEDUP.md,
# gpu_check.log, GPU.md, gpu.json). The exit status is 0 when every part ran, else 1.
# --quick: a tiny step, 2 rounds, 1 and 2 threads, the GPU check rehearsed on
# array-api-strict (proves the script runs on any machine; the tests run it so); --no-build:
# graphgrad as installed (PYTHON's), nothing built.
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
budget=${GG_BUDGET:-480}
status=0

# seconds for a part: PERCENT of the budget, at most what is left (less a 10 s margin), >= 30
allot() {
    local want=$((budget * $1 / 100)) left=$((budget - SECONDS - 10))
    [ "$want" -gt "$left" ] && want=$left
    [ "$want" -lt 30 ] && want=30
    echo "$want"
}
ran() {  # the exit status of a timed part: 124 means its timeout cut it short
    if [ "$1" -eq 124 ]; then
        echo "(cut short by its timeout: GG_BUDGET=$budget s)" | tee -a "$2"
    fi
    [ "$1" -eq 0 ] || status=1
}

if [ $build -eq 1 ]; then
    echo "== build (in place)"
    if ! timeout "$(allot 25)" "$py" setup.py -q build_ext --inplace >"$out/build.log" 2>&1; then
        echo "the build failed: see $out/build.log (graphgrad then runs its pure-Python code)"
        status=1
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
"$py" -m graphgrad info >"$out/info.txt" 2>&1 || status=1
cat "$out/info.txt"
nproc >>"$out/info.txt" 2>&1

echo "== the step at several thread counts (CPU)"
threads=${GG_THREADS:-1,4,8,16}
sizes=(--rounds 5)  # the issue's two shapes
shapes=()
if [ ${#quick[@]} -gt 0 ]; then
    threads=${GG_THREADS:-1,2}
    sizes=(--rounds 2 --shape 64,32,32,4:16)
    shapes=(--shape 64,32,32,4 --batch 16)
fi
JAX_PLATFORMS=cpu timeout "$(allot 45)" "$py" bench/bench_step_procs.py "${quick[@]}" \
    --threads "$threads" "${sizes[@]}" \
    --peers "graphgrad,graphgrad compiled,pytorch,jax jit" \
    --md "$out/STEP_THREADS.md" --json "$out/step_threads.json" 2>&1 | tee "$out/step_threads.log"
ran "${PIPESTATUS[0]}" "$out/step_threads.log"

echo "== the non-GEMM part's speed-up with threads (CPU)"
timeout "$(allot 15)" "$py" bench/profile_step.py "${quick[@]}" "${shapes[@]}" --parts speedup \
    --speedup "$threads" --md "$out/SPEEDUP.md" 2>&1 | tee "$out/speedup.log"
ran "${PIPESTATUS[0]}" "$out/speedup.log"

echo "== GPU check"
if [ ${#quick[@]} -gt 0 ]; then
    gpu_args=(--device array-api-strict --quick)
else
    gpu_args=()
fi
timeout "$(allot 100)" "$py" bench/gpu_check.py "${gpu_args[@]}" --out "$out" 2>&1 \
    | tee "$out/gpu_check.log"
ran "${PIPESTATUS[0]}" "$out/gpu_check.log"
echo "== done in $SECONDS s (budget $budget s)"
exit $status
