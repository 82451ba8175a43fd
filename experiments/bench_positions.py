"""How much a position model that knows rows and columns could save (issue 6).

    PYTHONPATH=. python experiments/bench_positions.py FILE.acz [FILE.acz ...]

Format 5 codes a sparse layer's positions as gaps along the flattened weight, each gap with an
adaptive model: in effect every position is kept with the same probability. A model that knew
which output rows and input columns are live could spend its bits on the live submatrix only,
or learn how often each column is used. Per file, for each layer kept below 10%, this prints
what the file writes for the layer (values, positions, scales and biases, entropy-coded) and
three ideal costs of its positions alone, in bytes: independent positions over the whole
matrix, n * H(kept); over the live rows x live columns, plus a bitmap of each at its entropy;
and each nonzero's column drawn from the columns' own frequencies, plus the same bitmaps.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from autocompress.artifact import unpack


def entropy_bits(p: float) -> float:
    """Bits of one Bernoulli(p) outcome."""
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def ideal_position_bytes(nonzero: np.ndarray) -> tuple[float, float, float]:
    """(whole matrix, live submatrix, column frequencies) for a 2-D nonzero mask."""
    rows, cols = nonzero.any(axis=1), nonzero.any(axis=0)
    kept = int(nonzero.sum())
    whole = nonzero.size * entropy_bits(kept / nonzero.size)
    live = int(rows.sum()) * int(cols.sum())
    which = len(rows) * entropy_bits(rows.mean()) + len(cols) * entropy_bits(cols.mean())
    submatrix = live * entropy_bits(kept / live) + which
    per_column = nonzero.sum(axis=0)[cols]
    frequencies = -(per_column * np.log2(per_column / kept)).sum() + which
    return whole / 8, submatrix / 8, float(frequencies) / 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args()
    print("file | bytes | layer | kept | written | positions: whole / live submatrix / columns")
    for path in args.files:
        data = path.read_bytes()
        for name, layer in unpack(data).layers.items():
            if layer.info.kept >= 0.1:
                continue
            mask = (layer.weight != 0).reshape(layer.weight.shape[0], -1).numpy()
            whole, submatrix, columns = ideal_position_bytes(mask)
            print(
                f"{path.name} | {len(data)} | {name} | {layer.info.kept:.3%} | "
                f"{layer.info.written_bytes} | {whole:.0f} / {submatrix:.0f} / {columns:.0f}"
            )


if __name__ == "__main__":
    main()
