"""keep_freed_memory: freed tensors' memory is reused instead of fetched from the kernel again.

Each case runs in a fresh interpreter: the setting is process-wide and cannot be undone."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Minor page faults of 100 fake quantizations of a LeNet-300-100 fc1 weight (0.9 MiB), as every
# training step computes it: its intermediate tensors are allocated and freed each time.
PROBE = """
import resource, sys, torch
from autocompress.heap import keep_freed_memory
from autocompress.quantize import quantize_weight
took = keep_freed_memory() if sys.argv[1] == "keep" else False
weight = torch.randn(300, 784)
for _ in range(3):  # so the heap has grown to hold its tensors
    quantize_weight(weight, 4)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    quantize_weight(weight, 4)
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_tensor_memory_is_reused_not_faulted_in_again() -> None:
    took, kept = page_faults("keep")
    assert took
    _, default = page_faults("default")
    one_weight = 300 * 784 * 4 // 4096  # its 4 KiB pages
    assert default > 20 * one_weight  # glibc's default: fresh pages, call after call
    assert kept < 4 * one_weight  # kept: the same pages again (the heap grown once at most)
