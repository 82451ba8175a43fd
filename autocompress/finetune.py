"""The training loop shared by the baseline and every trial's fine-tuning.

Data sets here are small and live on the device as whole tensors, so batches are index
slices of a seeded permutation: far cheaper than a DataLoader, and it keeps all work on the
chosen device. Knows nothing of Optuna or MLflow: progress leaves through ``on_epoch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.cuda_graph import GraphedStep
from autocompress.distill import distillation_loss
from autocompress.errors import TrialFailed
from autocompress.plan import DistillPlan

EVAL_BATCH = 2048


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch
    val_accuracy: float | None  # None: not validated after this epoch (``validate_every``)
    seconds: float  # the whole epoch, its validation pass included
    val_seconds: float  # the validation pass: evaluation, not training (issue 6's accounting)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = torch.cat([model(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict_logits(model, x).argmax(dim=1) == y).float().mean().item())


def validated_epochs(epochs: int, every: int) -> frozenset[int]:
    """The 1-based epochs after which fit validates: the first, and every ``every``-th counted
    back from the last (10 epochs, every 3rd: 1, 4, 7, 10). Counted forward, the last and the
    one before it (9 and 10) both validated, and a stop after the 9th saves one epoch: a pass
    costs 3-6% of an epoch in every trial, a stop there is rare."""
    return frozenset({1, *range(epochs, 0, -every)})


def steps_per_epoch(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def cpu_conv_layout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images in channels-last layout when a CPU model has 2-d convolutions, else ``x``.

    oneDNN then runs the convolutions and max pooling channels-last: a LeNet-5 student's
    training step on 2 cores took 30 ms from default-layout images, 22 ms from channels-last
    ones (max pooling alone 7 against 1.2 ms), whatever the weights' layout. Only the inputs
    change, so the model and its state are left as they are.
    """
    if x.device.type != "cpu" or x.dim() != 4:
        return x
    if not any(isinstance(module, nn.Conv2d) for module in model.modules()):
        return x
    return x.to(memory_format=torch.channels_last)


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    teacher_logits: torch.Tensor | None = None,
    distill: DistillPlan | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    cuda_graph: bool = True,
    validate_every: int = 1,
) -> list[EpochResult]:
    """Adam with a cosine learning-rate decay; with ``distill`` enabled the loss mixes in the
    teacher's cached logits for the same training examples. ``on_step`` gets the 1-based
    optimizer step after each step (gradual pruning moves its masks there, in place). On CUDA,
    with ``cuda_graph``, full batches replay one captured step (``GraphedStep``). Validation
    runs after epoch 1 and every ``validate_every``-th epoch counted back from the last
    (``validated_epochs``)."""
    x, y = cpu_conv_layout(model, train[0]), train[1]
    val = cpu_conv_layout(model, val[0]), val[1]
    use_teacher = distill is not None and distill.enabled and teacher_logits is not None
    temperature = distill.temperature if distill is not None else 1.0
    alpha = distill.alpha if use_teacher and distill is not None else 0.0
    graphed = cuda_graph and x.device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        params,
        # a graph reads the learning rate from device memory, where the schedule writes it
        lr=torch.tensor(lr, device=x.device) if graphed else lr,
        weight_decay=weight_decay,
        capturable=graphed,
        # PyTorch's CPU default is a loop over tensors: 1.3 ms of LeNet-300-100's 6.7 ms step
        # on 2 cores, 0.22 ms fused (docs/BENCHMARKS.md). CUDA keeps its default (foreach),
        # with which the captured graphs were measured.
        fused=True if x.device.type == "cpu" else None,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, epochs * steps_per_epoch(len(x), batch_size)
    )

    def train_step(idx: torch.Tensor) -> torch.Tensor:
        logits = model(x[idx])
        teacher = teacher_logits[idx] if use_teacher and teacher_logits is not None else None
        loss = distillation_loss(logits, y[idx], teacher, temperature, alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    step_fn = GraphedStep(train_step, batch_size, x.device) if graphed else train_step
    generator = torch.Generator().manual_seed(seed)
    validated = validated_epochs(epochs, validate_every)
    step = 0
    history: list[EpochResult] = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total = torch.zeros((), device=x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            total += step_fn(idx) * len(idx)
            schedule.step()
            step += 1
            if on_step is not None:
                on_step(step)
        mean_loss = float(total.item()) / len(x)
        if not math.isfinite(mean_loss):
            raise TrialFailed(f"training loss became {mean_loss} in epoch {epoch}")
        validating = time.perf_counter()  # the loss's .item() above waited for the device
        val_accuracy = None
        if epoch in validated:
            logits = predict_logits(model, val[0])
            if not bool(torch.isfinite(logits).all()):
                raise TrialFailed(f"validation logits are not finite after epoch {epoch}")
            val_accuracy = float((logits.argmax(dim=1) == val[1]).float().mean())
        end = time.perf_counter()
        result = EpochResult(epoch, mean_loss, val_accuracy, end - start, end - validating)
        history.append(result)
        if on_epoch is not None:
            on_epoch(result)
    model.eval()
    return history
