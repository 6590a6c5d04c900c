#!/usr/bin/env bash
# Build the drafter set of the TAPS table (docs/history.md, issue #4) for the embedded target, then benchmark it.
# Every step resumes after a kill: rerun the same command. Logs: runs/features/*.log, runs/sets/*.log, runs/bench/*.log.
#   bash benchmarks/build_taps_set.sh            # features + task map + drafter set (~80 min on 2 cores)
#   bash benchmarks/build_taps_set.sh bench      # then the TAPS table at T=0 and T=1 (20 prompts per benchmark)
#   SET=runs/sets/taps bash benchmarks/build_taps_set.sh from-pipeline
#       instead of the build: the set of `taskspec pipeline --config configs/embedded.toml` plus the two mixes
#       (its heads and adapters are reused, not retrained); then `SET=runs/sets/taps ... bench`.
#   TEMPS="0" limits the bench to one temperature.
# Two jobs run side by side with one thread each (two cores; more threads per job oversubscribe them).
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/taskspec
export OMP_NUM_THREADS=1
mkdir -p runs/features runs/sets runs/bench
SET="${SET:-runs/sets/embedded}"
FEATS=runs/features/sharegpt-self-200,runs/features/math-self-200,runs/features/gsm8k-self-100
LIMIT="${LIMIT:-20}"

if [ "${1:-build}" = build ]; then
    # 1. the target's own answers (self-distillation) to chat and math prompts
    ( $T features --data sharegpt --limit 200 --source target --max-new-tokens 128 --max-tokens 384 \
          --out runs/features/sharegpt-self-200 > runs/features/sharegpt-self-200.log 2>&1 ) &
    ( $T features --data mathinstruct --limit 200 --source target --max-new-tokens 128 --max-tokens 384 \
          --out runs/features/math-self-200 > runs/features/math-self-200.log 2>&1
      $T features --data gsm8k:train --limit 100 --source target --max-new-tokens 192 --max-tokens 512 \
          --out runs/features/gsm8k-self-100 > runs/features/gsm8k-self-100.log 2>&1 ) &
    wait
    # 2. the tasks of the training prompts: k chosen automatically (it picks 2: math and chat)
    [ -f runs/sets/train-auto.json ] || $T detect --prompts sharegpt,mathinstruct,gsm8k:train --limit 600 \
        --k-range 2,8 --label-field source --out runs/sets/train-auto.json > runs/sets/detect.log 2>&1
    # 3. specialists, mixes and routers, fine-tuned from the shipped generic EAGLE-2 drafter; two processes on
    #    disjoint stages, then one pass over every stage (finds the training done) to fit nothing twice and write
    #    the manifest
    BUILD="$T build --taskmap runs/sets/train-auto.json --task-names math,chat --features $FEATS --kind eagle2
           --steps 300 --drafter-options depth=4 --out $SET"
    $BUILD --stages heads,lora > runs/sets/build-a.log 2>&1 &
    $BUILD --stages mixed > runs/sets/build-b.log 2>&1 &
    wait
    $BUILD > runs/sets/build.log 2>&1
    du -sh $SET/*
fi

if [ "${1:-build}" = from-pipeline ]; then
    P=runs/pipeline/embedded
    [ -f $P/drafter-set/drafterset.json ] || { echo "run taskspec pipeline --config configs/embedded.toml first"; exit 1; }
    mkdir -p "$SET" && cp -rn $P/drafter-set/. "$SET"/
    $T build --taskmap $P/taskmap.json --task-names chat,math --features $P/features --kind eagle2 --steps 300 \
        --drafter-options depth=4 --out "$SET" > "$SET.log" 2>&1
    du -sh "$SET"/*
fi

if [ "${1:-build}" = bench ]; then
    COMPOSE=single,single:head:math,single:head:chat,single:mixed-small,single:mixed-large,averaged
    COMPOSE=$COMPOSE,routed:target-feature,routed:embedding,routed:sequence,confidence,entropy,merged,merged-double
    for temp in ${TEMPS:-0 1}; do
        # two processes, two benchmarks each: every ratio is measured inside one process
        $T bench --dataset mt-bench,gsm8k --limit "$LIMIT" --max-new-tokens 128 --temperature $temp --seed 0 \
            --drafter-set $SET --methods none --compose "$COMPOSE" --out runs/bench/taps-t$temp-a.json \
            > runs/bench/taps-t$temp-a.log 2>&1 &
        $T bench --dataset math500,svamp --limit "$LIMIT" --max-new-tokens 128 --temperature $temp --seed 0 \
            --drafter-set $SET --methods none --compose "$COMPOSE" --out runs/bench/taps-t$temp-b.json \
            > runs/bench/taps-t$temp-b.log 2>&1 &
        wait
        .venv/bin/python benchmarks/taps_table.py runs/bench/taps-t$temp-a.json runs/bench/taps-t$temp-b.json
    done
fi
