"""Which implementation runs the spiking chain (eager ops or fused kernels), and the cache of
compiled kernels.

One setting: ``set_kernel_backend(name)`` if called, else the ``HYBRIDIZE_KERNELS`` environment
variable, else ``"auto"``. ``auto`` uses the fused kernels for float32 / bfloat16 / float16
tensors of at least ``AUTO_MIN_NUMEL`` elements on CPU or CUDA when torch.compile is available;
``fused`` forces them (any floating dtype and size, errors surface); ``eager`` forces today's ops;
``uncompiled`` runs the fused kernels' pure functions op by op (no compiler: for debugging, and
for tests of the kernels' source on every option without a compilation each).
Inside an outer torch.compile or an export the eager ops are used (the outer compiler fuses them),
and so they are under a ``TorchDispatchMode`` (the op counter of :mod:`hybridize.metrics`):
dynamo does not compile inside one, and the mode is there to see the ops themselves.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from hybridize.errors import SpikingConfigError
from hybridize.spiking.options import check_choice

KERNEL_BACKENDS = ("auto", "eager", "fused", "uncompiled")
ENV_VAR = "HYBRIDIZE_KERNELS"
# Below this many elements (x T) a compilation does not pay for itself (tiny models, unit tests).
AUTO_MIN_NUMEL = 1 << 20
_AUTO_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_backend: str | None = None  # set_kernel_backend's choice; None defers to the environment
_compiled: dict[tuple, Callable[..., Any]] = {}  # (name, config) -> compiled kernel
_failed: set[tuple] = set()  # keys whose compilation failed once (auto then runs them eagerly)


def set_kernel_backend(name: str | None) -> None:
    """Force ``"eager"``, ``"fused"`` or ``"uncompiled"`` (the fused kernels' code without a
    compiler, for debugging) kernels, or ``"auto"``; None defers to HYBRIDIZE_KERNELS. A
    process-wide setting (read in autograd's backward threads too), not a context variable."""
    global _backend
    _backend = (
        None if name is None else check_choice("set_kernel_backend", "name", name, KERNEL_BACKENDS)
    )


def kernel_backend() -> str:
    """The backend in effect: set_kernel_backend's, else HYBRIDIZE_KERNELS, else ``auto``."""
    if _backend is not None:
        return _backend
    env = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if env not in KERNEL_BACKENDS:
        raise SpikingConfigError(
            f"{ENV_VAR}={env!r} is invalid; set it to one of: {', '.join(KERNEL_BACKENDS)}"
        )
    return env


@contextmanager
def kernel_backend_override(name: str) -> Iterator[None]:
    """Use backend ``name`` inside the block (tests, debugging); restores the previous setting."""
    global _backend
    previous = _backend
    set_kernel_backend(name)
    try:
        yield
    finally:
        _backend = previous


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling is not None and is_compiling())


def _in_dispatch_mode() -> bool:
    """A user ``TorchDispatchMode`` is active (infra modes such as FakeTensor's do not count)."""
    from torch.utils import _python_dispatch

    probe = getattr(_python_dispatch, "is_in_torch_dispatch_mode", None)
    if probe is None:  # older torch: any mode on the stack
        return bool(torch._C._len_torch_dispatch_stack())
    return bool(probe(include_infra_modes=False))


def use_fused(x: Tensor, steps: int = 1) -> bool:
    """True when the fused kernels should run on x (with a gradient, or forward only without
    one; the callers rule out export mode); ``steps`` is the number of time steps the kernel
    expands x into (its work is x.numel() * steps)."""
    mode = kernel_backend()
    if mode == "eager" or _compiling() or _in_dispatch_mode() or not x.is_floating_point():
        return False
    if mode in ("fused", "uncompiled"):
        return True
    return (
        x.device.type in ("cpu", "cuda")
        and x.dtype in _AUTO_DTYPES
        and x.numel() * steps >= AUTO_MIN_NUMEL
        and hasattr(torch, "compile")
    )


def _fresh(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object: dynamo's per-code cache (and its size limit) is
    then per kernel configuration, not shared by all of them."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


def _import_cpp_extension_quietly() -> None:
    """Inductor's CPU build imports ``torch.utils.cpp_extension``, whose import logs "No CUDA
    runtime is found" on a machine with CUDA files but no GPU; the CPU kernels need no CUDA, so
    the first import happens here with that one logger muted."""
    if "torch.utils.cpp_extension" in sys.modules:
        return
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        importlib.import_module("torch.utils.cpp_extension")
    finally:
        log.setLevel(level)


def run_kernel(key: tuple, fn: Callable[..., Any], *args: Any, backend: str | None = None) -> Any:
    """Run the compiled form of the pure function ``fn`` (built once per ``key`` and the dtypes
    and device types of its tensor arguments; dynamic shapes). If compiling fails under
    ``auto`` the failure is remembered (for that key and those dtypes), warned about once, and
    ``fn`` runs eagerly (same source, same values); under ``fused`` it raises. ``backend``: the
    setting to obey (a backward passes its forward's, so a setting changed in between does
    not switch paths halfway); default the one in force."""
    mode = backend if backend is not None else kernel_backend()
    tensors = tuple((a.dtype, a.device.type) for a in args if isinstance(a, Tensor))
    key = (*key, tensors)
    if key in _failed or mode in ("uncompiled", "eager"):
        return fn(*args)
    kernel = _compiled.get(key)
    if kernel is None:
        _import_cpp_extension_quietly()
        kernel = torch.compile(
            _fresh(fn, str(len(_compiled))),
            dynamic=True,
            fullgraph=True,
            # round every half-precision intermediate as eager does: spikes stay bit-identical
            options={"emulate_precision_casts": True},
        )
        _compiled[key] = kernel
    # detached: no view base (dynamo would guard on, and index through, the base's strides:
    # scalar code for a channels-last base) and no requires_grad (one build for both)
    args = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
    try:
        # ints and floats (significances, thresholds, tau) are constants of a configuration:
        # baked into the kernel, not passed as symbols (a symbolic 2^-k is a pow per element)
        with (
            torch._dynamo.config.patch(specialize_int=True, specialize_float=True),
            torch.profiler.record_function(f"hybridize::{key[0]}"),  # named in profiles
        ):
            return kernel(*args)
    except Exception as exc:  # compiler missing or broken: inductor/dynamo raise many types
        if mode == "fused" or isinstance(exc, _OUT_OF_MEMORY):
            raise  # memory is short for the eager path too: the caller's error, not the kernel's
        first = not _failed
        _failed.add(key)
        if first:  # one warning per process, however many kernels fail
            warnings.warn(
                f"hybridize: the fused spiking kernel {key[0]} failed to build or run "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"running it without compilation. Set {ENV_VAR}=eager to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
        return fn(*args)
