"""Benchmark: does bookkeeping beside fine-tuning come free on this machine? One fine-tuning
run timed alone and with a second process writing MLflow runs the whole time (as a
write-behind logger would), alternated round by round, medians.

    python experiments/bench_contention.py --model lenet300 --epochs 3 --rounds 4

Why: a trial's MLflow writes (~25 ms of a 1.2 s LeNet-300-100 trial) could overlap its
fine-tuning only if a core sat idle during it. A thread was tried first and made trials slower
(the GIL); this asks whether a process could do better (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import torch

from autocompress.data import load_data
from autocompress.finetune import fit
from autocompress.models import build_model
from autocompress.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]


def write_runs(stop: Event) -> None:
    """MLflow runs of a trial's size (30 metrics), one after another until ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    folder = Path(tempfile.mkdtemp())
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", "contention", folder / "artifacts")
    runs = 0
    while not stop.is_set():
        run_id = tracker.client.create_run(tracker.experiment_id).info.run_id
        tracker.log_metrics(run_id, {f"m{k}": 1.0 for k in range(30)})
        tracker.client.set_terminated(run_id)
        runs += 1
    print(f"  writer: {runs} runs", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--data", default=f"mnist:{REPO.parent / 'shared/data/mnist'}")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    data = load_data(args.data)

    def fine_tune() -> float:
        torch.manual_seed(0)
        model = build_model(args.model, data.input_shape, data.num_classes)
        start = time.perf_counter()
        train, val = (data.train_x, data.train_y), (data.val_x, data.val_y)
        fit(model, train, val, epochs=args.epochs, lr=1e-3, batch_size=128, seed=0)
        return time.perf_counter() - start

    fine_tune()  # warm-up
    seconds: dict[str, list[float]] = {"alone": [], "beside a writer process": []}
    spawn = mp.get_context("spawn")
    for _ in range(args.rounds):
        seconds["alone"].append(fine_tune())
        stop = spawn.Event()
        writer = spawn.Process(target=write_runs, args=(stop,))
        writer.start()
        time.sleep(4)  # past its imports: writing
        seconds["beside a writer process"].append(fine_tune())
        stop.set()
        writer.join()
    print(f"{args.model}, {args.epochs} epochs, {torch.get_num_threads()} torch threads:")
    alone = statistics.median(seconds["alone"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:<24} {median:.3f} s (median of {len(values)}), {median / alone:.2f}x")


if __name__ == "__main__":
    main()
