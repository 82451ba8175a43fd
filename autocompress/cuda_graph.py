"""One training step, captured once as a CUDA graph and replayed for every full batch.

A fine-tuning step of these small networks launches about 140 kernels (the parametrized
masks and fake quantizers, the distillation loss, backward, Adam) that take under 0.01 ms
each on a GPU. On an H100 Python and the launches then cost 3-6 ms per LeNet-300-100
student step against 0.7 ms of kernel time (docs/BENCHMARKS.md, "GPU"), so the GPU ran a
trial no faster than 2 CPU cores. A graph replays all of a step's kernels with one launch.

The step must read its batch from fixed addresses: it is called with a tensor of example
indices, which ``GraphedStep`` copies into its own buffer before each replay. Whatever the
step updates (weights, Adam's state, masks, quantizer statistics) must be updated in place;
Adam needs ``capturable=True`` and a tensor learning rate so that the scheduler's changes
reach the graph. A step that cannot be captured (a user model that synchronizes with the
host, say) runs eagerly instead, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

# Eager steps before capture, on a side stream: cuDNN and cuBLAS pick their algorithms and
# Adam creates its state, so the graph records only the steady state (PyTorch's recipe).
WARMUP_STEPS = 3


class GraphedStep:
    """Calls ``step(indices)`` eagerly for warm-up and partial batches, replays its graph for
    every other batch of ``batch_size`` indices. Returns the step's result (a tensor the next
    replay overwrites: use it before the next call)."""

    def __init__(self, step: Callable[[Tensor], Tensor], batch_size: int, device: torch.device):
        self.step = step
        self.indices = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.result: Tensor | None = None
        self.eager_only = False
        self.warmed_up = 0

    def __call__(self, indices: Tensor) -> Tensor:
        if self.eager_only or len(indices) != len(self.indices):
            return self.step(indices)
        if self.warmed_up < WARMUP_STEPS:
            self.warmed_up += 1
            side = torch.cuda.Stream(self.indices.device)
            side.wait_stream(torch.cuda.current_stream(self.indices.device))
            with torch.cuda.stream(side):
                result = self.step(indices)
            torch.cuda.current_stream(self.indices.device).wait_stream(side)
            return result
        self.indices.copy_(indices)
        if self.graph is None and not self._capture():
            return self.step(indices)
        assert self.graph is not None and self.result is not None
        self.graph.replay()
        return self.result

    def _capture(self) -> bool:
        """Record the step on ``self.indices`` (recording runs nothing); False if it cannot be."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.result = self.step(self.indices)
        except RuntimeError as exc:
            warnings.warn(
                f"fine-tuning runs without a CUDA graph: {str(exc).splitlines()[0]}",
                stacklevel=3,
            )
            self.eager_only = True
            return False
        self.graph = graph
        return True
