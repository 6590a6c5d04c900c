#!/usr/bin/env bash
# Rebuild the drafters shipped in src/taskspec/drafters/shipped/ (docs/history.md records a run of this script).
# Every step resumes after a kill: rerun the same command. Logs go to runs/features/*.log and runs/drafters/*.log.
#   bash benchmarks/build_shipped_drafters.sh
# Two jobs run side by side with one thread each (two cores; more threads per job oversubscribe them).
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/taskspec
STEPS_EAGLE="${STEPS_EAGLE:-400}"
STEPS_HASS="${STEPS_HASS:-400}"
STEPS_EAGLE_FT="${STEPS_EAGLE_FT:-300}"
STEPS_HASS_FT="${STEPS_HASS_FT:-300}"
mkdir -p runs/features runs/drafters
export OMP_NUM_THREADS=1

# 1. feature caches: chat and math responses from the datasets, and the target's own answers to GSM8K train prompts
( $T features --data sharegpt --limit 600 --max-tokens 512 --out runs/features/sharegpt-600 \
      > runs/features/sharegpt-600.log 2>&1
  $T features --data mathinstruct --limit 600 --max-tokens 512 --out runs/features/math-600 \
      > runs/features/math-600.log 2>&1 ) &
( $T features --data gsm8k:train --limit 150 --source target --max-new-tokens 192 --max-tokens 512 \
      --out runs/features/gsm8k-self-150 > runs/features/gsm8k-self-150.log 2>&1 ) &
wait

# 2. one EAGLE-2 and one HASS drafter on the same mix. A 16k draft vocabulary: it holds 98.3% of the target's greedy
#    tokens on ShareGPT (32k: 98.5%) at half the head cost, which dominates drafting and training (docs/history.md)
FEATS=runs/features/sharegpt-600,runs/features/math-600,runs/features/gsm8k-self-150
$T train --kind eagle2 --features "$FEATS" --mix 2,2,1 --draft-vocab-size 16384 --steps "$STEPS_EAGLE" --save-every 50 --out runs/drafters/eagle2-embedded \
    > runs/drafters/eagle2-embedded.log 2>&1 &
$T train --kind hass --features "$FEATS" --mix 2,2,1 --draft-vocab-size 16384 --steps "$STEPS_HASS" --save-every 50 --out runs/drafters/hass-embedded \
    > runs/drafters/hass-embedded.log 2>&1 &
wait

# 3. the target's own answers to chat and math prompts (self-distillation: docs/history.md measured it against
#    dataset responses), then both drafters fine-tuned from step 2 on all five caches, weighted to the target's own
#    outputs
( $T features --data sharegpt --limit 200 --source target --max-new-tokens 128 --max-tokens 384 \
      --out runs/features/sharegpt-self-200 > runs/features/sharegpt-self-200.log 2>&1 ) &
( $T features --data mathinstruct --limit 200 --source target --max-new-tokens 128 --max-tokens 384 \
      --out runs/features/math-self-200 > runs/features/math-self-200.log 2>&1 ) &
wait
FEATS2=$FEATS,runs/features/sharegpt-self-200,runs/features/math-self-200
for kind in eagle2 hass; do
    steps=$([ $kind = hass ] && echo "$STEPS_HASS_FT" || echo "$STEPS_EAGLE_FT")
    $T train --kind $kind --init runs/drafters/$kind-embedded --features "$FEATS2" --mix 1,1,2,2,2 \
        --draft-vocab-size 16384 --steps "$steps" --lr 3e-4 --warmup-steps 20 --save-every 50 \
        --out runs/drafters/$kind-embedded-ft > runs/drafters/$kind-embedded-ft.log 2>&1 &
done
wait

# 4. ship them: the checkpoint without the optimizer state (train_state.pt), swapped in atomically
for kind in eagle2 hass; do
    dest=src/taskspec/drafters/shipped/$kind-embedded
    tmp=$(mktemp -d "src/taskspec/drafters/shipped/.$kind.XXXX")
    cp runs/drafters/$kind-embedded-ft/{config.json,model.safetensors,train_log.jsonl} "$tmp"/
    rm -rf "$dest" && mv "$tmp" "$dest"
done
du -sh src/taskspec/drafters/shipped
