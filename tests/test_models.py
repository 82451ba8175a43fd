"""Models: built-ins, user factories (file and module forms) and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from autocompress.errors import ModelError
from autocompress.models import (
    BUILTIN_MODELS,
    MLP,
    LeNet5,
    build_model,
    compressible_layers,
    load_checkpoint,
)

SHAPES = [(1, 8, 8), (1, 28, 28)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_error(spec: str, input_shape: tuple[int, ...] = (1, 8, 8), classes: int = 10) -> str:
    with pytest.raises(ModelError) as info:
        build_model(spec, input_shape, classes)
    message = str(info.value)
    assert message.startswith("model: ")
    assert "\n" not in message
    return message


def checkpoint_error(model: nn.Module, path: Path) -> str:
    with pytest.raises(ModelError) as info:
        load_checkpoint(model, path)
    message = str(info.value)
    assert message.startswith("checkpoint: ")
    assert "\n" not in message
    return message


# --- built-ins ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_MODELS)
@pytest.mark.parametrize("shape", SHAPES)
def test_builtin_logits(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10)
    assert model.training  # the check forward runs in eval mode and restores the mode
    assert model(torch.randn(5, *shape)).shape == (5, 10)


def test_parameter_counts_at_28x28() -> None:
    assert n_params(build_model("lenet5", (1, 28, 28), 10)) == 431_080
    assert n_params(build_model("lenet300", (1, 28, 28), 10)) == 266_610
    assert n_params(build_model("mlp", (1, 28, 28), 10)) == 784 * 256 + 256 + 256 * 128 + 128 + 1290


def test_lenet5_pads_small_inputs_only() -> None:
    small = build_model("lenet5", (1, 8, 8), 10)
    large = build_model("lenet5", (1, 28, 28), 10)
    assert isinstance(small, LeNet5)
    assert isinstance(large, LeNet5)
    assert small.conv1.padding == (2, 2)
    assert large.conv1.padding == (0, 0)
    assert large.fc1.in_features == 800


def test_mlps_accept_any_shape() -> None:
    assert build_model("mlp", (64,), 3)(torch.randn(4, 64)).shape == (4, 3)
    assert build_model("lenet300", (3, 4, 5), 2)(torch.randn(4, 3, 4, 5)).shape == (4, 2)


@pytest.mark.parametrize(
    ("name", "layers"),
    [
        ("mlp", ["fc1", "fc2", "fc3"]),
        ("lenet300", ["fc1", "fc2", "fc3"]),
        ("lenet5", ["conv1", "conv2", "fc1", "fc2"]),
    ],
)
def test_compressible_layer_names(name: str, layers: list[str]) -> None:
    assert list(compressible_layers(build_model(name, (1, 28, 28), 10))) == layers


def test_lenet5_needs_chw() -> None:
    assert "(C, H, W)" in model_error("lenet5", (64,))


def test_unknown_model() -> None:
    assert model_error("resnet") == (
        "model: unknown model 'resnet'; built-ins are mlp, lenet300, lenet5, "
        "or use 'file.py:factory' / 'package.module:factory'"
    )


# --- user factories -------------------------------------------------------------------------

FACTORIES = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.grouped = nn.Conv2d(channels, channels, 3, padding=1, groups=4)
        self.bn1 = nn.BatchNorm2d(channels)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = torch.relu(self.bn1(self.grouped(x)))
        return torch.relu(x + self.bn2(self.depthwise(out)))


class ResNetish(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.block = Block(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.block(self.stem(x))).flatten(1))


def resnetish(input_shape, num_classes):
    return ResNetish(input_shape[0], num_classes)


seen = {}


def classes_only(num_classes=2):
    seen["num_classes"] = num_classes
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def no_args():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def not_a_module():
    return "a string"


def wrong_classes():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))


def wrong_input():
    return nn.Sequential(nn.Flatten(), nn.Linear(99, 10))


def no_layers():
    return nn.Sequential(nn.Flatten(), nn.Unflatten(1, (1, 64)), nn.AdaptiveAvgPool1d(10),
                         nn.Flatten())


def raises():
    raise ValueError("bad factory\\nsecond line")


NOT_CALLABLE = 1
"""


@pytest.fixture()
def factory_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_models.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    return "my_models.py"


