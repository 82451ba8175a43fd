"""The compressed model file (``.acz``): pack a fine-tuned student, unpack it, load it for use.

The file is the real product of a trial, so its length is the size the search minimizes, and
loading it must give back the student's outputs exactly. It holds the integer codes bit-packed
at each layer's width with the cheapest position encoding (the one the size formula in
``autocompress.size`` chooses, by calling the same function), the float scales, biases and every
other tensor as raw little-endian bytes, each after a few bytes of fields saying what follows
(``artifact_layout``), the codes, gaps, scales and biases of most layers through an adaptive
entropy coder (``entropy``), and LZMA2 over the whole. There is no pickle anywhere:
reading an untrusted file runs no code, and every inconsistency is a one-line
``ArtifactError``. The byte layout is in ``docs/FORMAT.md``.
"""

from __future__ import annotations

import lzma
import math
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress import artifact_json, artifact_layout, bitpack
from autocompress.artifact_layout import (
    DTYPES,
    StoredAct,
    StoredLayer,
    StoredModel,
    StoredTensor,
    values_size,
)
from autocompress.errors import ArtifactError, AutocompressError
from autocompress.models import build_model, compressible_layers
from autocompress.plan import CompressionPlan
from autocompress.quantize import (
    FLOAT_BITS,
    FP16_BITS,
    INT_BITS,
    ActFakeQuant,
    WeightFakeQuant,
    fp16_grid,
    integer_codes,
    quantize_,
    scale_fields,
    scales_from_fields,
    weight_quantizer,
)
from autocompress.size import (
    FLOAT_FIELD_BITS,
    bias_of_live_only,
    cheapest_encoding,
    layer_float_bits,
    live_channels,
    other_tensors,
)
from autocompress.structured import prune_channels_

__all__ = [
    "ActState",
    "Artifact",
    "ArtifactError",
    "LayerData",
    "LayerInfo",
    "ModelSpec",
    "inspect",
    "load_model",
    "pack",
    "unpack",
    "upgrade",
]

# 5: codes, gaps, scales and biases entropy-coded per layer, one-byte scales; 4: binary
# fields instead of a JSON header (no offsets, no plan); 3: scales, and biases when the others
# are zero, only for output channels with a nonzero weight; 2: a quantized layer's scales and
# bias in float16 (1: float32)
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
SUFFIX = ".acz"
MAGIC = b"\x89ACZ"  # the high first byte makes a 7-bit or text-mode transfer detectable
# magic, format version, codec id, payload length, CRC-32 of the payload; little-endian
PREFIX = struct.Struct("<4sHBQI")
MAX_PAYLOAD = 2**40  # bounds what a damaged or hostile file can make the reader allocate

CODECS = {"none": 0, "lzma": 1}  # "none" is for measuring and debugging
DEFAULT_CODEC = "lzma"  # the smallest files; docs/FORMAT.md has the measurements
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME
_LZMA_MIN_DICT, _LZMA_MAX_DICT = 4096, 1 << 26


@dataclass(frozen=True)
class ModelSpec:
    """What ``models.build_model`` needs to rebuild the architecture the weights belong to."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer as stored: ``encoded_bytes`` its blobs bit-packed, as the size
    formula counts them; ``written_bytes`` the same blobs in the payload, after the per-layer
    entropy coding of format 5 and before the codec over the whole file."""

    name: str
    shape: tuple[int, ...]
    bits: int
    kept: float  # fraction of nonzero weights
    encoding: str  # "dense", "bitmap" or "delta{g}"
    encoded_bytes: int
    written_bytes: int
    act_bits: int  # bits of the layer's input; 32 = not quantized


@dataclass(frozen=True)
class ActState:
    """The frozen state of an ``ActFakeQuant``; ``scale_src`` is None for fp16 inputs."""

    bits: int
    signed: bool
    initialized: bool
    scale_src: Tensor | None


@dataclass(frozen=True)
class LayerData:
    """A decoded layer: the dense effective weight plus what it was made from."""

    info: LayerInfo
    weight: Tensor  # float32, exactly the student's ``layer.weight``
    codes: Tensor | None  # int32, integer widths only
    # float32 per output channel, integer widths only; 0 for a channel without a nonzero code
    # (formats 3 and 4 store no scale for it)
    scale: Tensor | None
    bias: Tensor | None
    act: ActState | None


