"""Freed memory kept in the process by the C library's malloc, so the next step reuses it.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block above its
mmap threshold (128 KiB at first, raised only as such blocks are freed) with fresh pages from
the kernel and gives them back on ``free``, and trims the heap's free top above 128 KiB the
same way. A fine-tuning step allocates and frees the same tensors every time (a LeNet-300-100
student's fc1 weight, masked, fake-quantized and their gradients: 0.9 MiB each; a LeNet-5
validation pass's activations: 44 MiB), so each allocation paid for zeroing new pages. Kept,
on 2 cores: a LeNet-300-100 epoch 115-125 -> 92-101 ms, a LeNet-5 validation pass 39 -> 27 ms
(docs/BENCHMARKS.md). The cost: the process keeps up to its peak use resident instead of
returning it between steps, which a search process, running the same model for hours, would
take again at the next step anyway.

This is the only module that calls the C library (through ``ctypes``); elsewhere than glibc
(macOS, musl) it changes nothing.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to this size come from the heap and are reused; larger ones still get their own
# pages (their compute dwarfs the page faults).
MMAP_THRESHOLD = 256 << 20
# Free memory at the heap's top kept up to this size before it is returned to the kernel.
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already uses
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False  # not glibc: other libraries' mallopt parameters differ or do nothing
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trimmed = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    # some glibc versions refuse an mmap threshold above 32 MiB (half their largest heap)
    mapped = any(mallopt(_M_MMAP_THRESHOLD, size) for size in (MMAP_THRESHOLD, 32 << 20))
    return trimmed and mapped
