"""Data sets as whole in-memory tensor splits: digits (embedded), MNIST IDX dirs, user loaders.

Every split is a fixed, seeded permutation (``SPLIT_SEED``) so that accuracies from different
runs, machines and workers are measured on exactly the same images.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autocompress._imports import first_line, load_callable
from autocompress.errors import DataError

SPLIT_SEED = 0
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the usual MNIST normalization constants
MNIST_VAL_SIZE = 5000  # validation images taken from a full training set

_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
_MNIST_PAIRS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UNKNOWN_SPEC = (
    "unknown data spec '{spec}'; use 'digits', 'mnist:DIR', 'file.py:loader' "
    "or 'package.module:loader'"
)


@dataclass(frozen=True)
class DataSplits:
    """Whole data set as in-memory tensors: small-data training is far faster with index
    batching than with a DataLoader.

    x tensors are float32 shaped ``(N, *input_shape)``; y tensors are int64 shaped ``(N,)``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to(self, device: torch.device | str) -> DataSplits:
        """Move all six tensors at once (GPU training indexes them directly)."""
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
            test_x=self.test_x.to(device),
            test_y=self.test_y.to(device),
        )

    def fingerprint(self) -> str:
        """sha256 of the content, not the name: a cache key for the trained baseline that
        stays valid when the same data is reached by another path."""
        digest = hashlib.sha256(f"classes={self.num_classes};".encode())
        for tensor in self._tensors():
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)};".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y)


def load_data(spec: str) -> DataSplits:
    """Load ``digits``, ``mnist:DIR``, ``path/to/file.py:loader`` or ``package.module:loader``."""
    if spec.startswith("mnist:"):
        return _load_mnist(spec.removeprefix("mnist:"))
    if spec == "digits":
        return _load_digits()
    source, _, attr = spec.rpartition(":")
    if source and attr:
        return _load_user(spec)
    raise DataError("data", _UNKNOWN_SPEC.format(spec=spec))


# --- splitting ------------------------------------------------------------------------------


