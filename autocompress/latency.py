"""Inference latency of a model: the speed side of structured pruning.

Timings are noisy, so each batch size gets warm-up runs (first calls allocate, pick kernels and
fill caches) and then the median and 90th percentile of many timed forward passes. The number
of CPU threads changes latency more than most compressions do, so it is pinned for the
measurement and restored afterwards: results are comparable only at equal thread counts.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.errors import ConfigError


@dataclass(frozen=True)
class Latency:
    batch: int
    median_ms: float
    p90_ms: float  # the 90th percentile, nearest rank: 9 in 10 runs were at most this slow
    repeats: int


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device,
    batch_sizes: Sequence[int] = (1, 64),
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> dict[int, Latency]:
    """Time ``model`` on random batches of ``(batch, *input_shape)`` on ``device``.

    The model must already be on ``device``; it runs in eval mode under
    ``torch.inference_mode`` (its mode is restored after), with ``threads`` intra-op CPU
    threads (default: the current setting). On CUDA the device is synchronized before every
    clock reading, so a timing covers the kernels, not just their launch.
    """
    if any(b < 1 for b in batch_sizes):
        raise ConfigError("batch_sizes", f"every batch size must be at least 1; got {batch_sizes}")
    if warmup < 0:
        raise ConfigError("warmup", f"must be at least 0; got {warmup}")
    if repeats < 1:
        raise ConfigError("repeats", f"must be at least 1; got {repeats}")
    if threads is not None and threads < 1:
        raise ConfigError("threads", f"must be at least 1; got {threads}")
    previous_threads = torch.get_num_threads()
    was_training = model.training
    generator = torch.Generator().manual_seed(0)
    model.eval()
    torch.set_num_threads(threads or previous_threads)
    try:
        with torch.inference_mode():
            results = {}
            for batch in batch_sizes:
                x = torch.randn(batch, *input_shape, generator=generator).to(device)
                for _ in range(warmup):
                    model(x)
                times = sorted(_time_ms(model, x, device) for _ in range(repeats))
                p90 = times[math.ceil(0.9 * repeats) - 1]
                results[batch] = Latency(batch, statistics.median(times), p90, repeats)
            return results
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)


def _time_ms(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    model(x)
    _synchronize(device)
    return (time.perf_counter() - start) * 1000.0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
