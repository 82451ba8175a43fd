"""The knowledge-distillation loss of Hinton et al. (2015), a pure function."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from autocompress.errors import ConfigError


def distillation_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor | None,
    temperature: float,
    alpha: float,
) -> Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, targets)``.

    ``p^T = softmax(logits / T)`` and the KL divergence is averaged over the batch. The soft
    term's gradient with respect to the student logits scales as ``1 / T^2`` (one ``1/T`` from
    the softened softmax, one from the shrinking gap between the softened distributions), so
    multiplying by ``T^2`` keeps the soft and hard terms in the same proportion whatever
    temperature the search picks. Without a teacher, or with ``alpha == 0``, it is plain
    cross-entropy.
    """
    if temperature <= 0:
        raise ConfigError("distill/temperature", "temperature must be > 0")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError("distill/alpha", "alpha must be in [0, 1]")
    hard = F.cross_entropy(student_logits, targets)
    if teacher_logits is None or alpha == 0:
        return hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits.detach() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1.0 - alpha) * hard
