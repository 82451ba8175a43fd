"""Data loading: digits, MNIST IDX directories (real and hand-written) and user loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.data import DataSplits, load_data
from autocompress.errors import DataError

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write an unsigned-byte IDX file (magic 0x0000080N, big-endian dims, raw bytes)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist_pair(
    root: Path, prefix: str, n: int, *, compress: bool = False, seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    images = rng.integers(0, 256, size=(n, 28, 28))
    labels = np.arange(n) % 10
    write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
    write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)


def data_error(spec: str) -> str:
    with pytest.raises(DataError) as info:
        load_data(spec)
    message = str(info.value)
    assert message.startswith("data: ")
    assert "\n" not in message
    return message


def assert_same(a: DataSplits, b: DataSplits) -> None:
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(a.train_x, b.train_x)
    assert torch.equal(a.test_y, b.test_y)


# --- digits ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_data("digits")


def test_digits_split_sizes_and_shapes(digits: DataSplits) -> None:
    assert (len(digits.train_y), len(digits.val_y), len(digits.test_y)) == (1257, 269, 271)
    assert len(digits.train_y) + len(digits.val_y) + len(digits.test_y) == 1797
    assert digits.input_shape == (1, 8, 8)
    assert digits.train_x.dtype == torch.float32
    assert digits.train_y.dtype == torch.int64
    assert digits.num_classes == 10
    assert digits.name == "digits"


def test_digits_standardized_with_train_statistics(digits: DataSplits) -> None:
    assert abs(float(digits.train_x.mean())) < 1e-5
    assert abs(float(digits.train_x.std()) - 1.0) < 1e-4


def test_digits_labels(digits: DataSplits) -> None:
    labels = torch.cat([digits.train_y, digits.val_y, digits.test_y])
    assert int(labels.min()) == 0
    assert int(labels.max()) == 9
    assert set(digits.test_y.tolist()) == set(range(10))


def test_digits_deterministic(digits: DataSplits) -> None:
    assert_same(digits, load_data("digits"))


def test_to_moves_every_tensor(digits: DataSplits) -> None:
    moved = digits.to("cpu")
    assert moved.fingerprint() == digits.fingerprint()
    assert moved.num_classes == digits.num_classes


def test_fingerprint_ignores_name_but_not_content(digits: DataSplits) -> None:
    from dataclasses import replace

    assert replace(digits, name="other").fingerprint() == digits.fingerprint()
    changed = replace(digits, test_y=digits.test_y.flip(0))
    assert changed.fingerprint() != digits.fingerprint()


# --- real MNIST (the 10,000 t10k images only) -----------------------------------------------


@pytest.fixture(scope="module")
def mnist() -> DataSplits:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"no MNIST files at {MNIST_DIR}")
    return load_data(f"mnist:{MNIST_DIR}")


def test_mnist_t10k_only_split(mnist: DataSplits) -> None:
    assert (len(mnist.train_y), len(mnist.val_y), len(mnist.test_y)) == (7000, 1000, 2000)
    assert mnist.train_x.shape == (7000, 1, 28, 28)
    assert mnist.val_x.shape == (1000, 1, 28, 28)
    assert mnist.test_x.shape == (2000, 1, 28, 28)
    assert mnist.num_classes == 10
    assert mnist.name == f"mnist:{MNIST_DIR.resolve()}"
    # standardized with the usual constants: pixel 0 maps to -0.1307 / 0.3081
    assert float(mnist.train_x.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-5)


def test_mnist_deterministic(mnist: DataSplits) -> None:
    assert_same(mnist, load_data(f"mnist:{MNIST_DIR}"))


# --- hand-written IDX files -----------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_idx_train_and_t10k(tmp_path: Path, compress: bool) -> None:
    write_mnist_pair(tmp_path, "train", 50, compress=compress)
    write_mnist_pair(tmp_path, "t10k", 12, compress=compress, seed=1)
    data = load_data(f"mnist:{tmp_path}")
    # a tenth of a small train set is validation; t10k is the test set
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (45, 5, 12)
    assert data.input_shape == (1, 28, 28)
    assert data.num_classes == 10
    assert torch.equal(data.test_y, torch.arange(12) % 10)
    expected = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(12, 28, 28)))
    expected = (expected.float().unsqueeze(1) / 255.0 - 0.1307) / 0.3081
    assert torch.allclose(data.test_x, expected)
    # train + val is exactly the train file
    assert sorted(torch.cat([data.train_y, data.val_y]).tolist()) == sorted(
        (np.arange(50) % 10).tolist()
    )


def test_idx_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    images = np.zeros((20, 28, 28))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, compress=True)  # gzip'd, no .gz
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 3)  # plain, named .gz
    data = load_data(f"mnist:{tmp_path}")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (14, 2, 4)
    assert data.num_classes == 3


def test_idx_bad_magic(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 10)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((10, 28, 28)))  # images magic
    message = data_error(f"mnist:{tmp_path}")
    assert "t10k-labels-idx1-ubyte" in message
    assert "magic" in message


@pytest.mark.parametrize("compress", [False, True])
def test_idx_truncated(tmp_path: Path, compress: bool) -> None:
    write_mnist_pair(tmp_path, "t10k", 10)
    path = tmp_path / "t10k-images-idx3-ubyte"
    raw = path.read_bytes()[:-100]
    path.write_bytes(gzip.compress(raw) if compress else raw)
    message = data_error(f"mnist:{tmp_path}")
    assert "t10k-images-idx3-ubyte" in message


def test_idx_truncated_header_and_broken_gzip(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 10)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    assert "t10k-images-idx3-ubyte" in data_error(f"mnist:{tmp_path}")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x1f\x8b\x08garbage")
    assert "t10k-images-idx3-ubyte" in data_error(f"mnist:{tmp_path}")


def test_idx_count_mismatch(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 10)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(9))
    assert "10 images" in data_error(f"mnist:{tmp_path}")


def test_idx_half_a_pair(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 10)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert "t10k-labels-idx1-ubyte" in data_error(f"mnist:{tmp_path}")


def test_mnist_missing_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert data_error(f"mnist:{missing}") == (f"data: mnist directory '{missing}' does not exist")


def test_mnist_without_dir() -> None:
    assert "needs a directory" in data_error("mnist:")


def test_mnist_dir_without_idx(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    assert "no MNIST IDX files" in data_error(f"mnist:{tmp_path}")


# --- user loaders ---------------------------------------------------------------------------

LOADER = """
import torch
from torch.utils.data import TensorDataset


