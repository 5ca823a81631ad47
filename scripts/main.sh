#!/usr/bin/env bash
# The main job: set up, run the lecture's worked example, then train the MLP 784-256-256-10 on
# real Fashion-MNIST and write checkpoint, metrics.json and plots into runs/fashion_mlp_adam.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${GRAPHGRAD_DATA:-}" ]; then
  .venv/bin/graphgrad download fashion-mnist
fi
.venv/bin/graphgrad demo --steps 100
.venv/bin/graphgrad graph "(a+b)*(b+1)" --at a=2,b=1 --explain
out=runs/fashion_mlp_adam
if [ -e "$out/config.toml" ]; then
  # a second run of this script: continue the run there (a finished one is evaluated again)
  echo "$out holds an earlier run: resuming it (delete $out to train from scratch)"
  .venv/bin/graphgrad train --out "$out" --resume "$@"
else
  .venv/bin/graphgrad train --config examples/configs/fashion_mlp_adam.toml --out "$out" "$@"
fi
echo "results: runs/fashion_mlp_adam (metrics.json, curves, confusion matrix, first-layer weights)"
