"""The bytes of a format-4 or -5 payload: fixed binary records, each followed by its blobs.

Versions 1-3 had a JSON header with an offset for every blob (``artifact_json``). Near 400x
that header was 1.4 KB of a LeNet-5 file, 580 bytes after the codec: 13% of a 4.3 KB model. In
format 4 every length follows from the fields before it, so nothing stores an offset, and a
layer costs about 30 bytes of fields before the codec. Format 5 is format 4 with a layer flag
that says its codes, gaps, scales and bias are entropy-coded (``entropy``). The layout is in
docs/FORMAT.md; this module only moves bytes (``artifact`` decodes codes and checks what they
mean).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from autocompress import bitpack, entropy
from autocompress.errors import ArtifactError
from autocompress.quantize import FLOAT_BITS, FP16_BITS, INT_BITS
from autocompress.size import layer_float_bits

MAX_ELEMENTS = 2**31 - 1  # per tensor: bounds what a damaged or hostile file can allocate

# dtypes of the tensors outside the compressible layers: name -> (code, little-endian numpy)
DTYPES = {
    "float32": (0, "<f4"),
    "float16": (1, "<f2"),
    "float64": (2, "<f8"),
    "int64": (3, "<i8"),
    "int32": (4, "<i4"),
    "int16": (5, "<i2"),
    "int8": (6, "i1"),
    "uint8": (7, "u1"),
    "bool": (8, "?"),
}
_DTYPE_NAMES = {code: name for name, (code, _) in DTYPES.items()}
_KINDS = {"dense": 0, "bitmap": 1, "delta": 2}
_KIND_NAMES = {code: name for name, code in _KINDS.items()}
# layer flags
_BIAS, _BIAS_LIVE, _ACT, _ACT_SIGNED, _ACT_INITIALIZED, _CODED, _SCALE8 = 1, 2, 4, 8, 16, 32, 64
# format 5 adds _CODED (``entropy`` codes the blobs) and _SCALE8 (one-byte scales)
_FLAGS_BY_VERSION = {4: 31, 5: 127}
_CODED_LENGTH = struct.Struct("<I")
_LABELS = {"values": "values", "index": "index", "scale": "scales", "bias": "bias"}
_MAX_CODED_BITS = 8  # wider codes and gaps: a model of 2**16 symbols per block costs too much
_LAYER = struct.Struct("<BBBIIBB")  # bits, kind, gap bits, stored, live, flags, act bits


@dataclass(frozen=True)
class StoredAct:
    """A layer's input quantizer as stored; ``scale`` is one float32 for 2..15 bits, else b""."""

    bits: int
    signed: bool
    initialized: bool
    scale: bytes


@dataclass(frozen=True)
class StoredLayer:
    """One compressible layer as the file holds it: its fields and raw blobs, nothing decoded.

    ``live`` is the number of output channels with a scale (format 4 stores it, so a layer's
    bytes can be split without decoding its codes); None when the codes must tell (versions
    1-3). ``nonzero`` is the weight's nonzero count that versions 1-3 stored as a check.
    ``scale8``: the scales are one-byte fields (``quantize.scale_fields``; format 5), not
    float16. ``written`` is what the blobs took in a payload read from a file, after entropy
    coding (None otherwise; not compared).
    """

    name: str
    shape: tuple[int, ...]
    bits: int
    encoding: str
    stored: int
    values: bytes
    index: bytes
    live: int | None
    scale: bytes
    bias: bytes | None
    bias_live_only: bool
    act: StoredAct | None
    scale8: bool = False
    nonzero: int | None = None
    written: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class StoredTensor:
    """A parameter or buffer outside the compressible layers: its exact little-endian bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes


@dataclass(frozen=True)
class StoredModel:
    """A whole payload: what ``models.build_model`` needs, then every layer and tensor."""

    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[StoredLayer, ...]
    tensors: tuple[StoredTensor, ...]


def check_bits(bits: int, where: str) -> None:
    if bits not in INT_BITS and bits not in (FP16_BITS, FLOAT_BITS):
        raise ArtifactError(f"{where} 'bits' must be 1..15, 16 or 32, got {bits}")


def check_act_bits(bits: int, where: str) -> None:
    if not 2 <= bits <= FP16_BITS:
        raise ArtifactError(f"{where} 'bits' must be 2..16, got {bits}")


def check_shape(shape: tuple[int, ...], where: str) -> None:
    if math.prod(shape) > MAX_ELEMENTS:
        raise ArtifactError(f"{where} shape {list(shape)} has more than {MAX_ELEMENTS} elements")


def values_size(stored: int, bits: int) -> int:
    """Bytes of ``stored`` values at a layer's width."""
    if bits == FLOAT_BITS:
        return 4 * stored
    if bits == FP16_BITS:
        return 2 * stored
    return bitpack.packed_size(stored, bits)


