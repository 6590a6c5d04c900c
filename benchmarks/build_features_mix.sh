#!/usr/bin/env bash
# Feature caches for the generic drafters (chat + math), resumable: rerun the same command after a kill.
#   bash benchmarks/build_features_mix.sh [LIMIT]     logs in runs/features/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT="${1:-600}"
mkdir -p runs/features
.venv/bin/taskspec features --data sharegpt --limit "$LIMIT" --max-tokens 512 \
    --out "runs/features/sharegpt-$LIMIT" > "runs/features/sharegpt-$LIMIT.log" 2>&1
.venv/bin/taskspec features --data mathinstruct --limit "$LIMIT" --max-tokens 512 \
    --out "runs/features/math-$LIMIT" > "runs/features/math-$LIMIT.log" 2>&1
