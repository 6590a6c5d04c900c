#!/usr/bin/env bash
# Dataset responses vs the target's own outputs (self-distillation) as drafter training data, on equal terms:
# the same 150 GSM8K train prompts, the same EAGLE-2 training budget, evaluated on GSM8K test prompts.
#   bash benchmarks/compare_feature_sources.sh          resumable; logs in runs/features and runs/drafters
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/taskspec
STEPS="${STEPS:-300}"
mkdir -p runs/features runs/drafters runs/bench
export OMP_NUM_THREADS=1
( $T features --data gsm8k:train --limit 150 --max-tokens 512 --out runs/features/gsm8k-data-150 \
      > runs/features/gsm8k-data-150.log 2>&1
  $T train --kind eagle2 --features runs/features/gsm8k-data-150 --draft-vocab-size 16384 --steps "$STEPS" \
      --out runs/drafters/cmp-dataset > runs/drafters/cmp-dataset.log 2>&1 ) &
( $T features --data gsm8k:train --limit 150 --source target --max-new-tokens 192 --max-tokens 512 \
      --out runs/features/gsm8k-self-150 > runs/features/gsm8k-self-150.log 2>&1
  $T train --kind eagle2 --features runs/features/gsm8k-self-150 --draft-vocab-size 16384 --steps "$STEPS" \
      --out runs/drafters/cmp-self > runs/drafters/cmp-self.log 2>&1 ) &
wait
unset OMP_NUM_THREADS
$T bench --dataset gsm8k --limit 20 --max-new-tokens 128 \
    --methods none,eagle2:runs/drafters/cmp-dataset,eagle2:runs/drafters/cmp-self --out runs/bench/sources.json