# --- writing --------------------------------------------------------------------------------


def encode(model: StoredModel) -> bytes:
    """The format-5 payload of ``model`` (before the codec)."""
    out = bytearray()
    out += _text(model.model) + _dims(model.input_shape) + struct.pack("<I", model.num_classes)
    out += struct.pack("<H", len(model.layers))
    for layer in model.layers:
        blobs = {"values": layer.values, "index": layer.index, "scale": layer.scale}
        blobs["bias"] = layer.bias or b""
        parts = _coded_parts(
            layer.bits, layer.encoding, layer.stored, layer.live or 0, len(blobs["bias"]),
            layer.scale8,
        )  # fmt: skip
        coded = _entropy_coded(layer, blobs, parts)
        out += _text(layer.name) + _dims(layer.shape) + _layer_fields(layer, coded is not None)
        if coded is not None:
            out += _CODED_LENGTH.pack(len(coded)) + coded
            blobs = {part: blob for part, blob in blobs.items() if part not in parts}
        out += b"".join(blobs.values())
        out += layer.act.scale if layer.act is not None else b""
    out += struct.pack("<H", len(model.tensors))
    for tensor in model.tensors:
        code = DTYPES[tensor.dtype][0]
        out += _text(tensor.name) + struct.pack("<B", code) + _dims(tensor.shape) + tensor.data
    return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<H", len(raw)) + raw


def _dims(shape: tuple[int, ...]) -> bytes:
    return struct.pack(f"<B{len(shape)}I", len(shape), *shape)


