"""Sparse validation products: the same logits as the dense pass, only for sparse linear layers,
and the model left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress import compress
from autocompress.finetune import predict_logits
from autocompress.models import build_model, compressible_layers
from autocompress.plan import CompressionPlan, LayerPlan
from autocompress.sparse_eval import sparse_linears

SHAPE = (1, 28, 28)


def student(keep: float, act_bits: int = 32) -> nn.Module:
    torch.manual_seed(0)
    teacher = build_model("lenet300", SHAPE, 10)
    layers = {
        name: LayerPlan(bits=4, prune=1 - keep, act_bits=act_bits)
        for name in compressible_layers(teacher)
    }
    return compress(teacher, CompressionPlan(layers=layers), torch.randn(2, *SHAPE))


def overridden(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if "forward" in vars(module)]


@pytest.mark.parametrize("act_bits", [32, 4])
def test_sparse_layers_give_the_dense_logits(act_bits: int) -> None:
    """fc1 (235,200 weights) and fc2 (30,000) at 3% run sparse; fc3 (1,000) is too small. With
    4-bit activations the quantizers' pre-hooks still run: the same logits, but where float
    rounding moved an input across a quantization step (one logit in 5,000 here)."""
    model = student(keep=0.03, act_bits=act_bits)
    x = torch.randn(500, *SHAPE)
    dense = predict_logits(model, x)
    with sparse_linears(model) as swapped:
        assert swapped == 2
        assert overridden(model) == ["fc1", "fc2"]
        sparse = predict_logits(model, x)
    close = torch.isclose(sparse, dense, rtol=1e-4, atol=1e-4)
    assert float(close.float().mean()) >= (1.0 if act_bits == 32 else 0.999)
    assert torch.equal(sparse.argmax(dim=1), dense.argmax(dim=1))
    assert overridden(model) == []


def test_dense_layers_stay_dense() -> None:
    model = student(keep=0.5)
    with sparse_linears(model) as swapped:
        assert swapped == 0
        assert overridden(model) == []


def test_the_model_trains_as_before_after_the_block_even_after_an_error() -> None:
    model = student(keep=0.03)
    with pytest.raises(RuntimeError, match="boom"), sparse_linears(model):
        raise RuntimeError("boom")
    assert overridden(model) == []
    model.train()
    model(torch.randn(8, *SHAPE)).sum().backward()
    fc1 = dict(model.named_modules())["fc1"]
    gradient = fc1.parametrizations.weight.original.grad
    assert gradient is not None and bool(gradient.abs().sum() > 0)