def make(n, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 4, generator=g), torch.arange(n) % 4)


def loader():
    return make(20, 0), make(6, 1), make(8, 2)


def as_list():
    return [make(20, 0), make(6, 1), make(8, 2)]


def two():
    return make(20, 0), make(6, 1)


def empty():
    return make(20, 0), make(0, 1), make(8, 2)


def shapes():
    return make(20, 0), TensorDataset(torch.randn(6, 5), torch.zeros(6)), make(8, 2)


def ragged():
    items = [(torch.zeros(3, 4), 0), (torch.zeros(3, 5), 1)]
    return items, items, items


def boom():
    raise RuntimeError("disk on fire")


NOT_CALLABLE = 3
"""


@pytest.fixture()
def loader_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_data.py").write_text(LOADER)
    monkeypatch.chdir(tmp_path)
    return "my_data.py"


def test_file_loader(loader_file: str, tmp_path: Path) -> None:
    data = load_data(f"{loader_file}:loader")
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (20, 6, 8)
    assert data.input_shape == (3, 4)
    assert data.train_x.dtype == torch.float32
    assert data.train_y.dtype == torch.int64
    assert data.num_classes == 4
    assert data.name == f"loader:{tmp_path.resolve() / loader_file}:loader"
    assert load_data(f"{loader_file}:as_list").fingerprint() == data.fingerprint()


def test_module_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "userdata_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sets.py").write_text(LOADER)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data("userdata_pkg.sets:loader")
    assert data.name == "loader:userdata_pkg.sets:loader"
    assert len(data.test_y) == 8


@pytest.mark.parametrize(
    ("attr", "fragment"),
    [
        ("two", "(train, val, test)"),
        ("empty", "validation split is empty"),
        ("shapes", "different x shapes"),
        ("ragged", "inconsistent x shapes"),
        ("boom", "disk on fire"),
        ("missing", "has no attribute 'missing'"),
        ("NOT_CALLABLE", "not a callable"),
    ],
)
def test_loader_failures(loader_file: str, attr: str, fragment: str) -> None:
    assert fragment in data_error(f"{loader_file}:{attr}")


def test_loader_missing_file_and_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "does not exist" in data_error("nope.py:loader")
    assert "cannot import module 'no_such_pkg_xyz.mod'" in data_error("no_such_pkg_xyz.mod:loader")


def test_loader_file_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.py").write_text("def loader(:\n")
    monkeypatch.chdir(tmp_path)
    assert "SyntaxError" in data_error("broken.py:loader")


@pytest.mark.parametrize("spec", ["cifar", "mnist", "digits2", "", "x:"])
def test_unknown_spec(spec: str) -> None:
    assert data_error(spec) == (
        f"data: unknown data spec '{spec}'; use 'digits', 'mnist:DIR', 'file.py:loader' "
        "or 'package.module:loader'"
    )