@dataclass(frozen=True)
class Artifact:
    format_version: int
    codec: str
    spec: ModelSpec
    layers: dict[str, LayerData]
    tensors: dict[str, Tensor]  # every other parameter and buffer, by qualified name


# --- packing --------------------------------------------------------------------------------


def pack(
    student: nn.Module,
    plan: CompressionPlan,
    model_spec: ModelSpec,
    *,
    codec: str = DEFAULT_CODEC,
) -> bytes:
    """The compressed file of a pruned and fake-quantized student (from ``compress``).

    Each layer is stored at the width its quantizer has, which must be the plan's (missing
    layers: 32 bits), so the file describes the model that was measured. The plan itself is
    not stored: the run that made the file logs it, and loading needs only the layers.
    """
    _check_codec(codec)
    layers = compressible_layers(student)
    unknown = sorted(set(plan.layers) - set(layers))
    if unknown:
        raise ArtifactError(f"cannot pack: the plan names {unknown}, not layers of the model")
    with torch.no_grad():
        stored = StoredModel(
            model=model_spec.model,
            input_shape=tuple(int(d) for d in model_spec.input_shape),
            num_classes=int(model_spec.num_classes),
            layers=tuple(_stored_layer(name, layer, plan) for name, layer in layers.items()),
            tensors=tuple(_stored_tensors(other_tensors(student, set(layers)))),
        )
    return _seal(artifact_layout.encode(stored), codec)


def _stored_layer(name: str, layer: nn.Module, plan: CompressionPlan) -> StoredLayer:
    layer_plan = plan.layers.get(name)
    bits = layer_plan.bits if layer_plan is not None else FLOAT_BITS
    plan_act = layer_plan.act_bits if layer_plan is not None else FLOAT_BITS
    quantizer = weight_quantizer(layer)
    has_bits = quantizer.bits if quantizer is not None else FLOAT_BITS
    act = getattr(layer, "input_quant", None)
    has_act = act.bits if isinstance(act, ActFakeQuant) else FLOAT_BITS
    if (has_bits, has_act) != (bits, plan_act):
        raise ArtifactError(
            f"cannot pack layer {name}: it is quantized to {has_bits} bits (inputs {has_act}) "
            f"but the plan says {bits} (inputs {plan_act})"
        )
    weight = _float32(layer.weight, name, "weight")
    values, scales = weight, None
    if bits in INT_BITS:
        values, scales = integer_codes(_quantizer_input(layer), bits)
        if not torch.equal(_dequantize(values, scales), weight):
            raise ArtifactError(f"cannot pack layer {name}: its weight is not its codes * scale")
    bias = getattr(layer, "bias", None)
    return _layer_record(
        name,
        bits,
        values,
        scales,
        _float32(bias, name, "bias") if isinstance(bias, Tensor) else None,
        _stored_act(_act_state(act)) if isinstance(act, ActFakeQuant) else None,
    )


def _layer_record(
    name: str,
    bits: int,
    values: Tensor,
    scales: Tensor | None,
    bias: Tensor | None,
    act: StoredAct | None,
) -> StoredLayer:
    """A layer's record from its integer codes (with per-channel ``scales``) or float values."""
    flat = values.reshape(-1).cpu().numpy()
    nonzero = flat != 0
    live_np = live_channels(nonzero, values.shape[0])
    live = torch.from_numpy(live_np)
    encoding = cheapest_encoding(nonzero, bits)[0]
    slots, index = bitpack.encode_slots(nonzero, encoding)
    scale_bytes, scale8 = b"", False
    if scales is not None:
        # one-byte fields for a student's scales; an older file's float16 ones stay float16
        fields = scale_fields(scales[live])
        scale8 = fields is not None
        scale_bytes = fields or _float_field_bytes(scales[live], bits, name, "scales")
    bias_bytes, live_only = None, False
    if bias is not None:
        # prune_ zeroes the bias of channels it empties (DeadChannelBias); a channel that was
        # empty before keeps its bias, which still feeds the next layer
        live_only = bias_of_live_only(bias, live_np)
        bias_bytes = _float_field_bytes(bias[live] if live_only else bias, bits, name, "bias")
    return StoredLayer(
        name=name,
        shape=tuple(values.shape),
        bits=bits,
        encoding=encoding,
        stored=int(slots.size),
        values=_encode_values(flat[slots], bits),
        index=index,
        live=int(live_np.sum()),
        scale=scale_bytes,
        bias=bias_bytes,
        bias_live_only=live_only,
        act=act,
        scale8=scale8,
    )