def _coded_parts(
    bits: int, encoding: str, stored: int, live: int, bias_bytes: int, scale8: bool
) -> dict[str, tuple[entropy.Model, int]]:
    """The blobs a format-5 layer can entropy-code, with each one's model and length. Writer
    and reader both ask this, so the file need not say which blobs are coded: every one listed
    is, when the layer is."""
    kind, gap_bits = bitpack.parse_encoding(encoding)
    parts: dict[str, tuple[entropy.Model, int]] = {}
    if stored and bits <= _MAX_CODED_BITS:
        parts["values"] = (entropy.Categorical(1 << bits), stored)
    if stored and kind == "delta":
        gaps = entropy.Categorical(1 << gap_bits) if gap_bits <= _MAX_CODED_BITS else None
        parts["index"] = (gaps or entropy.Gaps(gap_bits), stored)
    if bits in INT_BITS and live:
        parts["scale"] = (entropy.SCALE if scale8 else entropy.FLOAT16, live)
    if layer_float_bits(bits) == 16 and bias_bytes:
        parts["bias"] = (entropy.FLOAT16, bias_bytes // 2)
    return parts


def _entropy_coded(
    layer: StoredLayer, blobs: dict[str, bytes], parts: dict[str, tuple[entropy.Model, int]]
) -> bytes | None:
    """The coded bytes of the layer's codable blobs; None when they would not be smaller than
    the blobs themselves (a few weights, or codes that look random)."""
    if not parts:
        return None
    widths = _field_widths(layer.bits, layer.encoding, layer.scale8)
    sequences = [
        (model, _symbols(blobs[part], count, widths[part]))
        for part, (model, count) in parts.items()
    ]
    coded = entropy.encode(sequences)
    if _CODED_LENGTH.size + len(coded) >= sum(len(blobs[part]) for part in parts):
        return None
    return coded


def _field_widths(bits: int, encoding: str, scale8: bool) -> dict[str, int | None]:
    """Bits per packed field of each codable blob; None for float16 values."""
    gap_bits = bitpack.parse_encoding(encoding)[1]
    return {"values": bits, "index": gap_bits, "scale": 8 if scale8 else None, "bias": None}


def _symbols(blob: bytes, count: int, width: int | None) -> np.ndarray:
    """The ``count`` fields of a blob as integers (float16s as their bit patterns)."""
    if width is None:
        return np.frombuffer(blob, dtype="<u2").astype(np.int64)
    return bitpack.unpack_bits(blob, count, width)


def _blob(symbols: np.ndarray, width: int | None) -> bytes:
    """Inverse of ``_symbols``."""
    return symbols.astype("<u2").tobytes() if width is None else bitpack.pack_bits(symbols, width)


def _layer_fields(layer: StoredLayer, coded: bool) -> bytes:
    kind, gap_bits = bitpack.parse_encoding(layer.encoding)
    if layer.live is None:
        raise ValueError(f"layer {layer.name}: format 4 stores its live channel count")
    act = layer.act
    flags = (
        (_BIAS if layer.bias is not None else 0)
        | (_BIAS_LIVE if layer.bias is not None and layer.bias_live_only else 0)
        | (_ACT if act is not None else 0)
        | (_ACT_SIGNED if act is not None and act.signed else 0)
        | (_ACT_INITIALIZED if act is not None and act.initialized else 0)
        | (_CODED if coded else 0)
        | (_SCALE8 if layer.scale8 else 0)
    )
    return _LAYER.pack(
        layer.bits,
        _KINDS[kind],
        gap_bits,
        layer.stored,
        layer.live,
        flags,
        act.bits if act is not None else 0,
    )


# --- reading --------------------------------------------------------------------------------


class _Cursor:
    """Reads the payload front to back; running short is a one-line 'truncated' error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, nbytes: int, what: str) -> bytes:
        got = max(0, min(nbytes, len(self.data) - self.at))
        if got < nbytes:
            raise ArtifactError(
                f"file is truncated: expected {nbytes} bytes for {what} at offset {self.at}, "
                f"got {got}"
            )
        self.at += nbytes
        return self.data[self.at - nbytes : self.at]

    def fields(self, layout: struct.Struct, what: str) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size, what))

    def text(self, what: str) -> str:
        (length,) = self.fields(struct.Struct("<H"), what)
        raw = self.take(length, what)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise ArtifactError(f"{what} is not UTF-8: {raw!r:.60}") from None

    def dims(self, what: str) -> tuple[int, ...]:
        (count,) = self.fields(struct.Struct("<B"), f"{what} shape")
        shape: tuple[int, ...] = self.fields(struct.Struct(f"<{count}I"), f"{what} shape")
        check_shape(shape, what)
        return shape


def decode(payload: bytes, version: int) -> StoredModel:
    """Split a format-4 or -5 payload into its records and blobs (entropy-coded blobs decoded
    and packed again, so a layer reads as in format 4); ArtifactError if it cannot be one."""
    cursor = _Cursor(payload)
    model = cursor.text("model name")
    input_shape = cursor.dims("model input")
    (num_classes,) = cursor.fields(struct.Struct("<I"), "number of classes")
    (count,) = cursor.fields(struct.Struct("<H"), "number of layers")
    layers = tuple(_decode_layer(cursor, i, version) for i in range(count))
    (count,) = cursor.fields(struct.Struct("<H"), "number of tensors")
    tensors = tuple(_decode_tensor(cursor, i) for i in range(count))
    if cursor.at != len(payload):
        raise ArtifactError(
            f"file is corrupt: {len(payload) - cursor.at} bytes after the last tensor"
        )
    return StoredModel(model, input_shape, num_classes, layers, tensors)


def _decode_layer(cursor: _Cursor, i: int, version: int) -> StoredLayer:
    name = cursor.text(f"layer {i} name")
    where = f"layer {name}"
    shape = cursor.dims(where)
    if not shape:
        raise ArtifactError(f"{where} shape must have at least one dimension")
    bits, kind, gap_bits, stored, live, flags, act_bits = cursor.fields(_LAYER, f"{where} fields")
    check_bits(bits, where)
    if kind not in _KIND_NAMES:
        raise ArtifactError(f"{where} encoding kind must be 0, 1 or 2, got {kind}")
    encoding = f"delta{gap_bits}" if _KIND_NAMES[kind] == "delta" else _KIND_NAMES[kind]
    try:
        index_bytes = bitpack.index_size(encoding, math.prod(shape), stored)
    except ValueError as exc:
        raise ArtifactError(f"{where}: {exc}") from None
    if live > shape[0]:
        raise ArtifactError(f"{where}: {live} live channels of {shape[0]}")
    if flags & ~_FLAGS_BY_VERSION[version]:
        raise ArtifactError(f"{where} flags {flags:#04x} set an unknown bit")
    blobs_start = cursor.at
    width = layer_float_bits(bits) // 8
    channels = (live if flags & _BIAS_LIVE else shape[0]) if flags & _BIAS else None
    scale8 = bool(flags & _SCALE8)
    if scale8 and bits not in INT_BITS:
        raise ArtifactError(f"{where} has one-byte scales but {bits}-bit weights have none")
    sizes = {
        "values": values_size(stored, bits),
        "index": index_bytes,
        "scale": (1 if scale8 else width) * live if bits in INT_BITS else 0,
        "bias": width * channels if channels is not None else 0,
    }
    coded = {}
    if flags & _CODED:
        parts = _coded_parts(bits, encoding, stored, live, sizes["bias"], scale8)
        coded = _decode_entropy(cursor, where, parts, _field_widths(bits, encoding, scale8))
    blobs = {
        part: coded[part] if part in coded else cursor.take(size, f"{where} {_LABELS[part]}")
        for part, size in sizes.items()
    }
    act = None
    if flags & _ACT:
        check_act_bits(act_bits, f"{where} act")
        act_scale = cursor.take(4, f"{where} act scale") if act_bits != FP16_BITS else b""
        act = StoredAct(
            act_bits, bool(flags & _ACT_SIGNED), bool(flags & _ACT_INITIALIZED), act_scale
        )
    return StoredLayer(
        name, shape, bits, encoding, stored, blobs["values"], blobs["index"], live,
        blobs["scale"], blobs["bias"] if channels is not None else None,
        bool(flags & _BIAS_LIVE), act, scale8, written=cursor.at - blobs_start,
    )  # fmt: skip


def _decode_entropy(
    cursor: _Cursor,
    where: str,
    parts: dict[str, tuple[entropy.Model, int]],
    widths: dict[str, int | None],
) -> dict[str, bytes]:
    """A coded layer's blobs, decoded and packed again as format 4 stores them."""
    if not parts:
        raise ArtifactError(f"{where} is marked entropy-coded but has nothing to code")
    (length,) = cursor.fields(_CODED_LENGTH, f"{where} coded length")
    coded = cursor.take(length, f"{where} coded blobs")
    try:
        sequences = entropy.decode(coded, list(parts.values()))
    except ValueError as exc:
        raise ArtifactError(f"file is corrupt: {where} coded blobs: {exc}") from None
    return {
        part: _blob(symbols, widths[part]) for part, symbols in zip(parts, sequences, strict=True)
    }


def _decode_tensor(cursor: _Cursor, i: int) -> StoredTensor:
    name = cursor.text(f"tensor {i} name")
    where = f"tensor {name}"
    (code,) = cursor.fields(struct.Struct("<B"), f"{where} dtype")
    if code not in _DTYPE_NAMES:
        raise ArtifactError(f"{where} has unknown dtype code {code}")
    dtype = _DTYPE_NAMES[code]
    shape = cursor.dims(where)
    itemsize = np.dtype(DTYPES[dtype][1]).itemsize
    return StoredTensor(name, dtype, shape, cursor.take(math.prod(shape) * itemsize, where))
