"""The probe passes: the output layer, and the inputs that are zero whatever the input."""

from __future__ import annotations

import torch
from torch import nn

from autocompress.probe import output_layer, zero_inputs
from autocompress.prune import prune_


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128, 5))


def test_output_layer_is_the_last_layer_computing_the_outputs() -> None:
    x = torch.randn(2, 3, 4, 4)
    assert output_layer(_net(), x) == "3"
    # a flatten or log-softmax after it is still the output layer
    conv_head = nn.Sequential(nn.Conv2d(3, 5, 4), nn.Flatten(), nn.LogSoftmax(dim=1))
    assert output_layer(conv_head, x) == "0"
    # a model ending in pooling over the layer's outputs has no output layer
    pooled = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert output_layer(pooled, x) is None
    net = _net().train()
    output_layer(net, x)
    zero_inputs(net, x)
    assert net.training and not any(m._forward_hooks for m in net.modules())


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_a_unit_pruned_empty_is_a_zero_input_of_the_next_layer() -> None:
    net = _mlp()
    with torch.no_grad():
        net[0].weight[1].mul_(1e-3)  # unit 1 of the first layer: the smallest weights
    prune_(net, {"0": 0.25})  # 6 of 24: all of unit 1
    zero = zero_inputs(net, torch.randn(2, 6))
    assert zero["2"].tolist() == [False, True, False, False]
    assert not zero["0"].any()


def test_a_unit_merely_off_for_the_examples_is_not_zero() -> None:
    """Unit 0 is off (negative pre-activation) for both examples, but it has weights: the
    probe's noise of both signs turns it on, so the next layer's weights on it stay."""
    net = _mlp()
    with torch.no_grad():
        net[0].weight[0] = torch.tensor([1.0, 1, 1, 1, 1, 1])
        net[0].bias[0] = -0.5
    example = -torch.ones(2, 6)
    assert bool((torch.relu(net[0](example))[:, 0] == 0).all())
    assert not zero_inputs(net, example)["2"].any()


def test_zero_channels_of_a_convolution_and_a_layer_called_twice() -> None:
    conv = nn.Conv2d(2, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight[2].zero_()
        conv.bias[2] = 0.0
    head = nn.Conv2d(4, 4, 1)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = conv, head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.head(torch.relu(self.conv(x)))
            return self.head(y)  # second call: channel 2 of y is not zero

    zero = zero_inputs(nn.Sequential(conv, nn.ReLU(), head), torch.randn(2, 2, 5, 5))
    assert zero["2"].tolist() == [False, False, True, False]
    assert not zero_inputs(Twice(), torch.randn(2, 2, 5, 5))["head"].any()


def test_the_probe_is_seeded_and_takes_integer_inputs() -> None:
    net = _mlp()
    prune_(net, {"0": 0.5, "2": 0.5})
    x = torch.randn(2, 6)
    first, second = zero_inputs(net, x), zero_inputs(net, x)
    assert all(torch.equal(first[name], second[name]) for name in first)
    embed = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    assert output_layer(embed, torch.tensor([[1, 2, 3]])) == "1"


def test_an_emptied_channel_that_reaches_the_next_layer_as_a_constant_is_not_zero() -> None:
    """After BatchNorm an emptied channel is its shift, after a sigmoid 0.5: the next layer's
    weights there add a constant, so they are not dropped; after a ReLU that clips the shift
    to zero they are."""
    conv = nn.Conv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight[1].zero_()
        conv.bias[1] = 0.0
    norm = nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.0, 0.7, 0.0]))
    x = torch.randn(2, 2, 4, 4)
    for after, zero in [(nn.Identity(), True), (nn.Sigmoid(), False), (nn.ReLU(), True)]:
        net = nn.Sequential(conv, after, nn.Conv2d(3, 2, 1))
        assert zero_inputs(net, x)["2"].tolist() == [False, zero, False]
    shifted = nn.Sequential(conv, norm, nn.Conv2d(3, 2, 1))
    assert not zero_inputs(shifted, x)["2"].any()
    with torch.no_grad():
        norm.bias[1] = -0.7
    clipped = nn.Sequential(conv, norm, nn.ReLU(), nn.Conv2d(3, 2, 1))
    assert zero_inputs(clipped, x)["3"].tolist() == [False, True, False]


def test_an_unbatched_convolution_call_is_left_alone() -> None:
    class Unbatched(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 1)
            self.head = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.stack([self.conv(sample) for sample in x])  # (C, H, W) calls
            return self.head(y.flatten(1))

    net = Unbatched()
    with torch.no_grad():
        net.conv.weight[1].zero_()
        net.conv.bias[1] = 0.0
    zero = zero_inputs(net, torch.randn(2, 2, 4, 4))
    assert not zero["conv"].any()
    assert not zero["head"].any()  # nothing claimed where the marks could not be placed


def test_a_model_that_refuses_nans_gets_no_zero_inputs() -> None:
    class Checked(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self[0](x)
            if not bool(torch.isfinite(y).all()):
                raise ValueError("non-finite activations")
            return self[1](torch.relu(y))

    net = Checked(nn.Linear(4, 3), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight[1].zero_()
        net[0].bias[1] = 0.0
    x = torch.randn(2, 4)
    assert output_layer(net, x) == "1"
    assert not any(flags.any() for flags in zero_inputs(net, x).values())
