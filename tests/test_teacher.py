from __future__ import annotations

import dataclasses

import torch

from autocompress.config import TeacherConfig, build_config
from autocompress.data import load_data
from autocompress.models import build_model
from autocompress.teacher import cache_key, cache_path, prepare_baseline


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
