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


def _layer(bits: int, encoding: str, seed: int = 0) -> StoredLayer:
    """A sparse layer whose codes, gaps, scales and biases look like a trained one's: peaked
    codes, geometric gaps, float16 scales of one order of magnitude."""
    rng = np.random.default_rng(seed)
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
    scale = rng.uniform(0.01, 0.05, live).astype(np.float16).tobytes() if bits <= 15 else b""
    bias = rng.normal(0, 0.1, live).astype(width).tobytes()
    return StoredLayer(
        "fc", SHAPE, bits, encoding, len(slots), values, index, live, scale, bias, False, None
    )


@pytest.mark.parametrize(
    ("bits", "encoding", "at_most"),
    [  # the payload against its blobs' bytes (0.92, 0.72, 0.68, 0.79, 0.99, 0.91, 0.94 measured)
        (3, "delta8", 0.95),  # gaps of up to 8 bits: categorical
        (2, "delta12", 0.8),  # wider gaps: bit length and low bits
        (8, "delta16", 0.75),  # the widest fields of both
        (1, "delta10", 0.85),
        (4, "bitmap", 1.0),  # values, scales and bias coded, the bitmap stored as it is
        (16, "delta11", 0.95),  # fp16 weights stored as they are, gaps and bias coded
        (32, "delta11", 0.97),  # float32: only the gaps
        (12, "dense", None),  # 12-bit codes are stored packed, the random scales are not coded
    ],
)
def test_layer_round_trips_with_and_without_coding(
    bits: int, encoding: str, at_most: float | None
) -> None:
    layer = _layer(bits, encoding)
    model = StoredModel("mlp", (2000,), 10, (layer,), ())
    payload = encode(model)
    assert decode(payload, 5) == model
    blobs = len(layer.values) + len(layer.index) + len(layer.scale) + len(layer.bias or b"")
    if at_most is None:
        assert len(payload) > blobs  # the blobs and the fields, nothing coded
    else:
        assert len(payload) < at_most * blobs
