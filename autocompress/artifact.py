"""The compressed model file (``.acz``): pack a fine-tuned student, unpack it, load it for use.

The file is the real product of a trial, so its length is the size the search should minimize,
and loading it must give back the student's outputs exactly. It holds the integer codes
bit-packed at each layer's width with the cheapest position encoding (the one the size formula
in ``autocompress.size`` chooses, by calling the same function), the float scales, biases and
every other tensor as raw little-endian bytes, a JSON header saying where each of them is, and
an entropy coder over the whole. There is no pickle anywhere: reading an untrusted file runs no
code, and every inconsistency is a one-line ``ArtifactError``. The byte layout is in
``docs/FORMAT.md``.
"""

from __future__ import annotations

import json
import lzma
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from autocompress import bitpack
from autocompress.errors import AutocompressError, ConfigError
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
    weight_quantizer,
)
from autocompress.size import (
    FP16_FIELD_BITS,
    bias_of_live_only,
    cheapest_encoding,
    layer_float_bits,
    live_channels,
)
from autocompress.structured import prune_channels_

# 3: scales, and biases when the others are zero, only for output channels with a nonzero
# weight; 2: a quantized layer's scales and bias in float16 (1: float32)
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
SUFFIX = ".acz"
MAGIC = b"\x89ACZ"  # the high first byte makes a 7-bit or text-mode transfer detectable
# magic, format version, codec id, payload length, CRC-32 of the payload; little-endian
PREFIX = struct.Struct("<4sHBQI")
_HEADER_LENGTH = struct.Struct("<I")
# bounds on what a damaged or hostile file can make the reader allocate
MAX_PAYLOAD = 2**40
MAX_ELEMENTS = 2**31 - 1  # per tensor

CODECS = {"none": 0, "lzma": 1}  # "none" is for measuring and debugging
DEFAULT_CODEC = "lzma"  # the smallest files; docs/FORMAT.md has the measurements
_LZMA_PRESET = 9 | lzma.PRESET_EXTREME
_LZMA_MIN_DICT, _LZMA_MAX_DICT = 4096, 1 << 26

# dtypes of the tensors outside the compressible layers, as little-endian numpy types
_DTYPES = {
    "float32": "<f4",
    "float16": "<f2",
    "float64": "<f8",
    "int64": "<i8",
    "int32": "<i4",
    "int16": "<i2",
    "int8": "i1",
    "uint8": "u1",
    "bool": "?",
}


class ArtifactError(AutocompressError):
    """A file that cannot be read as a compressed model, or a model that cannot be packed."""


@dataclass(frozen=True)
class ModelSpec:
    """What ``models.build_model`` needs to rebuild the architecture the weights belong to."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer as stored; ``encoded_bytes`` is before the entropy coder."""

    name: str
    shape: tuple[int, ...]
    bits: int
    kept: float  # fraction of nonzero weights
    encoding: str  # "dense", "bitmap" or "delta{g}"
    encoded_bytes: int
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
    # (format 3 stores no scale for it)
    scale: Tensor | None
    bias: Tensor | None
    act: ActState | None


