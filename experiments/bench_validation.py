"""Benchmark: a trial's validation pass, dense against sparse products, beside a training epoch.

    python experiments/bench_validation.py [--models lenet300,lenet5] [--keep 1,0.2,0.05,0.01]
        [--val 1000] [--train 7000] [--repeats 15]

Why: every fine-tuning epoch ends with a validation pass, and issue 6 counts that evaluation
outside fine-tuning (the target is under 5% of a trial). For each network and kept fraction
(every layer pruned to it by magnitude, 4-bit weights), prints the median wall milliseconds of
the pass over ``--val`` images with dense products and with ``sparse_eval.sparse_linears``
(its CSR building included), alternated, and of one training epoch of ``--train`` images
(batch 128, distillation on, as a trial's ``fit``), so the pass's share of an epoch. Random
inputs of MNIST's shape: timing needs no real data. The sparse logits are checked against the
dense ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from autocompress.compress import compress
from autocompress.finetune import fit, predict_logits
from autocompress.models import build_model, compressible_layers
from autocompress.plan import CompressionPlan, DistillPlan, LayerPlan
from autocompress.sparse_eval import sparse_linears

SHAPE = (1, 28, 28)
CLASSES = 10


def milliseconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return 1000 * (time.perf_counter() - start)


def measure(
    student: torch.nn.Module, data: tuple[torch.Tensor, ...], repeats: int
) -> tuple[float, float, float, int]:
    """Median ms of the dense pass, the sparse pass and a training epoch; sparse layers."""
    x, y, teacher_logits, val_x = data

    def sparse_pass() -> torch.Tensor:
        with sparse_linears(student):
            return predict_logits(student, val_x)

    def epoch() -> None:
        fit(
            student, (x, y), (val_x[:1], y[:1]), epochs=1, lr=1e-4, batch_size=128, seed=0,
            teacher_logits=teacher_logits, distill=DistillPlan(),
        )  # fmt: skip

    torch.testing.assert_close(sparse_pass(), predict_logits(student, val_x))
    with sparse_linears(student) as swapped:
        pass
    dense, sparse = [], []
    for _ in range(repeats):  # alternated, so drift hits both alike
        dense.append(milliseconds(lambda: predict_logits(student, val_x)))
        sparse.append(milliseconds(sparse_pass))
    epochs = [milliseconds(epoch) for _ in range(3)]
    return statistics.median(dense), statistics.median(sparse), statistics.median(epochs), swapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--keep", default="1,0.2,0.05,0.01", help="kept fractions of weights")
    parser.add_argument("--val", type=int, default=1000, help="validation images")
    parser.add_argument("--train", type=int, default=7000, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=15, help="timed passes per variant")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; medians of {args.repeats} passes")
    print(f"{'model':9} {'keep':>6} {'dense ms':>9} {'sparse ms':>9} {'epoch ms':>9} "
          f"{'dense/epoch':>11} {'sparse/epoch':>12} {'sparse layers':>13}")  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    data = (
        torch.randn(args.train, *SHAPE, generator=generator),
        torch.randint(0, CLASSES, (args.train,), generator=generator),
        torch.randn(args.train, CLASSES, generator=generator),
        torch.randn(args.val, *SHAPE, generator=generator),
    )
    for spec in args.models.split(","):
        torch.manual_seed(0)
        teacher = build_model(spec, SHAPE, CLASSES)
        for keep in (float(k) for k in args.keep.split(",")):
            layers = {n: LayerPlan(bits=4, prune=1 - keep) for n in compressible_layers(teacher)}
            student = compress(teacher, CompressionPlan(layers=layers), data[0][:2])
            d, s, e, swapped = measure(student, data, args.repeats)
            print(f"{spec:9} {keep:6.3g} {d:9.2f} {s:9.2f} {e:9.1f} {d / e:11.2%} {s / e:12.2%} "
                  f"{swapped:13d}")  # fmt: skip


if __name__ == "__main__":
    main()
