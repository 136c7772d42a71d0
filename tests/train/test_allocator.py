"""retain_freed_memory: large tensors come from the heap (no mmap) after it, values unchanged.

Each check runs in a fresh interpreter: the setting is for the whole process and cannot be
undone. glibc's mallinfo2 reports the bytes held in mmapped blocks (hblkhd): a 64 MiB tensor
adds them before the call and not after.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import ctypes, ctypes.util, sys
import torch
from hybridize.train.allocator import retain_freed_memory

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info

def mmapped_by_a_big_tensor():
    before = libc.mallinfo2().hblkhd
    t = torch.ones(16 << 20)  # 64 MiB, above any mmap threshold glibc allows
    return libc.mallinfo2().hblkhd - before, t

def step(seed):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(64, 3, 40, 40, requires_grad=True)
    conv(x).square().sum().backward()
    return x.grad, conv.weight.grad

grown, _ = mmapped_by_a_big_tensor()
ref = step(0)
assert grown >= 64 << 20, grown
assert retain_freed_memory() and retain_freed_memory()  # once, then a no-op
grown, _ = mmapped_by_a_big_tensor()
assert grown == 0, grown
out = step(0)
assert all(torch.equal(a, b) for a, b in zip(ref, out))
print("ok")
"""


def _run(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _has_mallinfo2() -> bool:
    name = ctypes.util.find_library("c")
    return bool(name) and hasattr(ctypes.CDLL(name), "mallinfo2")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_mallinfo2(), reason="glibc")
def test_large_tensors_stay_in_the_heap_and_values_are_unchanged():
    done = _run(SCRIPT, HYBRIDIZE_MALLOC="")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_system_setting_leaves_malloc_alone():
    done = _run(
        "from hybridize.train.allocator import retain_freed_memory as r; print(r())",
        HYBRIDIZE_MALLOC="system",
    )
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