def _act_state(act: ActFakeQuant) -> ActState:
    scale_src = None if act.bits == FP16_BITS else act.scale_src
    return ActState(act.bits, bool(act.signed), bool(act.initialized), scale_src)


def _stored_act(act: ActState) -> StoredAct:
    scale = b"" if act.scale_src is None else _f32_bytes(act.scale_src)
    return StoredAct(act.bits, act.signed, act.initialized, scale)


def _stored_tensors(named: Iterable[tuple[str, Tensor]]) -> list[StoredTensor]:
    """Each tensor's exact bytes, little-endian, row-major."""
    stored = []
    for name, tensor in named:
        dtype = str(tensor.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise ArtifactError(f"cannot pack {name}: dtype {dtype} is not supported")
        raw = tensor.detach().cpu().numpy().astype(DTYPES[dtype][1]).tobytes()
        stored.append(StoredTensor(name, dtype, tuple(tensor.shape), raw))
    return stored


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ArtifactError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")


def upgrade(data: bytes, *, codec: str = DEFAULT_CODEC) -> bytes:
    """A file of any readable version rewritten in the current one, the same model exactly.

    Near 400x format 4 files are about 10% smaller than format 3; format 5's entropy coding
    took another 4-8% off the front files of past searches (docs/FORMAT.md). Float16 scales
    stay float16 (only a student's scales are on the one-byte grid). A format-1 file's float32
    scales and biases are refused: format 2 and later store float16 ones.
    """
    _check_codec(codec)
    old = unpack(data)
    layers = []
    for name, layer in old.layers.items():
        act = None if layer.act is None else _stored_act(layer.act)
        values = layer.codes if layer.codes is not None else layer.weight
        layers.append(_layer_record(name, layer.info.bits, values, layer.scale, layer.bias, act))
    spec = old.spec
    tensors = tuple(_stored_tensors(old.tensors.items()))
    stored = StoredModel(spec.model, spec.input_shape, spec.num_classes, tuple(layers), tensors)
    return _seal(artifact_layout.encode(stored), codec)


def _quantizer_input(layer: nn.Module) -> Tensor:
    """The weight as it enters ``WeightFakeQuant`` (masked original): what the scales came from.

    Re-quantizing ``layer.weight`` instead could give scales one rounding away from the ones
    the student used, and then codes * scale would not reproduce its weight bit for bit.
    """
    parametrizations = layer.parametrizations
    assert isinstance(parametrizations, nn.ModuleDict)
    chain = parametrizations["weight"]
    assert isinstance(chain, parametrize.ParametrizationList)
    w = chain.original
    for step in chain:
        if isinstance(step, WeightFakeQuant):
            break
        w = step(w)
    return w.detach()


def _dequantize(codes: Tensor, scale: Tensor) -> Tensor:
    """``codes * scale`` exactly as ``quantize.quantize_weight`` computes it."""
    return codes.to(torch.float32) * scale.reshape(-1, *([1] * (codes.dim() - 1)))


def _encode_values(values: np.ndarray, bits: int) -> bytes:
    """Integer codes as unsigned ``b``-bit fields (``code + qmax``; 1 bit: 1 = +1, 0 = -1)."""
    if bits == FLOAT_BITS:
        return values.astype("<f4").tobytes()
    if bits == FP16_BITS:
        return values.astype("<f2").tobytes()
    if bits == 1:
        return bitpack.pack_bits(values > 0, 1)
    return bitpack.pack_bits(values + (2 ** (bits - 1) - 1), bits)


def _float32(tensor: Any, name: str, what: str) -> Tensor:
    if not isinstance(tensor, Tensor) or tensor.dtype != torch.float32:
        kind = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
        raise ArtifactError(f"cannot pack layer {name}: its {what} is {kind}, not float32")
    return tensor.detach()


def _float_field_bytes(tensor: Tensor, bits: int, name: str, what: str) -> bytes:
    """Scales or bias at the layer's float field width; float16 fields must already hold
    float16 values (``quantize_`` sees to it), so nothing changes."""
    if layer_float_bits(bits) == FLOAT_FIELD_BITS:
        return _f32_bytes(tensor)
    if not torch.equal(fp16_grid(tensor), tensor):
        raise ArtifactError(f"cannot pack layer {name}: its {what} are not float16 values")
    return tensor.detach().cpu().numpy().astype("<f2").tobytes()


def _f32_bytes(tensor: Tensor) -> bytes:
    return tensor.detach().cpu().numpy().astype("<f4").tobytes()


def _seal(payload: bytes, codec: str) -> bytes:
    if codec == "lzma":
        compressed = lzma.compress(payload, lzma.FORMAT_RAW, filters=_lzma_filters(len(payload)))
    else:
        compressed = payload
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, CODECS[codec], len(payload), zlib.crc32(payload))
    return prefix + compressed


