#!/usr/bin/env bash
# Several seeds of one bench_search.py comparison at once on the lent GPU machine (16 cores, one
# GPU): a process per seed, after the baseline is trained once, so every seed compresses the
# same network. Run from the repository root, with the MNIST files in $MNIST:
#   MNIST=.mnist OUT=/tmp/out bash experiments/gpu_seeds.sh MODEL SAMPLERS SEEDS TRIALS MINUTES
# e.g. lenet5 tpe@experiments/spaces/wide.yaml,tpe 0,1,2 220 3.3: each seed's process runs the
# samplers one after the other (TRIALS trials or MINUTES minutes each). Per seed, the table goes
# to $OUT/MODEL-sSEED.md, the JSON to $OUT/MODEL-sSEED.json, progress to $OUT/MODEL-sSEED.log;
# the tables are also printed. Exits 1 if any seed's run failed.
set -euo pipefail
: "${MNIST:?set MNIST to the directory of the MNIST IDX files}" "${OUT:?set OUT}"
model=$1 samplers=$2 seeds=$3 trials=$4 minutes=$5
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
work=$(mktemp -d)
python3 experiments/bench_search.py --models "$model" --samplers "" --seeds 0 --no-recipes \
  --data "mnist:$MNIST" --out "$work/baseline" >/dev/null 2>"$OUT/$model-baseline.log"
pids=()
for seed in ${seeds//,/ }; do
  python3 experiments/bench_search.py --models "$model" --samplers "$samplers" --seeds "$seed" \
    --trials "$trials" --minutes "$minutes" --no-recipes --data "mnist:$MNIST" \
    --out "$work/s$seed" >"$OUT/$model-s$seed.md" 2>"$OUT/$model-s$seed.log" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for seed in ${seeds//,/ }; do
  echo "== $model seed $seed"
  cat "$OUT/$model-s$seed.md"
  cp "$work/s$seed/bench_search.json" "$OUT/$model-s$seed.json" || status=1
done
exit $status
