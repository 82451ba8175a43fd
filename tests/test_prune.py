"""Magnitude pruning: exact zero counts, smallest magnitudes, zeros that stay zero."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn
from torch.nn.utils import parametrize

from autocompress.errors import ConfigError
from autocompress.probe import zero_inputs
from autocompress.prune import (
    DeadChannelBias,
    GradualPruning,
    WeightMask,
    cubic_ratio,
    drop_zero_inputs_,
    magnitude_mask,
    prune_,
)


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )


def _assert_smallest_zeroed(weight: torch.Tensor, mask: torch.Tensor) -> None:
    mags = weight.detach().abs().reshape(-1)
    zeroed = mags[mask.reshape(-1) == 0]
    kept = mags[mask.reshape(-1) == 1]
    if zeroed.numel() and kept.numel():
        assert zeroed.max() <= kept.min()


@pytest.mark.parametrize("shape", [(7,), (3, 5), (8, 3, 3, 3), (8, 1, 3, 3), (4, 2, 5)])
@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 0.333, 0.5, 0.77, 0.9, 0.99])
def test_magnitude_mask_exact_count_and_smallest(shape: tuple[int, ...], ratio: float) -> None:
    torch.manual_seed(0)
    weight = torch.randn(shape)
    mask = magnitude_mask(weight, ratio)
    assert mask.shape == weight.shape
    assert mask.dtype == weight.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int((mask == 0).sum()) == round(ratio * weight.numel())
    _assert_smallest_zeroed(weight, mask)


@settings(max_examples=200, deadline=None)
@given(
    values=arrays(np.float32, st.integers(1, 60), elements=st.integers(-3, 3).map(float)),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
)
def test_magnitude_mask_with_ties_is_exact_and_deterministic(
    values: np.ndarray, ratio: float
) -> None:
    weight = torch.from_numpy(values)
    mask = magnitude_mask(weight, ratio)
    assert int((mask == 0).sum()) == round(ratio * weight.numel())
    _assert_smallest_zeroed(weight, mask)
    assert torch.equal(mask, magnitude_mask(weight.clone(), ratio))
    # the mask of a stable sort: of equal magnitudes, the lowest positions are zeroed first
    order = torch.argsort(weight.abs(), stable=True)[: round(ratio * weight.numel())]
    assert torch.equal(mask, torch.ones_like(weight).index_fill_(0, order, 0.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_magnitude_mask_is_exact_in_every_dtype(dtype: torch.dtype) -> None:
    """numpy selects the threshold for the dtypes it has; bfloat16 falls back to kthvalue."""
    torch.manual_seed(0)
    weight = torch.randn(40, 30).to(dtype)  # half precision: many equal magnitudes
    for ratio in (0.3, 0.9, 0.999):
        mask = magnitude_mask(weight, ratio)
        assert mask.dtype == dtype
        assert int((mask == 0).sum()) == round(ratio * weight.numel())
        order = torch.argsort(weight.abs().reshape(-1), stable=True)[: round(ratio * 1200)]
        assert torch.equal(mask.reshape(-1), torch.ones(1200, dtype=dtype).index_fill_(0, order, 0))


def test_magnitude_mask_rejects_ratio_outside_unit_interval() -> None:
    with pytest.raises(ValueError):
        magnitude_mask(torch.ones(3), 1.5)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(10, 6),
        nn.Conv1d(4, 6, 3),
        nn.Conv2d(3, 6, 3),
        nn.Conv2d(6, 6, 3, groups=3),
        nn.Conv2d(6, 6, 3, groups=6),
    ],
    ids=["linear", "conv1d", "conv2d", "grouped", "depthwise"],
)
@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.9])
def test_prune_layer_exact_zeros(layer: nn.Module, ratio: float) -> None:
    model = nn.Sequential(copy.deepcopy(layer))
    before = model[0].weight.detach().clone()
    prune_(model, {"0": ratio})
    weight = model[0].weight
    assert int((weight == 0).sum()) == round(ratio * weight.numel())
    mask = model[0].parametrizations.weight[0].mask
    assert torch.equal(weight, before * mask)
    _assert_smallest_zeroed(before, mask)


def test_ratio_zero_registers_nothing() -> None:
    model = _net()
    prune_(model, {"0": 0.0})
    assert not parametrize.is_parametrized(model[0])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_zeros_stay_zero_through_training(optimizer: str) -> None:
    torch.manual_seed(1)
    model = _net()
    prune_(model, {"0": 0.5, "3": 0.3, "6": 0.8})
    masks = {i: model[i].parametrizations.weight[0].mask.clone() for i in (0, 3, 6)}
    before = {i: model[i].weight.detach().clone() for i in masks}
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-2)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=1e-2)
    x, y = torch.randn(16, 3, 4, 4), torch.randint(0, 5, (16,))
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for i, mask in masks.items():
        original = model[i].parametrizations.weight.original
        assert original.grad is not None
        assert torch.all(model[i].weight[mask == 0] == 0)
        assert int((model[i].weight == 0).sum()) >= int((mask == 0).sum())
        # the kept weights did train
        assert not torch.equal(model[i].weight[mask == 1], before[i][mask == 1])


def test_mask_in_state_dict_and_round_trip() -> None:
    torch.manual_seed(2)
    model = _net()
    prune_(model, {"0": 0.4, "6": 0.7})
    state = model.state_dict()
    assert "0.parametrizations.weight.0.mask" in state
    assert "0.parametrizations.weight.original" in state
    torch.manual_seed(3)
    fresh = _net()
    prune_(fresh, {"0": 0.4, "6": 0.7})
    fresh.load_state_dict(state)
    model.eval()
    fresh.eval()
    x = torch.randn(4, 3, 4, 4)
    assert torch.equal(model(x), fresh(x))
    clone = copy.deepcopy(model)
    assert torch.equal(clone(x), model(x))
    assert isinstance(clone[0].parametrizations.weight[0], WeightMask)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_bad_ratio_is_config_error(ratio: float) -> None:
    with pytest.raises(ConfigError) as info:
        prune_(_net(), {"6": ratio})
    assert info.value.field == "prune/6"
    assert str(info.value) == "prune/6: ratio must be in [0, 1)"


@pytest.mark.parametrize("name", ["nope", "1", "2"])
def test_unknown_or_uncompressible_layer_is_config_error(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        prune_(_net(), {name: 0.5})
    assert info.value.field == f"prune/{name}"
    assert "\n" not in str(info.value)
    assert "Linear, Conv1d or Conv2d" in str(info.value)


def test_pruning_twice_is_config_error() -> None:
    model = _net()
    prune_(model, {"0": 0.5})
    with pytest.raises(ConfigError, match="already"):
        prune_(model, {"0": 0.5})


def test_cubic_ratio_rises_from_zero_to_final_and_front_loads() -> None:
    assert cubic_ratio(0.9, 0.0) == 0.0
    assert cubic_ratio(0.9, 1.0) == pytest.approx(0.9)
    assert cubic_ratio(0.9, 2.0) == pytest.approx(0.9)  # clamped past the ramp
    assert cubic_ratio(0.9, 0.5) == pytest.approx(0.9 * 7 / 8)  # most of it in the first half


def test_gradual_pruning_grows_monotone_masks_to_the_exact_planned_count() -> None:
    torch.manual_seed(0)
    net = _net()
    ratios = {"0": 0.5, "3": 0.75, "6": 0.9}
    prune_(net, ratios)
    layers = {name: net.get_submodule(name) for name in ratios}
    planned = {name: int((layer.weight == 0).sum()) for name, layer in layers.items()}
    schedule = GradualPruning(net, ramp_steps=20, updates=4)
    assert all(int((layer.weight == 0).sum()) == 0 for layer in layers.values())  # reset

    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(16, 3, 4, 4)
    y = torch.randint(0, 5, (16,))
    previous = {name: torch.ones_like(layer.weight) for name, layer in layers.items()}
    zeros_seen = []
    for step in range(1, 31):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        schedule(step)
        for name, layer in layers.items():
            kept = (layer.weight != 0).float()
            assert bool((kept <= previous[name]).all()), "a pruned weight came back"
            previous[name] = kept
        zeros_seen.append(int((layers["6"].weight == 0).sum()))
        if step >= 20:  # the ramp is over: exactly the planned counts, and they stay
            assert {n: int((lay.weight == 0).sum()) for n, lay in layers.items()} == planned
    assert zeros_seen[4] < zeros_seen[9] < zeros_seen[14] < zeros_seen[19]  # grew in steps
    assert zeros_seen[0] == 0  # nothing removed before the first update


def test_bias_of_a_channel_pruned_empty_is_zero_and_follows_the_mask() -> None:
    """A channel without weights outputs a constant that the next layer's bias can absorb;
    ``DeadChannelBias`` zeroes its bias, through deep copies and while masks grow."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0, 6, 7], [0.1, 0.2, 0.3], [4, 0.05, 8], [9, 1, 2]]))
        layer.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    net = nn.Sequential(layer)
    prune_(net, {"0": 0.5})  # 6 smallest of 12: row 1 entirely, 0.05 and 1 elsewhere
    assert torch.equal(layer.weight[1], torch.zeros(3))
    assert torch.equal(layer.bias, torch.tensor([1.0, 0.0, 3.0, 4.0]))
    assert isinstance(layer.parametrizations.bias[0], DeadChannelBias)
    clone = copy.deepcopy(net)
    clone_mask = clone[0].parametrizations.weight[0]
    assert clone[0].parametrizations.bias[0].weight_mask is clone_mask  # not the original's
    clone_mask.mask[0].zero_()  # the clone's row 0 now empty too: its bias follows
    assert torch.equal(clone[0].bias, torch.tensor([0.0, 0.0, 3.0, 4.0]))
    assert torch.equal(layer.bias, torch.tensor([1.0, 0.0, 3.0, 4.0]))
    GradualPruning(net, ramp_steps=10)  # resets the mask to all ones: every bias is back
    assert torch.equal(layer.bias, torch.tensor([1.0, 2.0, 3.0, 4.0]))


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 8),
    ratio=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_mask_keeping_rows_keeps_each_rows_largest_and_otherwise_the_exact_count(
    rows: int, cols: int, ratio: float, data: st.DataObject
) -> None:
    values = data.draw(arrays(np.float32, (rows, cols), elements=st.integers(-3, 3).map(float)))
    weight = torch.from_numpy(values)
    mask = magnitude_mask(weight, ratio, keep_rows=True)
    assert bool((mask != 0).any(dim=1).all()), "a row was emptied"
    assert int((mask == 0).sum()) == min(round(ratio * weight.numel()), rows * (cols - 1))
    assert torch.equal(mask, magnitude_mask(weight.clone(), ratio, keep_rows=True))
    # each row's kept weights include one of its largest magnitudes; the other zeros are
    # the smallest of what is left
    largest = weight.abs().amax(dim=1)
    assert bool(((weight.abs() * mask).amax(dim=1) == largest).all())


