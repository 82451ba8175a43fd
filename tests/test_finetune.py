from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.data import load_data
from autocompress.errors import TrialFailed
from autocompress.finetune import accuracy, cpu_conv_layout, fit, validated_epochs
from autocompress.models import build_model
from autocompress.plan import DistillPlan


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_data("digits")


def test_fit_learns_digits_and_reports_each_epoch(digits) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    seen: list[int] = []
    history = fit(
        model, (digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
        epochs=5, lr=1e-3, batch_size=64, seed=0, on_epoch=lambda r: seen.append(r.epoch),
    )  # fmt: skip
    assert [r.epoch for r in history] == seen == [1, 2, 3, 4, 5]
    assert history[-1].loss < history[0].loss
    assert history[-1].val_accuracy == accuracy(model, digits.val_x, digits.val_y) > 0.9
    assert not model.training
    # the validation pass is timed apart: evaluation, counted outside fine-tuning
    assert all(0 < r.val_seconds < r.seconds for r in history)


@pytest.mark.parametrize(
    ("epochs", "every", "expected"),
    [
        (10, 1, set(range(1, 11))),
        (10, 3, {1, 4, 7, 10}),  # not 9 and 10 both: a stop after the 9th saves one epoch
        (30, 3, {1, *range(3, 31, 3)}),
        (8, 3, {1, 2, 5, 8}),
        (4, 10, {1, 4}),
        (1, 3, {1}),
    ],
)
def test_validated_epochs_count_back_from_the_last(
    epochs: int, every: int, expected: set[int]
) -> None:
    assert validated_epochs(epochs, every) == expected


def test_fit_validates_after_the_first_and_every_kth_epoch_back_from_the_last(digits) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    history = fit(
        model, (digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
        epochs=7, lr=1e-3, batch_size=64, seed=0, validate_every=3,
    )  # fmt: skip
    validated = [r.epoch for r in history if r.val_accuracy is not None]
    assert validated == [1, 4, 7]
    assert history[-1].val_accuracy == accuracy(model, digits.val_x, digits.val_y)
    skipped = [r.val_seconds for r in history if r.val_accuracy is None]
    passes = [r.val_seconds for r in history if r.val_accuracy is not None]
    assert max(skipped) < min(passes)  # no pass ran: nothing to time


def test_distillation_follows_the_teacher(digits) -> None:  # type: ignore[no-untyped-def]
    """With alpha = 1 the labels are ignored: a student taught by a 'teacher' that always says
    class 3 predicts class 3."""
    torch.manual_seed(0)
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    teacher = torch.full((len(digits.train_x), 10), -5.0)
    teacher[:, 3] = 5.0
    fit(
        model, (digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
        epochs=3, lr=1e-2, batch_size=128, seed=0, teacher_logits=teacher,
        distill=DistillPlan(enabled=True, temperature=2.0, alpha=1.0),
    )  # fmt: skip
    predictions = model(digits.val_x).argmax(dim=1)
    assert (predictions == 3).float().mean() > 0.95


def test_non_finite_training_fails_the_trial(digits) -> None:  # type: ignore[no-untyped-def]
    model = build_model("mlp", digits.input_shape, digits.num_classes)
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(TrialFailed, match="training loss became nan in epoch 1"):
        fit(model, (digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
            epochs=2, lr=1e-3, batch_size=128, seed=0)  # fmt: skip


def test_non_finite_validation_logits_fail_the_trial(digits) -> None:  # type: ignore[no-untyped-def]
    class Spiky(nn.Module):
        """Finite while training, infinite logits in eval mode."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.fc(x.flatten(1))
            return out if self.training else out * float("inf")

    with pytest.raises(TrialFailed, match="validation logits are not finite after epoch 1"):
        fit(Spiky(), (digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
            epochs=1, lr=1e-3, batch_size=128, seed=0)  # fmt: skip


def test_conv_models_read_channels_last_images_and_compute_the_same(digits) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    conv = build_model("lenet5", digits.input_shape, digits.num_classes).eval()
    images = digits.val_x
    converted = cpu_conv_layout(conv, images)
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert converted.stride() != images.stride()  # one channel: only a real copy changes strides
    assert torch.equal(converted, images)
    with torch.no_grad():
        torch.testing.assert_close(conv(converted), conv(images), rtol=1e-5, atol=1e-5)
    # Models without 2-d convolutions, and anything but a batch of images, stay as they are.
    assert cpu_conv_layout(build_model("mlp", digits.input_shape, 10), images) is images
    flat = images.flatten(1)
    assert cpu_conv_layout(conv, flat) is flat


def test_fit_trains_a_conv_model_and_leaves_its_layout(digits) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build_model("lenet5", digits.input_shape, digits.num_classes)
    history = fit(
        model, (digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
        epochs=4, lr=3e-3, batch_size=64, seed=0,
    )  # fmt: skip
    assert history[-1].loss < history[0].loss
    assert history[-1].val_accuracy == accuracy(model, digits.val_x, digits.val_y) > 0.8
    assert all(p.is_contiguous() for p in model.parameters())
    assert digits.train_x.is_contiguous()
