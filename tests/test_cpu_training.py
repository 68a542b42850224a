"""The training processes' CPU settings: freed activations are reused, not page-faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Allocates a 30 MiB tensor (under the 32 MiB ceiling of keep_freed_memory), frees it, and prints
# glibc's count of bytes in mapped blocks while it lived and of free bytes kept in the heap after it.
_MALLINFO_SCRIPT = """
import ctypes, sys, torch
from robotrl.cpu_training import configure_cpu_training
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
          "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    configure_cpu_training(1)
before = libc.mallinfo2()
x = torch.ones(30 * 2**20 // 4)
living = libc.mallinfo2()
del x
after = libc.mallinfo2()
print(living.hblkhd - before.hblkhd, after.fordblks - before.fordblks)
"""


def _mapped_and_kept_bytes(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _MALLINFO_SCRIPT, mode], capture_output=True, text=True, check=True
    )
    mapped, kept = out.stdout.split()[-2:]
    return int(mapped), int(kept)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")
def test_freed_activations_stay_in_the_heap_for_the_next_pass():
    size = 30 * 2**20
    # By default glibc maps such a block on its own and unmaps it when freed: the next pass faults its
    # pages in again (4 MiB blocks: 1024 faults each).
    mapped, kept = _mapped_and_kept_bytes("default")
    assert mapped >= size and kept < size, (mapped, kept)
    mapped, kept = _mapped_and_kept_bytes("keep")
    assert mapped == 0 and kept >= 0.9 * size, (mapped, kept)


def test_configure_cpu_training_sets_the_thread_count():
    import torch

    from robotrl.cpu_training import configure_cpu_training

    before = torch.get_num_threads()
    try:
        configure_cpu_training(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
