#!/usr/bin/env bash
# Reproduce the shipped models in diffsolve/models/weights/ (see docs/models.md).
# Each run resumes from runs/NAME/state.pt if killed; --export writes the EMA weights as
# diffsolve/models/weights/NAME.{safetensors,json}. One thread per run (2 shared cores).
#
#   scripts/train_models.sh                 # small models, then MNIST (hours on 1 CPU core)
#   scripts/train_models.sh digits moons    # only these
set -euo pipefail
cd "$(dirname "$0")/.."
models=("$@")
[ ${#models[@]} -eq 0 ] && models=(digits moons rings checker mnist)
for m in "${models[@]}"; do
  case "$m" in
    mnist)
      # The shipped MNIST weights are the EMA after 4,392 steps (~1.9 h of one contended core).
      # Runs are deterministic and resume bit for bit, so this reproduces them; raise MNIST_STEPS
      # to train longer (the preset allows 200,000).
      python -m diffsolve.cli train --preset mnist --out runs/mnist --quiet --export \
        --steps "${MNIST_STEPS:-4392}" ;;
    *)
      python -m diffsolve.cli train --preset "$m" --out "runs/$m" --quiet --export ;;
  esac
done
