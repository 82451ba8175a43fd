"""Benchmark: one fine-tuning step of a compressed LeNet on a device, and where its time goes.

    python experiments/bench_finetune_step.py [--device auto] [--models lenet300,lenet5]
        [--steps 100] [--repeats 5]

Why: on an H100 a LeNet-300-100 trial took 1.78 s, about what it takes on 2 CPU cores
(docs/BENCHMARKS.md, "GPU"). This times ``finetune.fit``'s training step (batch 128,
distillation on) for the plain network and for a trial's student (masks and fake
quantization as parametrizations: 4 bits, 95% pruned, every layer): wall milliseconds per
step, the median of ``--repeats`` one-epoch runs of ``--steps`` steps, synchronized. On CUDA
each also runs as ``fit`` does there by default, replaying a captured CUDA graph ("+graph"),
and one epoch of each is profiled: the GPU's kernel time and kernel launches per step.
Wall time far above kernel time means the step waits on Python and kernel launches, not on
the GPU. Random inputs of MNIST's shape: timing needs no real data.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from autocompress.compress import compress
from autocompress.finetune import fit
from autocompress.heap import keep_freed_memory
from autocompress.models import build_model, compressible_layers
from autocompress.plan import CompressionPlan, DistillPlan, LayerPlan
from autocompress.study import resolve_device

BATCH = 128
INPUT_SHAPE = (1, 28, 28)
CLASSES = 10


def one_epoch(
    model: nn.Module, data: tuple[torch.Tensor, ...], device: torch.device, graph: bool = False
) -> float:
    """Seconds for one epoch of ``fit`` (its validation pass is over 128 images)."""
    x, y, logits = data
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fit(
        model, (x, y), (x[:BATCH], y[:BATCH]), epochs=1, lr=1e-3, batch_size=BATCH, seed=0,
        teacher_logits=logits, distill=DistillPlan(), cuda_graph=graph,
    )  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def kernel_profile(
    model: nn.Module, data: tuple[torch.Tensor, ...], steps: int, graph: bool
) -> str:
    """Kernel milliseconds and launches per step, from one profiled epoch."""
    device = data[0].device
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        one_epoch(model, data, device, graph)
    kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    kernel_ms = sum(e.self_device_time_total for e in kernels) / 1000
    launches = sum(e.count for e in kernels)
    return f"{kernel_ms / steps:8.3f} {launches / steps:9.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:K")
    parser.add_argument("--models", default="lenet300,lenet5")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per variant")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's thresholds as they are (a search raises them: autocompress.heap)",
    )
    args = parser.parse_args()
    kept = not args.default_malloc and keep_freed_memory()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, freed memory {'kept' if kept else 'returned (glibc default)'}"
    )
    print(f"{'model':9} {'variant':13} {'ms/step':>8} {'kernel ms':>9} {'kernels':>9}")
    generator = torch.Generator().manual_seed(0)
    n = args.steps * BATCH
    data = tuple(
        t.to(device)
        for t in (
            torch.randn(n, *INPUT_SHAPE, generator=generator),
            torch.randint(0, CLASSES, (n,), generator=generator),
            torch.randn(n, CLASSES, generator=generator),
        )
    )
    for spec in args.models.split(","):
        plain = build_model(spec, INPUT_SHAPE, CLASSES).to(device)
        plan = CompressionPlan(
            layers={layer: LayerPlan(bits=4, prune=0.95) for layer in compressible_layers(plain)}
        )
        student = compress(plain, plan, data[0][:2])
        # "+graph": full batches replay a captured CUDA graph (fit's default on CUDA)
        graphs = (False, True) if device.type == "cuda" else (False,)
        for (variant, model), graph in itertools.product(
            (("plain", plain), ("student", student)), graphs
        ):
            name = variant + ("+graph" if graph else "")
            one_epoch(model, data, device, graph)  # warm-up: allocator, kernels, autotuning
            seconds = statistics.median(
                one_epoch(model, data, device, graph) for _ in range(args.repeats)
            )
            profiled = (
                kernel_profile(model, data, args.steps, graph) if device.type == "cuda" else ""
            )
            print(f"{spec:9} {name:13} {seconds / args.steps * 1000:8.3f} {profiled}")


if __name__ == "__main__":
    main()
