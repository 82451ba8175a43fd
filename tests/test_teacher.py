from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import at_once

from autocompress import teacher
from autocompress.config import TeacherConfig, build_config
from autocompress.data import load_data
from autocompress.models import build_model
from autocompress.teacher import Baseline, cache_key, cache_path, prepare_baseline


def test_the_baseline_is_trained_once_then_read_from_the_cache() -> None:
    config = build_config(None, {"teacher": {"epochs": 3}})
    data = load_data("digits")
    torch.manual_seed(0)
    first = prepare_baseline(config, build_model("mlp", (1, 8, 8), 10), data, from_checkpoint=False)
    assert first.source == "trained"
    assert cache_path(config, first.model, data).is_file()
    torch.manual_seed(1)  # other initial weights: the cache must still win
    second = prepare_baseline(
        config, build_model("mlp", (1, 8, 8), 10), data, from_checkpoint=False
    )
    assert second.source == "cache"
    assert second.val_accuracy == first.val_accuracy
    assert torch.equal(second.train_logits, first.train_logits)
    assert second.train_logits.shape == (len(data.train_x), 10)
    assert not any(p.requires_grad for p in second.model.parameters())
    assert first.float32_bytes == 4 * sum(p.numel() for p in first.model.parameters())


def test_the_cache_key_changes_with_everything_that_shapes_the_weights() -> None:
    config = build_config(None, {"teacher": {"epochs": 3}})
    data = load_data("digits")
    model = build_model("mlp", (1, 8, 8), 10)
    key = cache_key(config, model, data)
    assert key == cache_key(config, build_model("mlp", (1, 8, 8), 10), data)
    longer = dataclasses.replace(config, teacher=TeacherConfig(epochs=4))
    assert cache_key(longer, model, data) != key
    assert cache_key(dataclasses.replace(config, seed=1), model, data) != key
    assert cache_key(config, build_model("lenet300", (1, 8, 8), 10), data) != key
    fewer = dataclasses.replace(data, train_x=data.train_x[:-1], train_y=data.train_y[:-1])
    assert cache_key(config, model, fewer) != key


def test_searches_started_together_on_a_cold_cache_train_the_teacher_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without turns both trained it, into one temporary file."""
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    trainings = []
    real_fit = teacher.fit

    def counted_fit(*args: Any, **kwargs: Any) -> Any:
        trainings.append(threading.get_ident())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(teacher, "fit", counted_fit)
    config = build_config(None, {"teacher": {"epochs": 3}})
    data = load_data("digits")
    baselines: list[Baseline] = []

    def search() -> None:
        model = build_model("mlp", (1, 8, 8), 10)
        baselines.append(prepare_baseline(config, model, data, from_checkpoint=False))

    assert at_once(search, workers=2) == []
    assert len(trainings) == 1
    assert sorted(b.source for b in baselines) == ["cache", "trained"]
    assert torch.equal(baselines[0].train_logits, baselines[1].train_logits)