def _lzma_filters(payload_length: int) -> list[dict[str, int]]:
    """Raw LZMA2 (no container: its ~60 bytes matter in files of a few KiB).

    The dictionary is sized to the payload, whose length the prefix carries, so the reader
    derives the same filter; preset 9's 64 MiB would cost both sides time and memory for
    nothing. ``lc=0, pb=0``: bit-packed fields straddle bytes, so the previous byte and the
    position modulo 4 predict little (0.6% smaller than the defaults on LeNet-5).
    """
    dict_size = min(max(payload_length, _LZMA_MIN_DICT), _LZMA_MAX_DICT)
    return [
        {"id": lzma.FILTER_LZMA2, "preset": _LZMA_PRESET, "dict_size": dict_size, "lc": 0, "pb": 0}
    ]


# --- reading --------------------------------------------------------------------------------


def unpack(data: bytes) -> Artifact:
    """Parse and check a file completely; the tensors come back on the CPU."""
    version, codec, payload = _open(data)
    if version >= 4:
        stored = artifact_layout.decode(payload, version)
    else:
        stored = artifact_json.decode(payload, version)
    layers: dict[str, LayerData] = {}
    for layer in stored.layers:
        if layer.name in layers:
            raise ArtifactError(f"file: layer {layer.name} appears twice")
        layers[layer.name] = _decode_layer(layer, version)
    tensors: dict[str, Tensor] = {}
    for tensor in stored.tensors:
        if tensor.name in tensors:
            raise ArtifactError(f"file: tensor {tensor.name} appears twice")
        tensors[tensor.name] = _decode_tensor(tensor)
    spec = ModelSpec(stored.model, stored.input_shape, stored.num_classes)
    return Artifact(version, codec, spec, layers, tensors)


def inspect(data: bytes) -> list[LayerInfo]:
    """Per compressible layer: name, shape, bits, kept fraction, encoding and bytes used."""
    return [layer.info for layer in unpack(data).layers.values()]


def load_model(source: str | Path | bytes) -> nn.Module:
    """Rebuild the file's model on the CPU, in eval mode, with the stored weights.

    The model is built plain (no parametrizations): each compressible layer's ``weight`` holds
    the decoded effective weight, and quantized inputs get an ``ActFakeQuant`` registered by
    ``quantize_`` itself with the stored frozen state, so the outputs equal the student's.
    """
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ArtifactError(f"file '{path}' does not exist")
        data = path.read_bytes()
    artifact = unpack(data)
    spec = artifact.spec
    misfit = f"file does not fit model {spec.model!r}"
    try:
        model = build_model(spec.model, spec.input_shape, spec.num_classes)
        layers = compressible_layers(model)
        if set(layers) != set(artifact.layers):
            difference = _difference(set(artifact.layers), set(layers))
            raise ArtifactError(f"{misfit}: the compressible layers differ: {difference}")
        removed = _removed_channels(layers, artifact.layers)
        if removed:
            prune_channels_(model, removed, torch.zeros(2, *spec.input_shape))
            layers = compressible_layers(model)
    except ArtifactError:
        raise
    except AutocompressError as exc:
        raise ArtifactError(f"cannot rebuild the file's model {spec.model!r}: {exc}") from None
    with torch.no_grad():
        for name, stored in artifact.layers.items():
            layer = layers[name]
            _copy(layer.weight, stored.weight, f"{misfit}: {name}.weight")
            bias = getattr(layer, "bias", None)
            if (bias is None) != (stored.bias is None):
                raise ArtifactError(f"{misfit}: {name}.bias is in one of them only")
            if isinstance(bias, Tensor) and stored.bias is not None:
                _copy(bias, stored.bias, f"{misfit}: {name}.bias")
            if stored.act is not None:
                quantize_(model, {}, {name: stored.act.bits})
                quant = layer.input_quant
                assert isinstance(quant, ActFakeQuant)
                if stored.act.scale_src is not None:
                    quant.scale_src.copy_(stored.act.scale_src)
                quant.signed.fill_(stored.act.signed)
                quant.initialized.fill_(stored.act.initialized)
        others = dict(other_tensors(model, set(layers)))
        if set(others) != set(artifact.tensors):
            difference = _difference(set(artifact.tensors), set(others))
            raise ArtifactError(f"{misfit}: the other tensors differ: {difference}")
        for name, tensor in others.items():
            _copy(tensor, artifact.tensors[name], f"{misfit}: {name}")
    return model.eval()


