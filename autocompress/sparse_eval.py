"""Validation passes through sparse matrix products where a linear layer's masks left few weights.

Every epoch of a trial ends with a validation pass (early stopping reads it), and issue 6
counts that evaluation outside fine-tuning. On 2 CPU cores LeNet-300-100's pass over 1,000
images took 3.2 ms, 2.5% of an epoch, 2.1 ms of it fc1's dense product, though the weights a
search keeps are mostly 1-5% of fc1's. With the layer's computed (masked, quantized) weight in
CSR form, ``addmm(bias, W, x.T)`` took 0.38-0.68 ms at 1-5% density, plus 0.24-0.29 ms to
build the CSR, and broke even near 20% (docs/BENCHMARKS.md). The forward is swapped only for
the pass, on the module instance, so training, hooks (activation quantizers) and the model's
class are untouched; the products differ from dense ones by float rounding (1e-5 in logits).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

# A layer's weight density (nonzero share) below which its product runs sparse.
SPARSE_BELOW = 0.1
# Smaller layers stay dense: building their CSR costs about what the product saves.
MIN_WEIGHTS = 16_384


def _sparse_forward(weight: Tensor, bias: Tensor | None) -> Callable[[Tensor], Tensor]:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used for products only
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.to_sparse_csr()
    column = None if bias is None else bias[:, None]

    def forward(x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1]).T  # features x batch: the CSR weight's right operand
        out = torch.mm(csr, flat) if column is None else torch.addmm(column, csr, flat)
        return out.T.reshape(*x.shape[:-1], out.shape[0])

    return forward


@contextmanager
def sparse_linears(model: nn.Module) -> Iterator[int]:
    """Within the block, the CPU model's masked linear layers under ``SPARSE_BELOW`` density run
    sparse products (inference only: no gradient flows through them); yields how many."""
    swapped: list[nn.Module] = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if not (
                    isinstance(module, nn.Linear)
                    and parametrize.is_parametrized(module, "weight")
                    and module.weight.device.type == "cpu"
                    and module.weight.numel() >= MIN_WEIGHTS
                ):
                    continue
                weight = module.weight  # computed once: masks and fake quantization applied
                if int(torch.count_nonzero(weight)) >= SPARSE_BELOW * weight.numel():
                    continue
                module.forward = _sparse_forward(weight, module.bias)  # type: ignore[method-assign,assignment]
                swapped.append(module)
        yield len(swapped)
    finally:
        for module in swapped:
            del module.forward  # the class's forward again