def test_output_layer_rows_survive_one_shot_and_gradual_pruning() -> None:
    """LeNet-300-100's fc3 at 98%: 20 of 1,000 weights for 10 classes. A layer-wide magnitude
    mask may leave a class without weights (its logit then a constant); the output layer's
    masks never do, neither one-shot nor along ``GradualPruning``'s ramp."""
    torch.manual_seed(0)
    head = nn.Linear(100, 10)
    with torch.no_grad():
        head.weight[3] *= 0.01  # class 3's weights all smaller than any other's
    plain = nn.Sequential(copy.deepcopy(head))
    prune_(plain, {"0": 0.98})
    assert not bool(plain[0].weight[3].any())  # without keep_rows: class 3 emptied
    net = nn.Sequential(copy.deepcopy(head))
    prune_(net, {"0": 0.98}, keep_rows=["0"])
    assert int((net[0].weight == 0).sum()) == 980
    assert bool((net[0].weight != 0).any(dim=1).all())
    schedule = GradualPruning(net, ramp_steps=10, updates=5)
    for step in range(1, 11):
        schedule(step)
        assert bool((net[0].weight != 0).any(dim=1).all()), f"a row emptied at step {step}"
    assert int((net[0].weight == 0).sum()) == 980


def _chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1, groups=3),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def test_weights_reading_zero_inputs_are_dropped_and_the_function_is_unchanged() -> None:
    net = _chain()
    with torch.no_grad():
        net[0].weight[1].mul_(1e-4)  # conv channel 1: pruned empty
        net[4].weight[2:5].mul_(1e-4)  # units 2-4 of the first linear layer: pruned empty
    prune_(net, {"0": 1 / 6, "4": 0.375}, keep_rows=["6"])
    x = torch.randn(16, 2, 4, 4)
    before = net.eval()(x)
    zero = zero_inputs(net, torch.randn(2, 2, 4, 4))
    assert zero["2"].tolist() == [False, True, False, False, False, False]
    # units 2-4 only: another unit the ReLU keeps off for every probe still has weights
    assert zero["6"].tolist() == [False, False, True, True, True, False, False, False]
    dropped = drop_zero_inputs_(net, zero)
    # grouped conv (3 groups of 2 channels): channel 1 is read by output channels 0 and 1 only
    conv = net[2].weight
    assert bool((conv[0:2, 1] == 0).all()) and bool((conv[2:, :] != 0).all())
    assert dropped["2"] == 2 * 9  # net[2] was unpruned: it got a mask
    assert isinstance(net[2].parametrizations.weight[0], WeightMask)
    # the grouped conv's channels 0 and 1 also read channel 0: not zero, nothing dropped after
    assert not zero["4"].any() and "4" not in dropped
    assert bool((net[6].weight[:, 2:5] == 0).all())
    assert dropped["6"] == 9
    assert torch.allclose(net(x), before, atol=1e-6)


def test_a_row_reading_only_zeros_keeps_its_largest_weight_and_its_bias() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2, 3], [1e-3, 1e-3, 1e-3], [4, 5, 6]]))
        net[2].weight.copy_(torch.tensor([[0.5, 0.9, 0.7], [0.0, 0.3, 0.2]]))
        net[2].bias.copy_(torch.tensor([1.0, 2.0]))
    prune_(net, {"0": 3 / 9, "2": 2 / 6})  # unit 1 emptied; row 1 of net[2] keeps 0.3 only
    x = torch.randn(8, 3)
    before = net(x)
    dropped = drop_zero_inputs_(net, zero_inputs(net, x[:2]))
    assert dropped == {"2": 1}  # 0.9 of row 0; row 1's 0.3 stays, so does its bias
    assert torch.equal(
        net[2].weight != 0, torch.tensor([[True, False, True], [False, True, False]])
    )
    assert torch.equal(net[2].bias, torch.tensor([1.0, 2.0]))
    assert torch.allclose(net(x), before)