def _split(
    x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a fixed seeded permutation of ``(x, y)`` into consecutive parts of ``sizes``."""
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(y)))
    parts = []
    start = 0
    for size in sizes:
        index = order[start : start + size]
        parts.append((x[index], y[index]))
        start += size
    return parts


def _three_way_sizes(n: int, train_frac: float, val_frac: float) -> tuple[int, int, int]:
    """Train and val are rounded down; test takes the remainder."""
    n_train, n_val = math.floor(n * train_frac), math.floor(n * val_frac)
    return n_train, n_val, n - n_train - n_val


# --- digits ---------------------------------------------------------------------------------


def _load_digits() -> DataSplits:
    """scikit-learn's bundled 8x8 digits (no download), shaped (N, 1, 8, 8).

    Split 70/15/15 with ``SPLIT_SEED``: 1257 train, 269 val, 271 test (of 1797). Pixels are
    scaled from 0..16 to [0, 1], then standardized with the train split's scalar mean and std.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    (tx, ty), (vx, vy), (sx, sy) = _split(x, y, _three_way_sizes(len(y), 0.70, 0.15))
    mean, std = tx.mean(), tx.std()
    return DataSplits(
        name="digits",
        train_x=(tx - mean) / std,
        train_y=ty,
        val_x=(vx - mean) / std,
        val_y=vy,
        test_x=(sx - mean) / std,
        test_y=sy,
        num_classes=10,
    )


# --- MNIST IDX ------------------------------------------------------------------------------


def _load_mnist(directory: str) -> DataSplits:
    """MNIST-format IDX files (gzip'd or plain) from a directory.

    With both the train and t10k pairs: 5,000 seeded validation images are taken from train
    (a tenth of it for train sets under 50,000 images) and t10k is the test set. With only one
    pair (e.g. just the 10,000 t10k images) it is split 70/10/20 with ``SPLIT_SEED``:
    7,000 train, 1,000 val, 2,000 test. num_classes is the largest label plus one.
    """
    if not directory:
        raise DataError("data", "'mnist:' needs a directory, e.g. 'mnist:../shared/data/mnist'")
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DataError("data", f"mnist directory '{directory}' does not exist")
    pairs = {key: _find_pair(root, names) for key, names in _MNIST_PAIRS.items()}
    found = {key: pair for key, pair in pairs.items() if pair is not None}
    if not found:
        raise DataError(
            "data",
            f"no MNIST IDX files (train-/t10k-images-idx3-ubyte[.gz] and labels) in '{directory}'",
        )
    loaded = {key: _read_pair(*pair) for key, pair in found.items()}
    if len(loaded) == 2:
        x, y = loaded["train"]
        n_val = min(MNIST_VAL_SIZE, max(1, len(y) // 10))
        (tx, ty), (vx, vy) = _split(x, y, (len(y) - n_val, n_val))
        sx, sy = loaded["t10k"]
    else:
        ((x, y),) = loaded.values()
        (tx, ty), (vx, vy), (sx, sy) = _split(x, y, _three_way_sizes(len(y), 0.70, 0.10))
    splits = {"train": ty, "validation": vy, "test": sy}
    for split, labels in splits.items():
        if len(labels) == 0:
            raise DataError("data", f"too few MNIST images in '{directory}' for a {split} split")
    return _from_splits(f"mnist:{root.resolve()}", ((tx, ty), (vx, vy), (sx, sy)))


def _from_splits(name: str, splits: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> DataSplits:
    """Train, validation and test (x, y); the classes are 0 .. the largest label seen."""
    (tx, ty), (vx, vy), (sx, sy) = splits
    return DataSplits(
        name=name,
        train_x=tx,
        train_y=ty,
        val_x=vx,
        val_y=vy,
        test_x=sx,
        test_y=sy,
        num_classes=max(int(y.max()) for _, y in splits) + 1,
    )


def _find_pair(root: Path, names: tuple[str, str]) -> tuple[Path, Path] | None:
    """The (images, labels) files of one pair, or None when neither exists."""
    images, labels = (_find_file(root, name) for name in names)
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        have, lack = (names[1], names[0]) if images is None else (names[0], names[1])
        raise DataError("data", f"'{root}' has {have} but no {lack}[.gz] to pair it with")
    return images, labels


def _find_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as standardized float32 (N, 1, H, W), labels as int64 (N,)."""
    images = _read_idx(images_path, _IMAGES_MAGIC)
    labels = _read_idx(labels_path, _LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            "data",
            f"'{images_path}' has {len(images)} images but '{labels_path}' has "
            f"{len(labels)} labels",
        )
    x = torch.from_numpy(images).to(torch.float32).unsqueeze(1) / 255.0
    return (x - MNIST_MEAN) / MNIST_STD, torch.from_numpy(labels).to(torch.int64)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one unsigned-byte IDX file; gzip is detected by its magic bytes, not the name."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError("data", f"'{path}' is a broken gzip file: {first_line(exc)}") from exc
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = f"0x{int.from_bytes(raw[:4], 'big'):08x}" if len(raw) >= 4 else "no header"
        raise DataError(
            "data", f"'{path}' is not an IDX file: expected magic 0x{magic:08x}, got {found}"
        )
    if len(raw) < header:
        raise DataError("data", f"'{path}' is truncated: the IDX header needs {header} bytes")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != math.prod(dims):
        raise DataError(
            "data",
            f"'{path}' has {len(raw) - header} data bytes but its dims {dims} need "
            f"{math.prod(dims)}",
        )
    # A copy: torch warns on tensors over read-only buffers such as ``bytes``.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


# --- user loaders ---------------------------------------------------------------------------


def _load_user(spec: str) -> DataSplits:
    """Call a no-argument loader returning (train, val, test) datasets of ``(x, y)`` items."""
    loader = load_callable(spec, "data", DataError)
    try:
        result = loader()
    except Exception as exc:
        raise DataError("data", f"loader '{spec}' raised {first_line(exc)}") from exc
    if not isinstance(result, tuple | list) or len(result) != 3:
        got = f"a {type(result).__name__}"
        if isinstance(result, tuple | list):
            got += f" of length {len(result)}"
        raise DataError(
            "data", f"loader '{spec}' must return a (train, val, test) tuple of datasets; got {got}"
        )
    splits = [
        _materialize(spec, split, dataset)
        for split, dataset in zip(("train", "validation", "test"), result, strict=True)
    ]
    shapes = {tuple(x.shape[1:]) for x, _ in splits}
    if len(shapes) != 1:
        raise DataError("data", f"loader '{spec}' splits have different x shapes {sorted(shapes)}")
    source, _, attr = spec.rpartition(":")
    if source.endswith(".py"):
        source = str(Path(source).resolve())
    return _from_splits(f"loader:{source}:{attr}", splits)


def _materialize(spec: str, split: str, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a dataset once into (float32 x, int64 y); map-style datasets are indexed by len."""
    where = f"loader '{spec}' {split} split"
    try:
        if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            items = [dataset[i] for i in range(len(dataset))]
        else:
            items = list(dataset)
    except Exception as exc:
        raise DataError("data", f"cannot read the {where}: {first_line(exc)}") from exc
    if not items:
        raise DataError("data", f"the {where} is empty")
    xs, ys = [], []
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError("data", f"the {where} must yield (x, y) pairs; got {type(item)}")
        xs.append(torch.as_tensor(item[0]))
        ys.append(item[1])
    first = xs[0].shape
    if any(x.shape != first for x in xs):
        odd = next(x.shape for x in xs if x.shape != first)
        raise DataError(
            "data", f"the {where} has inconsistent x shapes {tuple(first)} and {tuple(odd)}"
        )
    try:
        y = torch.as_tensor([int(label) for label in ys], dtype=torch.int64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError("data", f"the {where} has non-integer labels: {first_line(exc)}") from exc
    if int(y.min()) < 0:
        raise DataError("data", f"the {where} has negative labels; classes must be 0..C-1")
    return torch.stack(xs).to(torch.float32), y
