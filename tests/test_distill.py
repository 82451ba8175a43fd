"""The distillation loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autocompress.distill import distillation_loss
from autocompress.errors import ConfigError

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.1, -1.0, 2.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
TARGETS = torch.tensor([1, 2])


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_kl(temperature: float) -> float:
    """Batch mean of sum_j p_t[j] * (log p_t[j] - log p_s[j]) with p = softmax(logits / T)."""
    total = 0.0
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist(), strict=True):
        p_s = _softmax([v / temperature for v in s_row])
        p_t = _softmax([v / temperature for v in t_row])
        total += sum(t * (math.log(t) - math.log(s)) for s, t in zip(p_s, p_t, strict=True))
    return total / 2


def _hand_ce() -> float:
    """Batch mean of -log softmax(student)[target]."""
    rows = STUDENT.tolist()
    return -(math.log(_softmax(rows[0])[1]) + math.log(_softmax(rows[1])[2])) / 2


def test_matches_hand_computation() -> None:
    t, alpha = 2.0, 0.7
    # e.g. row 0 at T=2: student / T = [0.5, 1, 0.25], teacher / T = [1, 0.5, 0]
    expected = alpha * t**2 * _hand_kl(t) + (1 - alpha) * _hand_ce()
    loss = distillation_loss(STUDENT, TARGETS, TEACHER, temperature=t, alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hand_cross_entropy_value() -> None:
    # row 0: log(e^1 + e^2 + e^0.5) - 2; row 1: log(e^0.1 + e^-1 + e^2) - 2
    row0 = math.log(math.e + math.e**2 + math.e**0.5) - 2
    row1 = math.log(math.e**0.1 + math.e**-1 + math.e**2) - 2
    assert _hand_ce() == pytest.approx((row0 + row1) / 2)


@pytest.mark.parametrize("teacher", [None, TEACHER])
def test_no_teacher_or_alpha_zero_is_cross_entropy(teacher: torch.Tensor | None) -> None:
    loss = distillation_loss(STUDENT, TARGETS, teacher, temperature=4.0, alpha=0.0)
    assert torch.equal(loss, F.cross_entropy(STUDENT, TARGETS))
    if teacher is None:
        loss = distillation_loss(STUDENT, TARGETS, None, temperature=4.0, alpha=0.9)
        assert torch.equal(loss, F.cross_entropy(STUDENT, TARGETS))
    assert loss.item() == pytest.approx(_hand_ce(), rel=1e-6)


@pytest.mark.parametrize("t", [1.0, 2.0, 5.0, 10.0])
def test_soft_term_is_scaled_by_t_squared(t: float) -> None:
    # float64: at high T the KL is a small difference of nearly equal terms
    loss = distillation_loss(STUDENT.double(), TARGETS, TEACHER.double(), temperature=t, alpha=1.0)
    assert loss.item() == pytest.approx(t * t * _hand_kl(t), rel=1e-9)


def test_t_squared_keeps_gradients_independent_of_temperature() -> None:
    """For large T the soft gradient tends to (z_s - z_t) / (N * C) for zero-mean logits."""
    student = (STUDENT - STUDENT.mean(1, keepdim=True)).requires_grad_()
    teacher = TEACHER - TEACHER.mean(1, keepdim=True)
    distillation_loss(student, TARGETS, teacher, temperature=200.0, alpha=1.0).backward()
    assert student.grad is not None
    n, c = student.shape
    torch.testing.assert_close(
        student.grad, (student - teacher).detach() / (n * c), rtol=2e-2, atol=1e-4
    )


def test_no_gradient_reaches_the_teacher() -> None:
    student = STUDENT.clone().requires_grad_()
    teacher = TEACHER.clone().requires_grad_()
    distillation_loss(student, TARGETS, teacher, temperature=3.0, alpha=0.5).backward()
    assert teacher.grad is None
    assert student.grad is not None


@pytest.mark.parametrize(
    ("temperature", "alpha", "field"),
    [
        (0.0, 0.5, "distill/temperature"),
        (-1.0, 0.5, "distill/temperature"),
        (2.0, -0.1, "distill/alpha"),
        (2.0, 1.5, "distill/alpha"),
    ],
)
def test_bad_settings_are_config_errors(temperature: float, alpha: float, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        distillation_loss(STUDENT, TARGETS, TEACHER, temperature=temperature, alpha=alpha)
    assert info.value.field == field