@dataclass(frozen=True)
class Artifact:
    format_version: int
    codec: str
    spec: ModelSpec
    plan: CompressionPlan
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
    layers: 32 bits), so the file describes the model that was measured.
    """
    if codec not in CODECS:
        raise ArtifactError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    layers = compressible_layers(student)
    unknown = sorted(set(plan.layers) - set(layers))
    if unknown:
        raise ArtifactError(f"cannot pack: the plan names {unknown}, not layers of the model")
    body = bytearray()

    def add(blob: bytes) -> list[int]:
        body.extend(blob)
        return [len(body) - len(blob), len(blob)]

    with torch.no_grad():
        table = [_pack_layer(name, layer, plan, add) for name, layer in layers.items()]
        tensors = []
        for name, tensor in _other_tensors(student, set(layers)):
            dtype = str(tensor.dtype).removeprefix("torch.")
            if dtype not in _DTYPES:
                raise ArtifactError(f"cannot pack {name}: dtype {dtype} is not supported")
            raw = tensor.detach().cpu().numpy().astype(_DTYPES[dtype]).tobytes()
            tensors.append(
                {"name": name, "shape": list(tensor.shape), "dtype": dtype, "data": add(raw)}
            )
    header = {
        "format_version": FORMAT_VERSION,
        "model": {
            "model": model_spec.model,
            "input_shape": [int(d) for d in model_spec.input_shape],
            "num_classes": int(model_spec.num_classes),
        },
        "plan": plan.to_dict(),
        "layers": table,
        "tensors": tensors,
    }
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return _seal(_HEADER_LENGTH.pack(len(encoded)) + encoded + bytes(body), codec)


def _pack_layer(
    name: str, layer: nn.Module, plan: CompressionPlan, add: Callable[[bytes], list[int]]
) -> dict[str, Any]:
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
    scale = None
    if bits in INT_BITS:
        codes, scale = integer_codes(_quantizer_input(layer), bits)
        if not torch.equal(_dequantize(codes, scale), weight):
            raise ArtifactError(f"cannot pack layer {name}: its weight is not its codes * scale")
        flat = codes.reshape(-1).cpu().numpy()
    else:
        flat = weight.reshape(-1).cpu().numpy()
    nonzero = flat != 0
    live_np = live_channels(nonzero, weight.shape[0])
    live = torch.from_numpy(live_np)
    encoding = cheapest_encoding(nonzero, bits)[0]
    slots, index = bitpack.encode_slots(nonzero, encoding)
    entry: dict[str, Any] = {
        "name": name,
        "shape": list(weight.shape),
        "bits": bits,
        "nonzero": int(nonzero.sum()),
        "encoding": encoding,
        "stored": int(slots.size),
        "values": add(_encode_values(flat[slots], bits)),
        "index": add(index),
        "scale": None
        if scale is None
        else add(_float_field_bytes(scale[live], bits, name, "scales")),
        "bias": None,
        "bias_channels": None,
        "act": None,
    }
    bias = getattr(layer, "bias", None)
    if isinstance(bias, Tensor):
        value = _float32(bias, name, "bias")
        # prune_ zeroes the bias of channels it empties (DeadChannelBias); a channel that was
        # empty before keeps its bias, which still feeds the next layer
        subset = "live" if bias_of_live_only(value, live_np) else "all"
        stored_bias = value[live] if subset == "live" else value
        entry["bias"] = add(_float_field_bytes(stored_bias, bits, name, "bias"))
        entry["bias_channels"] = subset
    if isinstance(act, ActFakeQuant):
        entry["act"] = {
            "bits": act.bits,
            "signed": bool(act.signed),
            "initialized": bool(act.initialized),
            "scale": None if act.bits == FP16_BITS else add(_f32_bytes(act.scale_src)),
        }
    return entry


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
    """Scales or bias at the layer's float field width (``size.layer_float_bits``); float16
    fields must already hold float16 values (``quantize_`` sees to it), so nothing changes."""
    if layer_float_bits(bits) != FP16_FIELD_BITS:
        return _f32_bytes(tensor)
    if not torch.equal(fp16_grid(tensor), tensor):
        raise ArtifactError(f"cannot pack layer {name}: its {what} are not float16 values")
    return tensor.detach().cpu().numpy().astype("<f2").tobytes()


def _f32_bytes(tensor: Tensor) -> bytes:
    return tensor.detach().cpu().numpy().astype("<f4").tobytes()


def _other_tensors(model: nn.Module, layer_names: set[str]) -> list[tuple[str, Tensor]]:
    """Parameters and buffers outside the compressible layers, as ``size`` counts them."""

    def owned(qualified: str) -> bool:
        parts = qualified.split(".")
        return any(".".join(parts[:i]) in layer_names for i in range(len(parts)))

    named = [*model.named_parameters(), *model.named_buffers()]
    return [
        (name, tensor)
        for name, tensor in named
        if not owned(name) and not name.endswith("num_batches_tracked")
    ]


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
    header, body = _split(payload)
    if _get(header, "format_version", int, "header") != version:
        raise ArtifactError(
            f"header: format_version {header['format_version']} differs from the file's "
            f"prefix ({version})"
        )
    spec_raw = _get(header, "model", dict, "header")
    spec = ModelSpec(
        model=_get(spec_raw, "model", str, "header model"),
        input_shape=_shape(spec_raw, "input_shape", "header model"),
        num_classes=_get(spec_raw, "num_classes", int, "header model"),
    )
    try:
        plan = CompressionPlan.from_dict(_get(header, "plan", dict, "header"))
    except ConfigError as exc:
        raise ArtifactError(f"header: {exc}") from None
    layers: dict[str, LayerData] = {}
    for i, entry in enumerate(_get(header, "layers", list, "header")):
        layer = _decode_layer(entry, body, f"header layers[{i}]", version)
        if layer.info.name in layers:
            raise ArtifactError(f"header: layer {layer.info.name} appears twice")
        layers[layer.info.name] = layer
    tensors: dict[str, Tensor] = {}
    for i, entry in enumerate(_get(header, "tensors", list, "header")):
        name = _get(entry, "name", str, f"header tensors[{i}]")
        if name in tensors:
            raise ArtifactError(f"header: tensor {name} appears twice")
        tensors[name] = _decode_tensor(entry, body, name)
    return Artifact(version, codec, spec, plan, layers, tensors)


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
    try:
        model = build_model(spec.model, spec.input_shape, spec.num_classes)
        if artifact.plan.structured_ratios:  # the channel counts come from the ratios alone
            example = torch.zeros(2, *spec.input_shape)
            prune_channels_(model, artifact.plan.structured_ratios, example)
    except AutocompressError as exc:
        raise ArtifactError(f"cannot rebuild the file's model {spec.model!r}: {exc}") from None
    misfit = f"file does not fit model {spec.model!r}"
    layers = compressible_layers(model)
    if set(layers) != set(artifact.layers):
        difference = _difference(set(artifact.layers), set(layers))
        raise ArtifactError(f"{misfit}: the compressible layers differ: {difference}")
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
        others = dict(_other_tensors(model, set(layers)))
        if set(others) != set(artifact.tensors):
            difference = _difference(set(artifact.tensors), set(others))
            raise ArtifactError(f"{misfit}: the other tensors differ: {difference}")
        for name, tensor in others.items():
            _copy(tensor, artifact.tensors[name], f"{misfit}: {name}")
    return model.eval()


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


def _split(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the body its offsets point into."""
    if len(payload) < _HEADER_LENGTH.size:
        raise ArtifactError("header: payload too short for the header length")
    (length,) = _HEADER_LENGTH.unpack_from(payload)
    end = _HEADER_LENGTH.size + length
    if end > len(payload):
        raise ArtifactError(f"header: {length} bytes long, but the payload has {len(payload)}")
    try:
        header = json.loads(payload[_HEADER_LENGTH.size : end].decode())
    except (ValueError, RecursionError) as exc:
        raise ArtifactError(f"header does not parse as JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"header must be a JSON object, got {type(header).__name__}")
    return header, payload[end:]


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    """``obj[key]`` checked to be a ``kind`` (bools are not ints), else ArtifactError."""
    if not isinstance(obj, dict):
        raise ArtifactError(f"{where} must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise ArtifactError(f"{where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ArtifactError(f"{where} {key!r} must be a {kind.__name__}, got {value!r:.60}")
    if isinstance(value, int) and value < 0:  # no field of the header is negative
        raise ArtifactError(f"{where} {key!r} must not be negative, got {value}")
    return value


def _shape(obj: Any, key: str, where: str) -> tuple[int, ...]:
    raw = _get(obj, key, list, where)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise ArtifactError(f"{where} {key!r} must be a list of non-negative ints, got {raw}")
    shape: tuple[int, ...] = tuple(raw)
    if math.prod(shape) > MAX_ELEMENTS:
        raise ArtifactError(f"{where} {key!r} {raw} has more than {MAX_ELEMENTS} elements")
    return shape


def _blob(obj: Any, key: str, where: str, body: bytes, expected: int) -> bytes:
    """The bytes ``obj[key] = [offset, nbytes]`` points at, which must be ``expected`` long."""
    raw = _get(obj, key, list, where)
    if len(raw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise ArtifactError(f"{where} {key!r} must be [offset, nbytes], got {raw!r:.60}")
    offset, nbytes = raw
    if offset < 0 or nbytes != expected:
        raise ArtifactError(
            f"{where} {key}: the table says {nbytes} bytes at offset {offset}, "
            f"its shape needs {expected}"
        )
    if nbytes and offset + nbytes > len(body):
        raise ArtifactError(
            f"file is truncated: expected {nbytes} bytes for {where} {key} at offset {offset}, "
            f"got {max(0, len(body) - offset)}"
        )
    return body[offset : offset + nbytes]


def _values_size(stored: int, bits: int) -> int:
    if bits == FLOAT_BITS:
        return 4 * stored
    if bits == FP16_BITS:
        return 2 * stored
    return bitpack.packed_size(stored, bits)


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


def _decode_layer(entry: Any, body: bytes, where: str, version: int) -> LayerData:
    name = _get(entry, "name", str, where)
    where = f"layer {name}"
    shape = _shape(entry, "shape", where)
    if not shape:
        raise ArtifactError(f"{where} 'shape' must have at least one dimension")
    numel, channels = math.prod(shape), shape[0]
    bits = _get(entry, "bits", int, where)
    if bits not in INT_BITS and bits not in (FP16_BITS, FLOAT_BITS):
        raise ArtifactError(f"{where} 'bits' must be 1..15, 16 or 32, got {bits}")
    encoding = _get(entry, "encoding", str, where)
    stored = _get(entry, "stored", int, where)
    nonzero = _get(entry, "nonzero", int, where)
    try:
        values = _blob(entry, "values", where, body, _values_size(stored, bits))
        index = _blob(entry, "index", where, body, bitpack.index_size(encoding, numel, stored))
        slots = bitpack.decode_slots(index, encoding, numel, stored)
        decoded = _decode_values(values, stored, bits)
    except ValueError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    flat = np.zeros(numel, dtype=decoded.dtype)
    flat[slots] = decoded
    everyone = torch.ones(channels, dtype=torch.bool)
    live = torch.from_numpy(live_channels(flat != 0, channels)) if version >= 3 else everyone
    encoded_bytes = len(index) + len(values)
    codes = scale = None
    float_bytes = 4 if version == 1 else layer_float_bits(bits) // 8
    if bits in INT_BITS:
        codes = torch.from_numpy(flat).reshape(shape)
        raw, scale = _channel_field(entry, "scale", where, body, float_bytes, live)
        encoded_bytes += len(raw)
        weight = _dequantize(codes, scale)
    else:
        weight = torch.from_numpy(flat).reshape(shape)
    if int(torch.count_nonzero(weight)) != nonzero:
        raise ArtifactError(
            f"{where}: decodes to {int(torch.count_nonzero(weight))} nonzero weights, "
            f"the header says {nonzero}"
        )
    bias = None
    if entry.get("bias") is not None:
        subset = _get(entry, "bias_channels", str, where) if version >= 3 else "all"
        if subset not in ("live", "all"):
            raise ArtifactError(f"{where} 'bias_channels' must be 'live' or 'all', got {subset!r}")
        raw, bias = _channel_field(
            entry, "bias", where, body, float_bytes, live if subset == "live" else everyone
        )
        encoded_bytes += len(raw)
    act = _decode_act(entry, body, where)
    if act is not None and act.scale_src is not None:
        encoded_bytes += 4
    info = LayerInfo(
        name=name,
        shape=shape,
        bits=bits,
        kept=nonzero / numel if numel else 0.0,
        encoding=encoding,
        encoded_bytes=encoded_bytes,
        act_bits=FLOAT_BITS if act is None else act.bits,
    )
    return LayerData(info, weight, codes, scale, bias, act)


def _channel_field(
    entry: dict[str, Any], key: str, where: str, body: bytes, width: int, stored: Tensor
) -> tuple[bytes, Tensor]:
    """A per-channel float field (scale or bias) stored for the channels ``stored`` marks, and
    the full-length tensor it gives (0 for the others): ``(raw bytes, tensor)``."""
    count = int(stored.sum())
    raw = _blob(entry, key, where, body, width * count)
    full = torch.zeros(stored.numel())
    full[stored] = _float_tensor(raw, (count,), width)
    return raw, full


def _decode_act(entry: dict[str, Any], body: bytes, where: str) -> ActState | None:
    raw = entry.get("act")
    if raw is None:
        return None
    where = f"{where} act"
    bits = _get(raw, "bits", int, where)
    if not 2 <= bits <= FP16_BITS:
        raise ArtifactError(f"{where} 'bits' must be 2..16, got {bits}")
    scale = None
    if bits != FP16_BITS:
        scale = _float_tensor(_blob(raw, "scale", where, body, 4), (), 4)
    return ActState(
        bits=bits,
        signed=_get(raw, "signed", bool, where),
        initialized=_get(raw, "initialized", bool, where),
        scale_src=scale,
    )


def _decode_tensor(entry: Any, body: bytes, name: str) -> Tensor:
    where = f"tensor {name}"
    shape = _shape(entry, "shape", where)
    dtype = _get(entry, "dtype", str, where)
    if dtype not in _DTYPES:
        raise ArtifactError(f"{where} has unsupported dtype {dtype!r}")
    np_dtype = np.dtype(_DTYPES[dtype])
    raw = _blob(entry, "data", where, body, math.prod(shape) * np_dtype.itemsize)
    array = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
    return torch.from_numpy(array.reshape(shape))


def _float_tensor(raw: bytes, shape: tuple[int, ...], width: int) -> Tensor:
    """float32 tensor from little-endian float32 (``width`` 4) or float16 (2) fields."""
    dtype = "<f4" if width == 4 else "<f2"
    return torch.from_numpy(np.frombuffer(raw, dtype=dtype).astype(np.float32).reshape(shape))
