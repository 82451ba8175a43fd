"""Built-in models, user factories (``file.py:factory`` / ``package.module:factory``) and
checkpoints.

Layers are attributes with short names (``fc1``, ``conv2``) because their qualified names are
the addresses a search space uses for per-layer bits and prune ratios.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from autocompress._imports import first_line, load_callable
from autocompress.errors import ModelError

BUILTIN_MODELS: tuple[str, ...] = ("mlp", "lenet300", "lenet5")
COMPRESSIBLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)

_UNKNOWN_MODEL = (
    "unknown model '{spec}'; built-ins are mlp, lenet300, lenet5, "
    "or use 'file.py:factory' / 'package.module:factory'"
)


class MLP(nn.Module):
    """Two hidden ReLU layers on the flattened input (``mlp`` and LeNet-300-100)."""

    def __init__(self, in_features: int, hidden: tuple[int, int], num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(self.flatten(x)))
        return self.fc3(torch.relu(self.fc2(x)))


class LeNet5(nn.Module):
    """Caffe's LeNet-5: no ReLU after the convolutions, only after fc1 (431,080 params at 28x28).

    Inputs whose smaller spatial side is under 16 (the 8x8 digits) get padding=2 on both
    convolutions, since two valid 5x5 convolutions with pooling do not fit them. The flatten
    size comes from a dummy forward, so any input size that fits works.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        padding = 2 if min(height, width) < 16 else 0
        self.conv1 = nn.Conv2d(channels, 20, 5, padding=padding)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5, padding=padding)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        with torch.no_grad():
            flat = self._features(torch.zeros(1, *input_shape)).shape[1]
        self.fc1 = nn.Linear(flat, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool2(self.conv2(self.pool1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self._features(x))))


def build_model(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a built-in or user model and check it on a dummy batch before any training.

    Checking here turns a shape bug in a user factory into a one-line error at start-up
    instead of a traceback in the middle of a study.
    """
    input_shape = tuple(input_shape)
    if num_classes < 1:
        raise ModelError("model", f"num_classes must be at least 1; got {num_classes}")
    if spec in BUILTIN_MODELS:
        model = _build_builtin(spec, input_shape, num_classes)
    elif ":" in spec:
        model = _build_user(spec, input_shape, num_classes)
    else:
        raise ModelError("model", _UNKNOWN_MODEL.format(spec=spec))
    _check_forward(model, spec, input_shape, num_classes)
    if not compressible_layers(model):
        raise ModelError(
            "model", f"'{spec}' has no nn.Linear or nn.Conv1d/Conv2d layer to compress"
        )
    return model


def canonical_model_spec(spec: str) -> str:
    """The spec with a factory file's path made absolute, so files built from it load anywhere
    on this machine, whatever the working directory."""
    source, sep, attr = spec.rpartition(":")
    if sep and source.endswith(".py"):
        return f"{Path(source).resolve()}:{attr}"
    return spec


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> layer for every Linear/Conv1d/Conv2d (grouped and depthwise too),
    in ``named_modules()`` order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, COMPRESSIBLE_TYPES)
    }


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict (or ``{"state_dict": ...}``) strictly; tensors only, never pickles."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("checkpoint", f"file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError("checkpoint", f"cannot read '{path}': {first_line(exc)}") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ModelError(
            "checkpoint",
            f"'{path}' is not a state_dict (a dict of tensors, or a dict with a 'state_dict' "
            f"key holding one); got {type(obj).__name__}",
        )
    problem = _mismatch(model.state_dict(), obj)
    if problem:
        raise ModelError("checkpoint", f"does not fit the model: {problem}")
    try:
        model.load_state_dict(obj, strict=True)
    except Exception as exc:
        raise ModelError("checkpoint", f"does not fit the model: {first_line(exc)}") from exc


def _build_builtin(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if spec == "lenet5":
        if len(input_shape) != 3:
            raise ModelError("model", f"lenet5 needs input of shape (C, H, W); got {input_shape}")
        try:
            return LeNet5((input_shape[0], input_shape[1], input_shape[2]), num_classes)
        except Exception as exc:
            raise ModelError(
                "model", f"'{spec}' fails on input of shape {input_shape}: {first_line(exc)}"
            ) from exc
    hidden = (256, 128) if spec == "mlp" else (300, 100)
    return MLP(math.prod(input_shape), hidden, num_classes)


def _build_user(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Call the factory, passing ``input_shape`` / ``num_classes`` only where it names them."""
    factory = load_callable(spec, "model", ModelError)
    kwargs = {
        key: value
        for key, value in (("input_shape", input_shape), ("num_classes", num_classes))
        if _accepts_keyword(factory, key)
    }
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise ModelError("model", f"factory '{spec}' raised {first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            "model", f"factory '{spec}' must return an nn.Module; got {type(model).__name__}"
        )
    return model


def _accepts_keyword(func: Callable[..., object], name: str) -> bool:
    try:
        parameter = inspect.signature(func).parameters.get(name)
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return parameter is not None and parameter.kind in keyword_kinds


def _check_forward(
    model: nn.Module, spec: str, input_shape: tuple[int, ...], num_classes: int
) -> None:
    """Run 2 zeros in eval mode on the model's device; the training mode is restored after."""
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape, device=device))
    except Exception as exc:
        raise ModelError(
            "model", f"'{spec}' fails on input of shape {input_shape}: {first_line(exc)}"
        ) from exc
    finally:
        model.train(was_training)
    expected = (2, num_classes)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != expected:
        raise ModelError(
            "model",
            f"'{spec}' gives the wrong logits for a batch of 2: "
            f"expected shape {expected}, got {got}",
        )


def _mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """One line on missing/unexpected keys (a few names each) and the first shape mismatch."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    for key, tensor in expected.items():
        if key in given and given[key].shape != tensor.shape:
            parts.append(
                f"{key} has shape {tuple(given[key].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} in the model"
            )
            break
    return "; ".join(parts)


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (+{len(names) - limit} more)"
