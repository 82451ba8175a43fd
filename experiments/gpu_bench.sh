#!/usr/bin/env bash
# The GPU check and timings of issue 6, in one call of the lent device machine (see
# docs/BENCHMARKS.md, "GPU"). Run from the repository root, with the MNIST files in $MNIST:
#   MNIST=.mnist OUT=/tmp/gpu-out bash experiments/gpu_bench.sh [LENET5_MINUTES] [LENET300_MINUTES]
# 1. the CUDA-only tests (a captured fine-tuning step trains as the eager one) and the
#    fine-tuning step benchmark; 2. the quickstart on digits, export of its front, evaluate of
#    one file (the CLI end to end on CUDA); 3. bench_search.py for both MNIST models with TPE,
#    seed 0, the CPU table's command with the given minute caps. Figures go to stdout; JSON and
#    logs to $OUT.
set -euo pipefail
: "${MNIST:?set MNIST to the directory of the MNIST IDX files}" "${OUT:?set OUT}"
lenet5_minutes=${1:-3}
lenet300_minutes=${2:-1.5}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
work=$(mktemp -d)
python3 - <<'PY'
import torch, optuna, mlflow
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, optuna {optuna.__version__}, mlflow {mlflow.__version__}, GPU {gpu}")
PY
echo "== CUDA tests and the fine-tuning step"
# a failing test is reported and the timings still run; the script then exits 1
status=0
python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py || status=1
python3 experiments/bench_finetune_step.py --steps 100 --repeats 3
echo "== quickstart on the auto device"
start=$(date +%s.%N)
python3 -m autocompress search --trials 6 --out "$work/quick" --no-progress | tail -n 12
echo "quickstart wall: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f} s')")"
python3 -m autocompress export --study mlp-digits-default --out "$work/quick" --pareto -o "$work/files" | tail -n 3
first=$(ls "$work"/files/*.acz | head -n 1)
python3 -m autocompress evaluate "$first" --data digits --device auto
for model_minutes in "lenet5 $lenet5_minutes" "lenet300 $lenet300_minutes"; do
  set -- $model_minutes
  echo "== bench_search $1 (TPE, seed 0, $2 minutes)"
  python3 experiments/bench_search.py --models "$1" --samplers tpe --seeds 0 --trials 300 \
    --minutes "$2" --data "mnist:$MNIST" --out "$work/bench-$1" 2>"$OUT/bench-$1.log"
  cp "$work/bench-$1/bench_search.json" "$OUT/bench-$1.json"
done
exit $status
