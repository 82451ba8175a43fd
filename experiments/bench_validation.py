"""Benchmark: a trial's validation pass beside a training epoch, and what the pass spends.

    python experiments/bench_validation.py [--models lenet300,lenet5] [--keep 1,0.2,0.05,0.01]
        [--val 1000] [--train 7000] [--repeats 15]

Why: every fine-tuning epoch ends with a validation pass (early stopping and the learning
curve read it), and issue 6 counts that evaluation outside fine-tuning (the target is under
5% of a trial). For each network and kept fraction (every layer pruned to it by magnitude,
4-bit weights), prints the median wall milliseconds of the pass over ``--val`` images as
``fit`` runs it (channels-last images for convolutions), of computing the student's masked,
fake-quantized weights once (a part of every pass whatever its size), and of one training
epoch of ``--train`` images (batch 128, distillation on), so the pass's share of an epoch.
Random inputs of MNIST's shape: timing needs no real data.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.compress import compress
from autocompress.finetune import cpu_conv_layout, fit, predict_logits
from autocompress.heap import keep_freed_memory
from autocompress.models import build_model, compressible_layers
from autocompress.plan import CompressionPlan, DistillPlan, LayerPlan

SHAPE = (1, 28, 28)
CLASSES = 10


def milliseconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return 1000 * (time.perf_counter() - start)


@torch.no_grad()
def weights(student: nn.Module) -> None:
    """Every parametrized tensor computed once, as a forward computes them."""
    for module in student.modules():
        if parametrize.is_parametrized(module):
            parametrizations = module.parametrizations
            assert isinstance(parametrizations, nn.ModuleDict)
            for name in parametrizations:
                getattr(module, name)


def measure(
    student: nn.Module, data: tuple[torch.Tensor, ...], repeats: int
) -> tuple[float, float, float]:
    """Median ms of the validation pass, of the weights alone, and of a training epoch."""
    x, y, teacher_logits, val_x = data
    val_x = cpu_conv_layout(student, val_x)  # as fit hands it over

    def epoch() -> None:
        fit(
            student, (x, y), (val_x[:1], y[:1]), epochs=1, lr=1e-4, batch_size=128, seed=0,
            teacher_logits=teacher_logits, distill=DistillPlan(),
        )  # fmt: skip

    passes, parts = [], []
    for _ in range(repeats + 1):  # alternated, so drift hits both alike; the first warms up
        passes.append(milliseconds(lambda: predict_logits(student, val_x)))
        parts.append(milliseconds(lambda: weights(student)))
    epochs = [milliseconds(epoch) for _ in range(3)]
    return statistics.median(passes[1:]), statistics.median(parts[1:]), statistics.median(epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--keep", default="1,0.2,0.05,0.01", help="kept fractions of weights")
    parser.add_argument("--val", type=int, default=1000, help="validation images")
    parser.add_argument("--train", type=int, default=7000, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=15, help="timed passes")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's thresholds as they are (a search raises them: autocompress.heap)",
    )
    args = parser.parse_args()
    kept = not args.default_malloc and keep_freed_memory()
    threads = torch.get_num_threads()
    print(
        f"torch {torch.__version__}, {threads} threads, freed memory "
        f"{'kept' if kept else 'returned (glibc default)'}; medians of {args.repeats} passes"
    )
    print(f"{'model':9} {'keep':>6} {'pass ms':>8} {'weights ms':>10} {'epoch ms':>9} "
          f"{'pass/epoch':>10}")  # fmt: skip
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
            pass_ms, weights_ms, epoch_ms = measure(student, data, args.repeats)
            print(f"{spec:9} {keep:6.3g} {pass_ms:8.2f} {weights_ms:10.2f} {epoch_ms:9.1f} "
                  f"{pass_ms / epoch_ms:10.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
