"""Latency measurement: real timings, eval + inference mode, threads pinned and restored."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from autocompress.errors import ConfigError
from autocompress.latency import Latency, measure_latency
from autocompress.models import build_model

CPU = torch.device("cpu")


class Recorder(nn.Module):
    """Sleeps 2 ms per call and records the conditions it ran under."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.calls: list[tuple[int, bool, bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(
            (x.shape[0], self.training, torch.is_inference_mode_enabled(), torch.get_num_threads())
        )
        time.sleep(0.002)
        return self.fc(x)


def test_times_every_batch_size_after_warmup_in_eval_and_inference_mode() -> None:
    model = Recorder().train()
    got = measure_latency(model, (4,), CPU, batch_sizes=(1, 3), warmup=2, repeats=5, threads=1)
    assert set(got) == {1, 3}
    for batch, latency in got.items():
        assert latency.batch == batch and latency.repeats == 5
        assert 2.0 <= latency.median_ms <= latency.p90_ms
    assert [c[0] for c in model.calls] == [1] * 7 + [3] * 7
    assert all(c[1:] == (False, True, 1) for c in model.calls)
    assert model.training


def test_threads_are_restored_even_when_the_model_fails() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Broken(), (4,), CPU, threads=before + 1)
    assert torch.get_num_threads() == before


def test_lenet5_measurement_is_cheap() -> None:
    """The defaults cost 2 x (5 + 30) forward passes: about 0.3 s for LeNet-5 on an idle CPU.

    Counted rather than timed, since a wall-clock bound flakes on a shared machine.
    """
    model = build_model("lenet5", (1, 28, 28), 10)
    batches: list[int] = []
    model.register_forward_pre_hook(lambda _, args: batches.append(args[0].shape[0]))
    got = measure_latency(model, (1, 28, 28), CPU)
    assert batches == [1] * 35 + [64] * 35
    assert set(got) == {1, 64} and all(isinstance(v, Latency) for v in got.values())
    assert all(0 < v.median_ms <= v.p90_ms for v in got.values())


@pytest.mark.parametrize(
    ("keys", "field"),
    [
        ({"batch_sizes": (1, 0)}, "batch_sizes"),
        ({"warmup": -1}, "warmup"),
        ({"repeats": 0}, "repeats"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_arguments_are_config_errors(keys: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        measure_latency(Recorder(), (4,), CPU, **keys)  # type: ignore[arg-type]