def test_factory_with_residual_bn_grouped_and_depthwise(factory_file: str) -> None:
    model = build_model(f"{factory_file}:resnetish", (1, 8, 8), 10)
    layers = compressible_layers(model)
    assert list(layers) == ["stem", "block.grouped", "block.depthwise", "head"]
    assert layers["block.grouped"].groups == 4
    assert layers["block.depthwise"].groups == 8
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_factory_receives_only_the_keywords_it_names(factory_file: str) -> None:
    model = build_model(f"{factory_file}:classes_only", (1, 8, 8), 5)  # its default is 2
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert build_model(f"{factory_file}:no_args", (1, 8, 8), 10) is not None


def test_module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "usermodels_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("usermodels_pkg.nets:classes_only", (1, 8, 8), 4)
    import usermodels_pkg.nets as nets

    assert nets.seen["num_classes"] == 4
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)


@pytest.mark.parametrize(
    ("attr", "fragment"),
    [
        ("not_a_module", "must return an nn.Module; got str"),
        ("wrong_classes", "expected"),
        ("wrong_input", "fails on input of shape (1, 8, 8)"),
        ("no_layers", "has no nn.Linear or nn.Conv1d/Conv2d layer to compress"),
        ("raises", "bad factory"),
        ("missing", "has no attribute 'missing'"),
        ("NOT_CALLABLE", "not a callable"),
    ],
)
def test_factory_failures(factory_file: str, attr: str, fragment: str) -> None:
    assert fragment in model_error(f"{factory_file}:{attr}")


def test_wrong_output_shape_names_expected_and_got(factory_file: str) -> None:
    message = model_error(f"{factory_file}:wrong_classes")
    assert "(2, 10)" in message
    assert "(2, 7)" in message


def test_missing_factory_file_and_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "does not exist" in model_error("nope.py:factory")
    assert "cannot import module" in model_error("no_such_pkg_xyz.nets:factory")
    assert "must look like" in model_error("nets.py:")


# --- checkpoints ----------------------------------------------------------------------------


@pytest.fixture()
def lenet300() -> nn.Module:
    return build_model("lenet300", (1, 8, 8), 10)


def test_checkpoint_round_trip(lenet300: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(lenet300.state_dict(), path)
    fresh = build_model("lenet300", (1, 8, 8), 10)
    load_checkpoint(fresh, path)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(fresh(x), lenet300(x))


def test_checkpoint_nested_state_dict(lenet300: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": lenet300.state_dict(), "epoch": 3}, path)
    fresh = build_model("lenet300", (1, 8, 8), 10)
    load_checkpoint(fresh, str(path))
    assert isinstance(fresh, MLP)
    assert isinstance(lenet300, MLP)
    assert torch.equal(fresh.fc1.weight, lenet300.fc1.weight)


def test_checkpoint_wrong_shapes(lenet300: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save(build_model("lenet300", (1, 28, 28), 10).state_dict(), path)
    message = checkpoint_error(lenet300, path)
    assert message.startswith("checkpoint: does not fit the model: fc1.weight has shape")
    assert "(300, 784)" in message
    assert "(300, 64)" in message


def test_checkpoint_missing_and_unexpected_keys(lenet300: nn.Module, tmp_path: Path) -> None:
    state = lenet300.state_dict()
    del state["fc1.weight"], state["fc1.bias"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    assert checkpoint_error(lenet300, path) == (
        "checkpoint: does not fit the model: missing fc1.weight, fc1.bias; unexpected extra.weight"
    )


def test_checkpoint_many_missing_keys_are_abbreviated(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    torch.save({"x": torch.zeros(1)}, path)
    message = checkpoint_error(build_model("lenet5", (1, 8, 8), 10), path)
    assert "missing conv1.weight, conv1.bias, conv2.weight (+5 more)" in message


@pytest.mark.parametrize("payload", [[1, 2, 3], {"fc1.weight": 3}, torch.zeros(2)])
def test_checkpoint_not_a_state_dict(lenet300: nn.Module, tmp_path: Path, payload: object) -> None:
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    assert "is not a state_dict" in checkpoint_error(lenet300, path)


def test_checkpoint_unreadable_and_missing(lenet300: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    assert "cannot read" in checkpoint_error(lenet300, path)
    assert "does not exist" in checkpoint_error(lenet300, tmp_path / "nope.pt")
