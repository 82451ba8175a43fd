"""Format-5 records: every layer shape of blob goes through the entropy coder and back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from autocompress import bitpack
from autocompress.artifact_layout import (
    StoredLayer,
    StoredModel,
    decode,
    encode,
    values_size,
)

SHAPE = (64, 2000)  # 128,000 weights, 1% kept: gaps near 100 on average, up to a few thousand


def _layer(bits: int, encoding: str, scale8: bool) -> StoredLayer:
    """A sparse layer whose codes, gaps, scales and biases look like a trained one's: peaked
    codes, geometric gaps, scales of one order of magnitude (one-byte fields or float16)."""
    rng = np.random.default_rng(0)
    nonzero = rng.random(SHAPE) < 0.01
    slots, index = bitpack.encode_slots(nonzero, encoding)
    if bits <= 15:
        qmax = 2 ** (bits - 1) - 1 if bits > 1 else 0
        codes = np.clip(np.round(rng.laplace(0, max(qmax / 4, 0.5), len(slots))), -qmax, qmax)
        values = bitpack.pack_bits((codes + qmax).astype(np.int64), bits)
    else:
        dtype = "<f2" if bits == 16 else "<f4"
        values = rng.normal(0, 0.05, len(slots)).astype(dtype).tobytes()
    assert len(values) == values_size(len(slots), bits)
    live = SHAPE[0]
    width = np.float32 if bits == 32 else np.float16
    scale = b""
    if bits <= 15:
        fp16 = rng.uniform(0.01, 0.05, live).astype(np.float16)
        scale = (fp16.view(np.uint16) >> 7).astype(np.uint8).tobytes() if scale8 else fp16.tobytes()
    bias = rng.normal(0, 0.1, live).astype(width).tobytes()
    return StoredLayer(
        "fc", SHAPE, bits, encoding, len(slots), values, index, live, scale, bias, False, None,
        scale8 and bits <= 15,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("bits", "encoding", "scale8", "at_most"),
    [  # the payload against its blobs' bytes (measured: 0.92, 0.71, 0.72, 0.68, 0.78, 0.99,
        # 0.91, 0.94)
        (3, "delta8", True, 0.95),  # gaps of up to 8 bits: categorical
        (2, "delta12", True, 0.8),  # wider gaps: bit length and low bits
        (2, "delta12", False, 0.8),  # float16 scales (an upgraded older file's)
        (8, "delta16", True, 0.75),  # the widest fields of both
        (1, "delta10", True, 0.85),
        (4, "bitmap", True, 1.0),  # values, scales and bias coded, the bitmap stored as it is
        (16, "delta11", False, 0.95),  # fp16 weights stored as they are, gaps and bias coded
        (32, "delta11", False, 0.97),  # float32: only the gaps
        (12, "dense", False, None),  # 12-bit codes stay packed, random float16 scales too
    ],
)
def test_layer_round_trips_with_and_without_coding(
    bits: int, encoding: str, scale8: bool, at_most: float | None
) -> None:
    layer = _layer(bits, encoding, scale8)
    model = StoredModel("mlp", (2000,), 10, (layer,), ())
    payload = encode(model)
    assert decode(payload, 5) == model
    blobs = len(layer.values) + len(layer.index) + len(layer.scale) + len(layer.bias or b"")
    if at_most is None:
        assert len(payload) > blobs  # the blobs and the fields, nothing coded
    else:
        assert len(payload) < at_most * blobs
