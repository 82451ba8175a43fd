"""Structured pruning: channels really removed, with their dependants, by magnitude."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autocompress.errors import ConfigError
from autocompress.models import build_model
from autocompress.prune import prune_
from autocompress.quantize import quantize_
from autocompress.structured import prune_channels_

LENET_INPUT = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
BLOCK_INPUT = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class Block(nn.Module):
    """BatchNorm, two residual adds (stem + a + pw share one channel space), a grouped conv
    (4 groups) feeding a depthwise conv, and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.bna = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pw = nn.Conv2d(32, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + self.bna(self.a(x))
        x = x + self.pw(torch.relu(self.dw(self.grouped(x))))
        return self.fc(x.mean((2, 3)))


class TwoHeads(nn.Module):
    """The logits are the sum of two linear layers: both are output layers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head_a = nn.Linear(16, 4)
        self.head_b = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(x))
        return self.head_a(h) + self.head_b(h)


class Concat(nn.Module):
    """Two convs concatenated into a third (grouped if ``groups`` > 1); ``split`` hard-codes
    the third's 10 channels."""

    def __init__(self, split: bool = False, groups: int = 1) -> None:
        super().__init__()
        self.split = split
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.c = nn.Conv2d(14, 10, 1, groups=groups)
        self.fc = nn.Linear(10 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(torch.cat([self.a(x), self.b(x)], 1))
        if self.split:
            first, second = torch.split(y, [5, 5], 1)
            y = torch.cat([second, first], 1)
        return self.fc(y.flatten(1))


def _lenet5() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lenet5", (1, 28, 28), 10)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet5_half_channels_exact_shapes_and_parameter_count() -> None:
    model = _lenet5()
    conv1 = model.conv1
    got = prune_channels_(model, {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5}, LENET_INPUT)
    assert got == {"conv1": (20, 10), "conv2": (50, 25), "fc1": (500, 250)}
    assert model.conv1 is conv1  # module identity kept, so qualified names stay valid
    assert model.conv2.weight.shape == (25, 10, 5, 5)
    assert model.fc1.weight.shape == (250, 400)
    assert model.fc2.weight.shape == (10, 250)
    conv1_p = 10 * 1 * 5 * 5 + 10
    conv2_p = 25 * 10 * 5 * 5 + 25
    fc1_p = 25 * 4 * 4 * 250 + 250
    fc2_p = 250 * 10 + 10
    assert _params(model) == conv1_p + conv2_p + fc1_p + fc2_p == 109_295
    assert model(LENET_INPUT).shape == (2, 10)


@pytest.mark.parametrize(
    ("spec", "shape", "ratios", "expected"),
    [
        ("mlp", (64,), {"fc1": 0.25, "fc2": 0.9}, {"fc1": (256, 192), "fc2": (128, 13)}),
        ("lenet300", (1, 28, 28), {"fc1": 0.5, "fc2": 0.3}, {"fc1": (300, 150), "fc2": (100, 70)}),
    ],
)
def test_mlps_shrink_and_run(
    spec: str,
    shape: tuple[int, ...],
    ratios: dict[str, float],
    expected: dict[str, tuple[int, int]],
) -> None:
    model = build_model(spec, shape, 10)
    assert prune_channels_(model, ratios, torch.randn(3, *shape)) == expected
    assert model(torch.randn(5, *shape)).shape == (5, 10)


def test_keeps_the_largest_channels_and_slices_the_consumer_to_match() -> None:
    model = build_model("mlp", (64,), 10)
    fc1_w, fc2_w = model.fc1.weight.detach().clone(), model.fc2.weight.detach().clone()
    prune_channels_(model, {"fc1": 0.25}, torch.randn(2, 64))
    kept = sorted(torch.argsort(fc1_w.norm(dim=1), descending=True)[:192].tolist())
    assert torch.equal(model.fc1.weight, fc1_w[kept])
    assert torch.equal(model.fc2.weight, fc2_w[:, kept])


def test_block_coupled_groups_take_the_largest_ratio_in_either_order() -> None:
    for ratios in ({"a": 0.25, "stem": 0.5}, {"stem": 0.25, "a": 0.5}):
        model = Block()
        got = prune_channels_(model, ratios, BLOCK_INPUT)
        # stem, a and pw meet in residual adds: one group, pruned once at max(0.25, 0.5)
        assert got == {"stem": (16, 8), "a": (16, 8), "pw": (16, 8)}
        assert (model.bn.num_features, model.bna.num_features) == (8, 8)
        assert model.grouped.weight.shape == (32, 2, 3, 3)  # 4 groups of 2 inputs each
        assert model.fc.weight.shape == (10, 8)
        assert model(BLOCK_INPUT).shape == (2, 10)


def test_grouped_conv_loses_the_same_count_from_every_channel_group() -> None:
    model = Block()
    # 16 stem channels = 4 channel groups of 4 for the grouped conv: round(0.3 * 4) = 1 each
    assert prune_channels_(model, {"stem": 0.3}, BLOCK_INPUT)["stem"] == (16, 12)
    assert model.grouped.groups == 4 and model.grouped.in_channels == 12


def test_depthwise_conv_is_coupled_to_the_conv_feeding_it() -> None:
    model = Block()
    got = prune_channels_(model, {"dw": 0.5}, BLOCK_INPUT)
    assert got == {"grouped": (32, 16), "dw": (32, 16)}
    assert model.dw.groups == model.dw.in_channels == 16
    assert model.pw.in_channels == 16
    assert model(BLOCK_INPUT).shape == (2, 10)


def test_removing_dead_channels_keeps_the_outputs() -> None:
    """Channels that compute exact zeros score lowest; removing them (through BatchNorm,
    residual adds, a grouped and a depthwise conv) must leave the logits unchanged."""
    model = Block().eval()
    residual_dead = [c + 4 * g for g in range(4) for c in (1, 3)]  # same slots in each group
    inner_dead = list(range(0, 32, 2))
    with torch.no_grad():
        for conv, bn in ((model.stem, model.bn), (model.a, model.bna), (model.pw, None)):
            conv.weight[residual_dead] = 0
            conv.bias[residual_dead] = 0
            if bn is not None:
                bn.bias[residual_dead] = 0
                bn.running_mean[residual_dead] = 0
        for conv in (model.grouped, model.dw):
            conv.weight[inner_dead] = 0
            conv.bias[inner_dead] = 0
    expected = model(BLOCK_INPUT)
    got = prune_channels_(model, {"stem": 0.5, "grouped": 0.5}, BLOCK_INPUT)
    assert got["stem"] == (16, 8) and got["grouped"] == (32, 16)
    assert torch.all(model.stem.weight.flatten(1).abs().sum(1) > 0)
    torch.testing.assert_close(model(BLOCK_INPUT), expected)


def test_concatenated_layers_are_pruned_in_their_own_slices() -> None:
    model = Concat().eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():  # dead channels: removing them must not change the logits
        for conv, dead in ((model.a, [1, 3, 5, 7]), (model.b, [0, 2, 4])):
            conv.weight[dead] = 0
            conv.bias[dead] = 0
    expected = model(x)
    assert prune_channels_(model, {"a": 0.5, "b": 0.5}, x) == {"a": (8, 4), "b": (6, 3)}
    assert model.c.in_channels == 7
    torch.testing.assert_close(model(x), expected)


def test_a_grouped_conv_behind_a_concatenation_is_a_config_error() -> None:
    model = Concat(groups=2)
    with pytest.raises(ConfigError, match=r"^prune/a: channels reach a grouped convolution"):
        prune_channels_(model, {"a": 0.5}, torch.randn(2, 3, 4, 4))
    assert model.a.out_channels == 8


def test_a_forward_that_hard_codes_channel_counts_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^prune: the pruned model fails .*split_with_sizes"):
        prune_channels_(Concat(split=True), {"c": 0.4}, torch.randn(2, 3, 4, 4))


def test_same_teacher_and_ratios_give_identical_channels() -> None:
    teacher = _lenet5()
    one, two = copy.deepcopy(teacher), copy.deepcopy(teacher)
    prune_channels_(one, {"conv1": 0.4, "conv2": 0.6, "fc1": 0.7}, LENET_INPUT)
    prune_channels_(two, {"fc1": 0.7, "conv2": 0.6, "conv1": 0.4}, LENET_INPUT)
    a, b = one.state_dict(), two.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_masks_quantization_copies_and_state_dict_work_on_top() -> None:
    teacher = _lenet5()
    ratios = {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5}

    def student() -> nn.Module:
        model = copy.deepcopy(teacher)
        prune_channels_(model, ratios, LENET_INPUT)
        prune_(model, {"conv2": 0.5, "fc1": 0.9})
        quantize_(model, {"conv1": 4, "conv2": 8, "fc1": 4, "fc2": 8})
        return model

    trained = student()
    assert int((trained.fc1.weight == 0).sum()) >= round(0.9 * 250 * 400)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)  # stands in for fine-tuning
    out = trained(LENET_INPUT)
    assert out.shape == (2, 10)
    torch.testing.assert_close(copy.deepcopy(trained)(LENET_INPUT), out)
    rebuilt = student()
    rebuilt.load_state_dict(trained.state_dict())
    torch.testing.assert_close(rebuilt(LENET_INPUT), out)


def test_restores_training_mode_and_frozen_parameters_and_leaves_statistics() -> None:
    model = Block().train()
    for p in model.parameters():
        p.requires_grad_(False)
    prune_channels_(model, {"stem": 0.5}, BLOCK_INPUT)
    assert model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert int(model.bn.num_batches_tracked) == 0
    assert torch.equal(model.bn.running_mean, torch.zeros(8))


@pytest.mark.parametrize(
    ("model", "example", "ratios", "message"),
    [
        (_lenet5(), LENET_INPUT, {"fc2": 0.5}, "prune/fc2: 'fc2' is the output layer"),
        (TwoHeads(), torch.randn(2, 8), {"head_a": 0.5}, "prune/head_a: 'head_a' is the output"),
        (_lenet5(), LENET_INPUT, {"conv9": 0.5}, "prune/conv9: 'conv9' is not a Linear"),
        (_lenet5(), LENET_INPUT, {"pool1": 0.5}, "prune/pool1: 'pool1' is not a Linear"),
        (_lenet5(), LENET_INPUT, {"conv1": 1.0}, r"prune/conv1: ratio must be in \[0, 1\)"),
        (_lenet5(), LENET_INPUT, {"conv1": -0.1}, r"prune/conv1: ratio must be in \[0, 1\)"),
    ],
)
def test_bad_requests_are_config_errors_and_change_nothing(
    model: nn.Module, example: torch.Tensor, ratios: dict[str, float], message: str
) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="^" + message):
        prune_channels_(model, ratios, example)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_output_layer_error_comes_before_any_other_layer_changes() -> None:
    model = _lenet5()
    with pytest.raises(ConfigError, match="output layer"):
        prune_channels_(model, {"conv1": 0.5, "fc2": 0.5}, LENET_INPUT)
    assert model.conv1.out_channels == 20


def test_refuses_a_model_that_is_already_masked() -> None:
    model = _lenet5()
    prune_(model, {"fc1": 0.5})
    with pytest.raises(ConfigError, match="must come before masks"):
        prune_channels_(model, {"conv1": 0.5}, LENET_INPUT)


def test_zero_ratios_change_nothing() -> None:
    model = _lenet5()
    assert prune_channels_(model, {"conv1": 0.0, "fc2": 0.0}, LENET_INPUT) == {}
    assert _params(model) == 431_080