def _removed_channels(
    built: dict[str, nn.Module], stored: dict[str, LayerData]
) -> dict[str, float]:
    """Structured-pruning ratios that turn the built layers into the stored shapes.

    ``prune_channels_`` removes ``round(ratio * n)`` of a layer's ``n`` outputs (per channel
    group the same way), so ``removed / n`` gives back exactly the removed count; which
    channels go does not matter, since every weight is overwritten from the file.
    """
    ratios: dict[str, float] = {}
    for name, layer in built.items():
        weight = layer.weight
        assert isinstance(weight, Tensor)
        outputs, kept = int(weight.shape[0]), stored[name].info.shape[0]
        if 0 < kept < outputs:
            ratios[name] = (outputs - kept) / outputs
    return ratios


def _copy(target: Any, value: Tensor, where: str) -> None:
    if not isinstance(target, Tensor) or target.shape != value.shape:
        got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ArtifactError(f"{where} has shape {tuple(value.shape)} in the file, {got} here")
    if target.dtype != value.dtype:
        raise ArtifactError(f"{where} is {value.dtype} in the file, {target.dtype} here")
    target.copy_(value)


def _difference(in_file: set[str], in_model: set[str]) -> str:
    parts = []
    if in_file - in_model:
        parts.append(f"only the file has {sorted(in_file - in_model)}")
    if in_model - in_file:
        parts.append(f"only the model has {sorted(in_model - in_file)}")
    return "; ".join(parts)


def _open(data: bytes) -> tuple[int, str, bytes]:
    """Check the prefix, decompress and check length and CRC: ``(version, codec, payload)``."""
    if len(data) < PREFIX.size:
        raise ArtifactError(
            f"file is truncated: {len(data)} bytes, shorter than the {PREFIX.size}-byte prefix"
        )
    magic, version, codec_id, length, crc = PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(f"not an autocompress file: magic bytes {magic!r}, expected {MAGIC!r}")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise ArtifactError(
            f"unsupported format version {version}; this autocompress reads {readable}"
        )
    codec = next((name for name, i in CODECS.items() if i == codec_id), None)
    if codec is None:
        raise ArtifactError(f"unknown codec id {codec_id}; known: {CODECS}")
    if length > MAX_PAYLOAD:
        raise ArtifactError(f"file is corrupt: a {length}-byte payload is beyond any model")
    compressed = data[PREFIX.size :]
    decoder = None
    if codec == "lzma":
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=_lzma_filters(length))
    try:
        # max_length: a corrupt stream cannot grow past the length the prefix promises
        payload = compressed if decoder is None else decoder.decompress(compressed, length + 1)
    except lzma.LZMAError as exc:
        raise ArtifactError(f"file is corrupt: {codec} cannot decompress it ({exc})") from None
    if len(payload) < length or (decoder is not None and not decoder.eof):
        raise ArtifactError(
            f"file is truncated: expected a {length}-byte payload, got {len(payload)} bytes"
        )
    if len(payload) > length or (decoder is not None and decoder.unused_data):
        raise ArtifactError(f"file is corrupt: data beyond the {length}-byte payload")
    if zlib.crc32(payload) != crc:
        raise ArtifactError("file is corrupt: the payload's CRC-32 does not match")
    return version, codec, payload


def _decode_values(raw: bytes, stored: int, bits: int) -> np.ndarray:
    """Inverse of ``_encode_values``: float32 values or int32 codes."""
    if bits == FLOAT_BITS:
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if bits == FP16_BITS:
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    fields = bitpack.unpack_bits(raw, stored, bits)
    if bits == 1:
        return (2 * fields - 1).astype(np.int32)
    qmax = 2 ** (bits - 1) - 1
    if fields.size and int(fields.max()) > 2 * qmax:
        raise ValueError(f"a {bits}-bit code field holds {int(fields.max())} > {2 * qmax}")
    return (fields - qmax).astype(np.int32)


