"""Latency of LeNet-5 (28x28) before and after structured pruning of half its channels.

Structured pruning removes 50% of the outputs of conv1, conv2 and fc1 (and the matching inputs
of conv2, fc1 and fc2). The two models are measured in alternation, round after round, so that
drifts of the machine (other processes, clock changes) hit both alike; each cell is the median
over rounds of each round's median. Weights are random: latency does not depend on them.

    python experiments/bench_structured.py [--rounds 7] [--repeats 20] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from autocompress.latency import measure_latency
from autocompress.models import build_model
from autocompress.structured import prune_channels_

INPUT_SHAPE = (1, 28, 28)
RATIOS = {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (7)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per round (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per round (3)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="(1 64)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="(1 2)")
    args = parser.parse_args()

    torch.manual_seed(0)
    dense = build_model("lenet5", INPUT_SHAPE, 10)
    pruned = copy.deepcopy(dense)
    prune_channels_(pruned, RATIOS, torch.zeros(2, *INPUT_SHAPE))
    models = {"dense": dense, "pruned": pruned}
    device = torch.device("cpu")

    medians: dict[tuple[str, int, int], list[float]] = {}
    for _ in range(args.rounds):
        for threads in args.threads:
            for name, model in models.items():
                got = measure_latency(
                    model, INPUT_SHAPE, device, args.batches, args.warmup, args.repeats, threads
                )
                for batch, latency in got.items():
                    medians.setdefault((name, threads, batch), []).append(latency.median_ms)

    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    print(f"LeNet-5 {INPUT_SHAPE}: dense {params['dense']:,} params, pruned {params['pruned']:,}")
    print(f"(median of {args.rounds} rounds x {args.repeats} runs; torch {torch.__version__})")
    print(f"{'threads':>7} {'batch':>5} {'dense ms':>9} {'pruned ms':>9} {'speedup':>7}")
    for threads in args.threads:
        for batch in args.batches:
            dense_ms = statistics.median(medians["dense", threads, batch])
            pruned_ms = statistics.median(medians["pruned", threads, batch])
            print(
                f"{threads:>7} {batch:>5} {dense_ms:>9.3f} {pruned_ms:>9.3f} "
                f"{dense_ms / pruned_ms:>6.2f}x"
            )


if __name__ == "__main__":
    main()
