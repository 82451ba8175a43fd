"""Hooked forward passes that tell what a model's structure alone does not say.

- **The output layer**: the compressible layer whose outputs are the model's (the last one to
  run, with as many outputs as the model; a flatten or log-softmax may follow). Pruning must
  not empty one of its rows: that class's logit would be a constant.
- **Inputs that are always zero**: a channel whose weights are all pruned outputs its bias,
  which ``DeadChannelBias`` zeroes, so after a ReLU, a pooling or nothing the next layer reads
  a zero there, for every input. The weights reading it multiply zero: they never train (their
  gradient is zero too), yet a file would store them.

An input counts as always zero when it is (1) zero for every input of the probe batch (the
examples, and seeded noise of their scale with each sample's sign also flipped, so that a unit
merely off for some inputs is on for others) and (2) fed only by emptied channels: a second
pass sets every emptied channel's output to NaN, which ReLU, pooling and flattening carry,
and clears the NaNs at each layer's input after noting them. (2) keeps a unit that is off for
every probe but has weights (a ReLU unit the noise never turns on) out; (1) keeps out an
emptied channel that reaches the next layer as a nonzero constant (a BatchNorm shift, a
sigmoid's 0.5).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from autocompress.models import COMPRESSIBLE_TYPES

NOISE_SAMPLES = 32  # each also negated: 64 noise inputs besides the examples


def output_layer(model: nn.Module, example: Tensor) -> str | None:
    """The compressible layer whose outputs are the model's; None when the model ends
    otherwise (e.g. pooling over that layer's outputs). One forward pass of ``example``."""
    names = _compressible_names(model)
    calls: list[tuple[str, int]] = []

    def record(module: nn.Module, _args: object, output: Tensor) -> None:
        calls.append((names[module], output.numel()))

    out = _run(model, example, {"forward": record})
    if calls and isinstance(out, Tensor) and calls[-1][1] == out.numel():
        return calls[-1][0]
    return None


def zero_inputs(model: nn.Module, example: Tensor) -> dict[str, Tensor]:
    """Layer name -> bool per input feature (Linear) or channel (Conv): True where the input is
    zero for every probe input and fed only by emptied channels. Two forward passes of the probe
    batch (eval mode, no gradients; the model's mode is restored)."""
    names = _compressible_names(model)
    batch = _batch(example)
    nonzero: dict[str, Tensor] = {}
    from_empty: dict[str, Tensor] = {}

    def record(module: nn.Module, args: tuple[object, ...], _output: Tensor) -> None:
        seen = _features(module, args[0] if args else None, lambda x: x != 0, default=True)
        _merge_or(nonzero, names[module], seen)  # zero only if zero in every call

    def note_and_clear_nans(module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
        nan = _features(module, args[0] if args else None, torch.isnan, default=False)
        _merge_or(from_empty, names[module], nan)
        return tuple(torch.nan_to_num(a, nan=0.0) if isinstance(a, Tensor) else a for a in args)

    def mark_empty_channels(module: nn.Module, _args: object, output: Tensor) -> Tensor:
        weight = module.weight
        assert isinstance(weight, Tensor)
        empty = ~weight.detach().reshape(len(weight), -1).any(dim=1)
        if isinstance(module, nn.Linear):
            return output.masked_fill(empty, torch.nan)
        if output.dim() != weight.dim():
            return output  # an unbatched call: its zeros were not recorded either
        return output.masked_fill(empty.reshape(-1, *[1] * (output.dim() - 2)), torch.nan)

    _run(model, batch, {"forward": record})
    try:
        _run(model, batch, {"pre": note_and_clear_nans, "forward": mark_empty_channels})
    except Exception:  # a model that refuses NaNs (checks its values): then claim no zeros
        from_empty.clear()
    return {
        name: ~seen & from_empty.get(name, torch.zeros_like(seen)) for name, seen in nonzero.items()
    }


def _compressible_names(model: nn.Module) -> dict[nn.Module, str]:
    return {module: name for name, module in model.named_modules() if _compressible(module)}


def _compressible(module: nn.Module) -> bool:
    return isinstance(module, COMPRESSIBLE_TYPES)


def _run(model: nn.Module, batch: Tensor, hooks: dict[str, Callable[..., object]]) -> object:
    """One eval-mode forward with the hooks on every compressible layer, removed after."""
    handles = []
    for module in model.modules():
        if _compressible(module):
            if "pre" in hooks:
                handles.append(module.register_forward_pre_hook(hooks["pre"]))
            handles.append(module.register_forward_hook(hooks["forward"]))
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            return model(batch)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()


def _merge_or(into: dict[str, Tensor], name: str, flags: Tensor) -> None:
    into[name] = flags if name not in into else into[name] | flags


def _batch(example: Tensor) -> Tensor:
    if not example.is_floating_point() or example.numel() < 2:
        return example  # token ids and the like: no noise to add
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn((NOISE_SAMPLES, *example.shape[1:]), generator=generator)
    spread = float(example.square().mean().sqrt())  # the inputs' scale, about zero
    noise = noise.to(example.device, example.dtype) * (spread if spread > 0 else 1.0)
    return torch.cat([example, noise, -noise])


def _features(
    module: nn.Module, x: object, test: Callable[[Tensor], Tensor], default: bool
) -> Tensor:
    """Bool per input feature (Linear) or channel (Conv): ``test`` holds somewhere in ``x``;
    all ``default`` when ``x`` is not a batch of the layer's usual shape."""
    if isinstance(module, nn.Linear):
        features, dim = module.in_features, -1
    else:
        assert isinstance(module, nn.Conv1d | nn.Conv2d)
        features, dim = module.in_channels, 1
        if isinstance(x, Tensor) and x.dim() != module.weight.dim():
            x = None  # unbatched
    if not isinstance(x, Tensor) or x.shape[dim] != features:
        return torch.full((features,), default, dtype=torch.bool)
    return test(x).movedim(dim, 0).reshape(features, -1).any(dim=1).cpu()
