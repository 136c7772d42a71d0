"""Keep freed CPU memory in the process (glibc malloc), so that large tensors do not page-fault.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it to the system on free: each such tensor then costs one page fault per
4 KiB touched, the kernel zeroing every page, on every allocation. A hybrid's twins run on
T times the batch, so at 64 px their activations (a [256, 32, 32, 32] float32 tensor is 32 MiB)
cross that line where the ANN's do not, and a quarter to a third of a hybrid's CPU time went
to the operating system's page handling (docs/performance.md, "Page faults"). With mmap off
and trimming off, freed blocks stay in the heap and are reused: the process's resident memory
stays at its peak instead of falling back between steps (what PyTorch's CUDA caching
allocator does on GPUs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "HYBRIDIZE_MALLOC"  # "system" leaves malloc as it is
_M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_applied = [False]


def retain_freed_memory() -> bool:
    """Turn off glibc malloc's mmap and trimming for this process (once; later calls do
    nothing). True when it is in force: Linux with glibc, and ``HYBRIDIZE_MALLOC`` not
    ``system``; False elsewhere (other C libraries keep their behaviour)."""
    if _applied[0]:
        return True
    if os.environ.get(ENV_VAR, "").strip().lower() == "system" or not sys.platform.startswith(
        "linux"
    ):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # -1: never trim the heap's top (man mallopt); 0: never mmap, even for large blocks.
    # mallopt returns 1 on success (musl's stub returns 0: nothing changes there)
    if mallopt(_M_TRIM_THRESHOLD, -1) != 1 or mallopt(_M_MMAP_MAX, 0) != 1:
        return False
    _applied[0] = True
    return True
