"""The baseline (teacher): loaded from a checkpoint, or trained once and cached on disk.

The cache key hashes everything that determines the trained weights (model spec and
architecture, data content, training settings, seed, torch version), so a second search on
the same model and data starts fine-tuning at once, and any change retrains. Searches started
together on a cold cache take turns (``autocompress.turns``): one trains, the others load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from autocompress.config import ExperimentConfig
from autocompress.data import DataSplits
from autocompress.finetune import accuracy, fit, predict_logits
from autocompress.size import float32_bytes
from autocompress.turns import file_turn


@dataclass(frozen=True)
class Baseline:
    model: nn.Module  # eval mode, on the device; never modified by trials
    val_accuracy: float
    float32_bytes: int
    source: str  # "checkpoint", "cache" or "trained"
    train_logits: torch.Tensor  # teacher logits on the training split, computed once per run


def cache_dir() -> Path:
    """``$AUTOCOMPRESS_CACHE`` or ``~/.cache/autocompress``: shared by every study."""
    root = os.environ.get("AUTOCOMPRESS_CACHE") or Path.home() / ".cache" / "autocompress"
    return Path(root) / "teachers"


def cache_key(config: ExperimentConfig, model: nn.Module, data: DataSplits) -> str:
    spec = {
        "model": config.model,
        "architecture": repr(model),
        "data": data.fingerprint(),
        "teacher": asdict(config.teacher),
        "seed": config.seed,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(config: ExperimentConfig, model: nn.Module, data: DataSplits) -> Path:
    return cache_dir() / f"{cache_key(config, model, data)}.pt"


def _train(config: ExperimentConfig, model: nn.Module, data: DataSplits) -> None:
    torch.manual_seed(config.seed)
    fit(
        model,
        (data.train_x, data.train_y),
        (data.val_x, data.val_y),
        epochs=config.teacher.epochs,
        lr=config.teacher.lr,
        batch_size=config.teacher.batch_size,
        seed=config.seed,
        weight_decay=config.teacher.weight_decay,
        cuda_graph=config.cuda_graphs,
    )


def prepare_baseline(
    config: ExperimentConfig, model: nn.Module, data: DataSplits, from_checkpoint: bool
) -> Baseline:
    """``model`` (on the device, with any checkpoint already loaded) becomes the teacher."""
    source = "checkpoint"
    if not from_checkpoint:
        path = cache_path(config, model, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_turn(path):  # searches started together: one trains, the others load it
            if path.is_file():
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                source = "cache"
            else:
                _train(config, model, data)
                tmp = path.with_suffix(".tmp")
                torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
                tmp.replace(path)  # atomic: a crash never leaves a half-written cache entry
                source = "trained"
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Baseline(
        model=model,
        val_accuracy=accuracy(model, data.val_x, data.val_y),
        float32_bytes=float32_bytes(model),
        source=source,
        train_logits=predict_logits(model, data.train_x),
    )
