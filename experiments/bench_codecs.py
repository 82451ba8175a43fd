"""Which entropy coder should wrap the .acz payload? Size and time on a compressed LeNet-5.

Run from the repository root (about a minute on 2 CPU cores):

    PYTHONPATH=. python experiments/bench_codecs.py [--data mnist:../shared/data/mnist]

Trains LeNet-5 for two epochs (MNIST when the directory exists, else random images: the table
then says so), compresses it with three plans, fine-tunes each for one epoch, packs the
payload with no coder and times every coder on that same payload (best of 5 runs). zstd
needs ``pip install zstandard``; without it its rows are skipped. The last table compares the
file (default coder) with the size formula and times ``pack``/``unpack``/``load_model``.
"""

from __future__ import annotations

import argparse
import lzma
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import torch

from autocompress import artifact
from autocompress.compress import compress
from autocompress.data import load_data
from autocompress.finetune import fit
from autocompress.models import build_model
from autocompress.plan import CompressionPlan, DistillPlan, LayerPlan
from autocompress.size import model_size

try:
    import zstandard
except ImportError:  # an optional comparison, not a dependency
    zstandard = None

PLANS = {
    "mixed 3-6b": {
        "conv1": LayerPlan(6, 0.3),
        "conv2": LayerPlan(4, 0.7),
        "fc1": LayerPlan(3, 0.92),
        "fc2": LayerPlan(5, 0.2, act_bits=8),
    },
    "8b dense": {name: LayerPlan(8) for name in ("conv1", "conv2", "fc1", "fc2")},
    "2-4b sparse": {
        "conv1": LayerPlan(4, 0.5),
        "conv2": LayerPlan(3, 0.9),
        "fc1": LayerPlan(2, 0.97),
        "fc2": LayerPlan(4, 0.5),
    },
}
Coder = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def coders(length: int) -> dict[str, Coder]:
    """Every coder for a payload of ``length`` bytes (raw LZMA2's dictionary depends on it)."""
    filters = artifact._lzma_filters(length)  # the file's own raw-LZMA2 settings
    found: dict[str, Coder] = {
        "zlib -9": (lambda b: zlib.compress(b, 9), zlib.decompress),
        "lzma raw 9e (ours)": (
            lambda b: lzma.compress(b, lzma.FORMAT_RAW, filters=filters),
            lambda c: lzma.decompress(c, lzma.FORMAT_RAW, filters=filters),
        ),
        "xz 9e": (
            lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME, check=lzma.CHECK_NONE),
            lzma.decompress,
        ),
    }
    if zstandard is None:
        return found
    for level in (19, 22):
        compressor = zstandard.ZstdCompressor(level=level)
        found[f"zstd -{level}"] = (compressor.compress, zstandard.ZstdDecompressor().decompress)
    return found


def best_ms(func: Callable[[], object], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist:../shared/data/mnist")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    if Path(args.data.removeprefix("mnist:")).is_dir():
        data = load_data(args.data)
        train, val, source = (data.train_x, data.train_y), (data.val_x, data.val_y), args.data
    else:
        x, y = torch.randn(3000, 1, 28, 28), torch.randint(0, 10, (3000,))
        train, val, source = (x[:2500], y[:2500]), (x[2500:], y[2500:]), "random images"
    spec = artifact.ModelSpec("lenet5", (1, 28, 28), 10)
    teacher = build_model(spec.model, spec.input_shape, spec.num_classes)
    fit(teacher, train, val, epochs=2, lr=1e-3, batch_size=128, seed=0)
    print(f"LeNet-5 trained on {source}")
    if zstandard is None:
        print("zstandard is not installed: no zstd rows (pip install zstandard)")
    print()
    sizes = []
    print(f"{'plan':<12} {'coder':<20} {'bytes':>8} {'vs none':>8} {'pack ms':>8} {'unpack ms':>9}")
    for label, layers in PLANS.items():
        plan = CompressionPlan(layers=layers, distill=DistillPlan(enabled=False))
        student = compress(teacher, plan, train[0][:2])
        fit(student, train, val, epochs=1, lr=1e-3, batch_size=128, seed=0)
        payload = artifact.pack(student, plan, spec, codec="none")[artifact.PREFIX.size :]
        print(f"{label:<12} {'none':<20} {len(payload):>8} {1:>8.3f} {'':>8} {'':>9}")
        for name, (encode, decode) in coders(len(payload)).items():
            packed = encode(payload)
            assert decode(packed) == payload
            print(
                f"{'':<12} {name:<20} {len(packed):>8} {len(packed) / len(payload):>8.3f} "
                f"{best_ms(lambda e=encode, p=payload: e(p)):>8.2f} "
                f"{best_ms(lambda d=decode, p=packed: d(p)):>9.2f}"
            )
        data_bytes = artifact.pack(student, plan, spec)
        sizes.append(
            (
                label,
                model_size(student, plan.bits).total_bytes,
                len(data_bytes),
                best_ms(lambda s=student, p=plan: artifact.pack(s, p, spec)),
                best_ms(lambda d=data_bytes: artifact.unpack(d)),
                best_ms(lambda d=data_bytes: artifact.load_model(d)),
            )
        )
    print(f"\nfile ({artifact.DEFAULT_CODEC}) vs formula; pack/unpack/load_model, best of 5:")
    print(f"{'plan':<12} {'formula':>8} {'file':>8} {'ratio':>6} {'pack ms':>8}", end="")
    print(f" {'unpack':>7} {'load':>7}")
    for label, formula, file_bytes, pack_ms, unpack_ms, load_ms in sizes:
        print(
            f"{label:<12} {formula:>8} {file_bytes:>8} {file_bytes / formula:>6.3f} "
            f"{pack_ms:>8.1f} {unpack_ms:>7.1f} {load_ms:>7.1f}"
        )


if __name__ == "__main__":
    main()
