"""Reading the payload of format versions 1-3: a JSON header of fields and blob offsets.

Files written before format 4 still load (tests/data holds one of each version). The header
also carried the compression plan, which the reader never needed: a layer's stored shape says
whether channels were removed. Only the split into records and blobs happens here; decoding
and its checks are shared with format 4 in ``artifact``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from autocompress.artifact_layout import (
    DTYPES,
    StoredAct,
    StoredLayer,
    StoredModel,
    StoredTensor,
    check_act_bits,
    check_bits,
    check_shape,
)
from autocompress.errors import ArtifactError

_HEADER_LENGTH = struct.Struct("<I")


def decode(payload: bytes, version: int) -> StoredModel:
    """Split a version 1-3 payload along its header; ArtifactError if it cannot be one."""
    header, body = _split(payload)
    if _get(header, "format_version", int, "header") != version:
        raise ArtifactError(
            f"header: format_version {header['format_version']} differs from the file's "
            f"prefix ({version})"
        )
    spec = _get(header, "model", dict, "header")
    layers = tuple(
        _layer(entry, body, f"header layers[{i}]", version)
        for i, entry in enumerate(_get(header, "layers", list, "header"))
    )
    tensors = tuple(
        _tensor(entry, body, f"header tensors[{i}]")
        for i, entry in enumerate(_get(header, "tensors", list, "header"))
    )
    return StoredModel(
        model=_get(spec, "model", str, "header model"),
        input_shape=_shape(spec, "input_shape", "header model"),
        num_classes=_get(spec, "num_classes", int, "header model"),
        layers=layers,
        tensors=tensors,
    )


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


def _layer(entry: Any, body: bytes, where: str, version: int) -> StoredLayer:
    name = _get(entry, "name", str, where)
    where = f"layer {name}"
    shape = _shape(entry, "shape", where)
    if not shape:
        raise ArtifactError(f"{where} 'shape' must have at least one dimension")
    bits = _get(entry, "bits", int, where)
    check_bits(bits, where)
    bias_live_only = False
    if entry.get("bias") is not None and version >= 3:
        subset = _get(entry, "bias_channels", str, where)
        if subset not in ("live", "all"):
            raise ArtifactError(f"{where} 'bias_channels' must be 'live' or 'all', got {subset!r}")
        bias_live_only = subset == "live"
    return StoredLayer(
        name=name,
        shape=shape,
        bits=bits,
        encoding=_get(entry, "encoding", str, where),
        stored=_get(entry, "stored", int, where),
        values=_blob(entry, "values", where, body),
        index=_blob(entry, "index", where, body),
        live=None,
        scale=b"" if entry.get("scale") is None else _blob(entry, "scale", where, body),
        bias=None if entry.get("bias") is None else _blob(entry, "bias", where, body),
        bias_live_only=bias_live_only,
        act=_act(entry, body, where),
        nonzero=_get(entry, "nonzero", int, where),
    )


def _act(entry: dict[str, Any], body: bytes, where: str) -> StoredAct | None:
    raw = entry.get("act")
    if raw is None:
        return None
    where = f"{where} act"
    bits = _get(raw, "bits", int, where)
    check_act_bits(bits, where)
    return StoredAct(
        bits=bits,
        signed=_get(raw, "signed", bool, where),
        initialized=_get(raw, "initialized", bool, where),
        scale=b"" if bits == 16 else _blob(raw, "scale", where, body),
    )


def _tensor(entry: Any, body: bytes, where: str) -> StoredTensor:
    name = _get(entry, "name", str, where)
    where = f"tensor {name}"
    dtype = _get(entry, "dtype", str, where)
    if dtype not in DTYPES:
        raise ArtifactError(f"{where} has unsupported dtype {dtype!r}")
    return StoredTensor(
        name, dtype, _shape(entry, "shape", where), _blob(entry, "data", where, body)
    )


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
    check_shape(shape, where)
    return shape


def _blob(obj: Any, key: str, where: str, body: bytes) -> bytes:
    """The bytes ``obj[key] = [offset, nbytes]`` points at; ``artifact`` checks the count."""
    raw = _get(obj, key, list, where)
    if len(raw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
        raise ArtifactError(f"{where} {key!r} must be [offset, nbytes], got {raw!r:.60}")
    offset, nbytes = raw
    if offset < 0 or nbytes < 0:
        raise ArtifactError(f"{where} {key}: {nbytes} bytes at offset {offset}")
    if nbytes and offset + nbytes > len(body):
        raise ArtifactError(
            f"file is truncated: expected {nbytes} bytes for {where} {key} at offset {offset}, "
            f"got {max(0, len(body) - offset)}"
        )
    return body[offset : offset + nbytes]