def _decode_layer(stored: StoredLayer, version: int) -> LayerData:
    where = f"layer {stored.name}"
    shape, bits = stored.shape, stored.bits
    numel, channels = math.prod(shape), shape[0]
    try:
        _check_length(stored.values, values_size(stored.stored, bits), f"{where} values")
        expected = bitpack.index_size(stored.encoding, numel, stored.stored)
        _check_length(stored.index, expected, f"{where} index")
        slots = bitpack.decode_slots(stored.index, stored.encoding, numel, stored.stored)
        decoded = _decode_values(stored.values, stored.stored, bits)
    except ValueError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    flat = np.zeros(numel, dtype=decoded.dtype)
    flat[slots] = decoded
    everyone = torch.ones(channels, dtype=torch.bool)
    live = torch.from_numpy(live_channels(flat != 0, channels)) if version >= 3 else everyone
    if stored.live is not None and stored.live != int(live.sum()):
        raise ArtifactError(
            f"{where}: the codes have {int(live.sum())} live channels, the fields say {stored.live}"
        )
    encoded_bytes = len(stored.index) + len(stored.values)
    width = 4 if version == 1 else layer_float_bits(bits) // 8
    codes = scale = None
    if bits in INT_BITS:
        codes = torch.from_numpy(flat).reshape(shape)
        scale_width = 1 if stored.scale8 else width
        scale = _channel_field(stored.scale, scale_width, live, f"{where} scales")
        weight = _dequantize(codes, scale)
    else:
        weight = torch.from_numpy(flat).reshape(shape)
    nonzero = int(torch.count_nonzero(weight))
    if stored.nonzero is not None and nonzero != stored.nonzero:
        raise ArtifactError(
            f"{where}: decodes to {nonzero} nonzero weights, the header says {stored.nonzero}"
        )
    bias = None
    if stored.bias is not None:
        biased = live if stored.bias_live_only else everyone
        bias = _channel_field(stored.bias, width, biased, f"{where} bias")
    act = None
    if stored.act is not None:
        scale_src = None
        if stored.act.bits != FP16_BITS:
            _check_length(stored.act.scale, 4, f"{where} act scale")
            scale_src = _float_tensor(stored.act.scale, (), 4)
        act = ActState(stored.act.bits, stored.act.signed, stored.act.initialized, scale_src)
    encoded_bytes += (
        len(stored.scale) + len(stored.bias or b"") + len(stored.act.scale if stored.act else b"")
    )
    info = LayerInfo(
        name=stored.name,
        shape=shape,
        bits=bits,
        kept=nonzero / numel if numel else 0.0,
        encoding=stored.encoding,
        encoded_bytes=encoded_bytes,
        written_bytes=encoded_bytes if stored.written is None else stored.written,
        act_bits=FLOAT_BITS if act is None else act.bits,
    )
    return LayerData(info, weight, codes, scale, bias, act)


def _check_length(raw: bytes, expected: int, what: str) -> None:
    if len(raw) != expected:
        raise ArtifactError(f"{what}: {len(raw)} bytes, its fields need {expected}")


def _channel_field(raw: bytes, width: int, stored: Tensor, what: str) -> Tensor:
    """A per-channel float field (scale or bias) stored for the channels ``stored`` marks, as
    the full-length tensor it gives (0 for the others); width 1 is a one-byte scale field."""
    count = int(stored.sum())
    _check_length(raw, width * count, what)
    full = torch.zeros(stored.numel())
    try:
        values = scales_from_fields(raw) if width == 1 else _float_tensor(raw, (count,), width)
    except ValueError as exc:
        raise ArtifactError(f"{what}: {exc}") from None
    full[stored] = values
    return full


def _decode_tensor(stored: StoredTensor) -> Tensor:
    np_dtype = np.dtype(DTYPES[stored.dtype][1])
    _check_length(stored.data, math.prod(stored.shape) * np_dtype.itemsize, f"tensor {stored.name}")
    array = np.frombuffer(stored.data, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(array.reshape(stored.shape))


def _float_tensor(raw: bytes, shape: tuple[int, ...], width: int) -> Tensor:
    """float32 tensor from little-endian float32 (``width`` 4) or float16 (2) fields."""
    dtype = "<f4" if width == 4 else "<f2"
    return torch.from_numpy(np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(shape))
