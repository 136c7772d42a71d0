"""Fused spiking kernels against the eager ops and the float64 references.

Every option runs through the kernels' pure functions uncompiled (``uncompiled`` backend: the
very source inductor compiles); a few configurations run compiled (one build per function,
dynamic shapes, reused across the module's tests). Forward: bit for bit; backward: to rounding.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from lif_options import LIF_OPTIONS
from torch.utils._python_dispatch import TorchDispatchMode

from hybridize.errors import HybridizeError
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, kernels
from hybridize.spiking.kernels import _select
from hybridize.spiking.kernels import kernel_backend_override as backend

HERE = Path(__file__).resolve().parent


def _load(name: str):
    """A sibling test module (its float64 references and checks), loaded by path."""
    spec = importlib.util.spec_from_file_location(f"_h_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(module: torch.nn.Module, x: torch.Tensor, name: str):
    """Output, input gradient and parameter gradients of one forward + backward under a backend."""
    for p in module.parameters():
        p.grad = None
    xi = x.detach().clone().requires_grad_()
    with backend(name):
        y = module(xi)
        weights = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
        (y * weights.to(y.dtype)).sum().backward()
    return y.detach(), xi.grad, [p.grad.clone() for p in module.parameters()]


def _assert_same(module, x, name: str, rtol: float, atol: float) -> torch.Tensor:
    y_e, g_e, p_e = _run(module, x, "eager")
    y_f, g_f, p_f = _run(module, x, name)
    assert y_f.dtype == y_e.dtype and torch.equal(y_f, y_e)
    torch.testing.assert_close(g_f, g_e, rtol=rtol, atol=atol)
    for a, b in zip(p_f, p_e, strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    return y_e


TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6)}

# ------------------------------------------------------------------ every option, uncompiled


@pytest.mark.parametrize(("v_reset", "decay_input", "detach_reset", "learnable"), LIF_OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lif_kernels_match_eager_on_every_option(
    v_reset, decay_input, detach_reset, learnable, dtype
):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 3, 7, generator=gen) * 1.5 + 0.8).to(dtype)
    lif = LIF(
        tau=3.0, v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset,
        learnable_tau=learnable,
    ).to(dtype)  # fmt: skip
    y = _assert_same(lif, x, "uncompiled", *TOL[dtype])
    assert 0 < y.mean() < 1


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "rect", "triangle"])
def test_lif_kernels_every_surrogate_and_folded_input(surrogate):
    x = torch.randn(4 * 2, 3, 5, generator=torch.Generator().manual_seed(4)) * 2
    lif = LIF(surrogate=surrogate, alpha=1.5, time_steps=4, v_threshold=0.7)
    _assert_same(lif, x, "uncompiled", *TOL[torch.float32])


ENCODER_OPTIONS = [
    dict(surrogate=s, quantize=q, order=o, rescale=r)
    for s, q, o, r in itertools.product(
        ["fourier", "sigsine", "tanhsine", "ste"],
        ["none", "floor", "round"],
        ["msb", "lsb"],
        ["order-aware", "none"],
    )
]


@pytest.mark.parametrize("options", ENCODER_OPTIONS, ids=lambda o: "-".join(o.values()))
def test_encoder_kernels_match_eager_on_every_option(options):
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for bits in (1, 8):
        enc = BitPlaneEncoder(bits=bits, normalize="minmax", **options).double()
        _assert_same(enc, x, "uncompiled", *TOL[torch.float64])


def test_encoder_compat_and_running_modes_match_eager():
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(6)) * 3
    _assert_same(BitPlaneEncoder(compat="has8-released"), x, "uncompiled", 1e-5, 1e-3)
    _assert_same(BitPlaneEncoder(bits=6, alpha=3, offset=0.25), x, "uncompiled", 1e-5, 1e-3)


# The existing float64 references (hand recurrence + BPTT, METHOD.md's surrogate formulas),
# rerun with the kernels in place of the eager ops.
_neuron_tests = _load("test_spiking_neuron")
_surrogate_tests = _load("test_spiking_surrogates")


@pytest.mark.parametrize(("v_reset", "decay_input", "detach_reset"), _neuron_tests.OPTIONS)
@pytest.mark.parametrize("learnable", [False, True])
def test_lif_kernels_against_float64_reference(v_reset, decay_input, detach_reset, learnable):
    with backend("uncompiled"):
        _neuron_tests.test_lif_matches_hand_recurrence_and_bptt(
            v_reset, decay_input, detach_reset, learnable
        )


@pytest.mark.parametrize(("name", "alpha", "offset"), _surrogate_tests.CASES)
@pytest.mark.parametrize("order", ["msb", "lsb"])
def test_encoder_kernels_against_method_formula(name, alpha, offset, order):
    with backend("uncompiled"):
        for rescale, quantize in itertools.product(["order-aware", "none"], ["none", "round"]):
            _surrogate_tests.test_encoder_backward_matches_method_formula(
                name, alpha, offset, rescale, order, quantize
            )


def _fourier_float64(z: torch.Tensor, k: int, alpha: float, offset: float) -> torch.Tensor:
    """METHOD.md's d_k(z) in float64 at eager's angle: U = pi z rounded to float32, u_k = U 2^-k."""
    u = (z * torch.tensor(math.pi, dtype=torch.float32)).double() * 2.0**-k
    harmonics = sum(torch.cos(n * u) for n in range(1, 2 * int(alpha), 2))
    return offset - 2.0 * 2.0**-k * harmonics


@pytest.mark.parametrize("scheme", ["doubling", "direct"])
@pytest.mark.parametrize(("bits", "order", "alpha"), [(8, "msb", 5), (8, "lsb", 3), (4, "msb", 1)])
def test_encoder_backward_cosine_schemes_against_float64_sweep(scheme, bits, order, alpha):
    from hybridize.spiking.encoder import significance
    from hybridize.spiking.kernels import encoder as enc_kernels

    ks = tuple(int(k) for k in significance(bits, order, torch.device("cpu")).tolist())
    cfg = enc_kernels.EncoderKernelConfig(ks, "round", "fourier", float(alpha), 0.25, bits)
    z = torch.linspace(0, 2**bits - 1, 100_003)  # float32, dense over the whole range
    for t, k in enumerate(ks):
        grad = torch.zeros(len(ks), z.numel())
        grad[t] = 1.0  # dz is then plane t's d_k(z)
        d = enc_kernels.encoder_backward(z, grad, torch.ones(len(ks)), cfg, scheme)
        ref = _fourier_float64(z, k, alpha, 0.25)
        assert d.dtype == torch.float32
        # float32 rounding of the cosines and of the harmonic recurrence (~5e-7 measured)
        assert (d.double() - ref).abs().max() <= 1e-6 * ref.abs().max()


def test_encoder_cosine_scheme_choice(monkeypatch):
    from hybridize.spiking.kernels import encoder as enc_kernels

    assert enc_kernels.cosine_scheme() == "direct"
    monkeypatch.setattr(enc_kernels, "COSINES", "doubling")
    assert enc_kernels.cosine_scheme() == "doubling"


# --------------------------------------------------------------------- compiled (inductor)

# inductor's CPU backend needs a C++ compiler; without one `auto` falls back (tested below)
needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler"
)


def _chain(bits: int = 8, normalize: str = "minmax") -> torch.nn.Module:
    enc = BitPlaneEncoder(bits=bits, normalize=normalize)
    return torch.nn.Sequential(enc, LIF(tau=2.0), BitPlaneDecoder(bits=bits))


@pytest.mark.slow
@needs_compiler
def test_compiled_kernels_match_eager_and_reuse_one_build_per_function():
    # minmax: the normalisation inside the encoder kernels; auto: the encoder kernels alone
    chains = [_chain(), _chain(normalize="auto")]
    x = torch.randn(3, 4, 6, 6, generator=torch.Generator().manual_seed(7))
    for chain in chains:
        _assert_same(chain, x, "fused", *TOL[torch.float32])
    builds = dict(_select._compiled)
    assert {key[0] for key in builds} >= {
        "range_encoder_forward", "range_encoder_backward", "encoder_forward",
        "encoder_backward", "lif_forward", "lif_backward",
    }  # fmt: skip
    # another size and rank reuses the same compiled functions (dynamic shapes)
    for chain in chains:
        _assert_same(chain, torch.randn(5, 2, 9) * 4, "fused", *TOL[torch.float32])
    assert dict(_select._compiled) == builds


@pytest.mark.slow
@needs_compiler
def test_compiled_lif_forward_bfloat16_bit_identical():
    # inductor computes half types in float32 unless told to round each step as eager does
    x = (torch.randn(8, 66, generator=torch.Generator().manual_seed(8)) * 1.5 + 0.8).bfloat16()
    cfg = kernels.LIFConfig(1.0, 0.0, True, False, "atan", 2.0)
    with backend("fused"):
        spikes, hs = kernels.run_kernel(("lif_forward", cfg), kernels.lif_forward, x, 2.0, cfg)
    assert spikes.dtype == torch.bfloat16
    ref_spikes, ref_hs = kernels.lif_forward(x, 2.0, cfg)
    assert torch.equal(spikes, ref_spikes) and torch.equal(hs, ref_hs)


# ------------------------------------------------------------------------------- selection


def _graph_names(t: torch.Tensor) -> set[str]:
    seen, todo = set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        todo.extend(f for f, _ in fn.next_functions)
    return {type(f).__name__ for f in seen}


def test_auto_uses_kernels_only_where_they_pay(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    lif = LIF()
    big = torch.randn(8, kernels.AUTO_MIN_NUMEL // 8, requires_grad=True)
    small = torch.randn(8, 4, requires_grad=True)
    with backend("auto"):
        assert kernels.use_fused(big) and not kernels.use_fused(small)
        assert not kernels.use_fused(big.double())  # unusual dtype: eager
        assert not kernels.use_fused(big.to(torch.int32))
        assert "FusedLIFBackward" not in _graph_names(lif(small))
    with backend("eager"):
        assert not kernels.use_fused(big)
    with backend("uncompiled"):
        assert "FusedLIFBackward" in _graph_names(lif(small))
        # the normalisation inside the kernels: no min / max node in the graph
        assert _graph_names(BitPlaneEncoder(bits=4)(small)) == {
            "FusedRangeBitPlaneBackward", "AccumulateGrad"
        }  # fmt: skip
        assert "FusedBitPlaneBackward" in _graph_names(BitPlaneEncoder(4, normalize="auto")(small))
        lif.export_mode = True  # export: standard ops whatever the backend
        assert not _graph_names(lif(small)) & {"FusedLIFBackward", "_LIFSequenceBackward"}


class _SeenOps(TorchDispatchMode):
    """A user dispatch mode like the metrics' op counter: it records every aten op."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_a_dispatch_mode_gets_the_eager_ops_whatever_the_backend():
    """dynamo compiles nothing under a user TorchDispatchMode ("non-infra torch dispatch mode
    present"): forced kernels failed there and auto warned and stayed uncompiled afterwards.
    The mode (op counting) now sees the eager ops, with the same spikes."""
    x = torch.randn(8, 2, 6, 5)
    lif, enc = LIF().eval(), BitPlaneEncoder(bits=4).eval()
    with backend("eager"), torch.no_grad():
        ref = lif(x), enc(x)
    for name in ("auto", "fused", "uncompiled"):
        with backend(name), torch.no_grad(), _SeenOps() as seen:
            assert not kernels.use_fused(torch.randn(8, kernels.AUTO_MIN_NUMEL))
            got = lif(x), enc(x)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
        assert {"mul", "ge"} <= seen.ops  # the eager LIF's ops reach the mode


def test_backend_setting_env_and_errors(monkeypatch):
    monkeypatch.setattr(_select, "_backend", None)
    monkeypatch.setenv(kernels.ENV_VAR, "Eager")
    assert kernels.kernel_backend() == "eager"
    monkeypatch.setenv(kernels.ENV_VAR, "fast")
    with pytest.raises(HybridizeError, match="HYBRIDIZE_KERNELS='fast' is invalid") as err:
        kernels.kernel_backend()
    assert "\n" not in str(err.value)
    kernels.set_kernel_backend("uncompiled")  # the function wins over the environment
    assert kernels.kernel_backend() == "uncompiled"
    with pytest.raises(HybridizeError, match="choose one of: auto, eager, fused"):
        kernels.set_kernel_backend("triton")
    kernels.set_kernel_backend(None)
    monkeypatch.delenv(kernels.ENV_VAR)
    assert kernels.kernel_backend() == "auto"


def test_compile_failure_falls_back_once_with_a_warning(monkeypatch):
    def broken_compile(fn, **kwargs):
        def kernel(*args):
            raise RuntimeError("no C++ compiler found")

        return kernel

    monkeypatch.setattr(_select.torch, "compile", broken_compile)
    monkeypatch.setattr(_select, "AUTO_MIN_NUMEL", 1)
    monkeypatch.setattr(_select, "_compiled", {})
    monkeypatch.setattr(_select, "_failed", set())
    x = torch.randn(5, 2, 6, generator=torch.Generator().manual_seed(9)) * 2
    lif = LIF(v_reset=None)
    with pytest.warns(RuntimeWarning, match="fused spiking kernel lif_forward failed to build"):
        y_auto, g_auto, _ = _run(lif, x, "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # remembered: no second warning, no second attempt
        y_again, _, _ = _run(lif, x, "auto")
    y_e, g_e, _ = _run(lif, x, "eager")
    assert torch.equal(y_auto, y_e) and torch.equal(y_again, y_e)
    torch.testing.assert_close(g_auto, g_e)
    monkeypatch.setattr(_select, "_failed", set())
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        _run(lif, x, "fused")  # forced: the failure surfaces


def test_a_kernel_out_of_memory_is_not_taken_for_a_build_failure(monkeypatch):
    def short_of_memory(fn, **kwargs):
        def kernel(*args):
            raise torch.OutOfMemoryError("CUDA out of memory")

        return kernel

    monkeypatch.setattr(_select.torch, "compile", short_of_memory)
    monkeypatch.setattr(_select, "AUTO_MIN_NUMEL", 1)
    monkeypatch.setattr(_select, "_compiled", {})
    monkeypatch.setattr(_select, "_failed", set())
    with pytest.raises(torch.OutOfMemoryError):
        _run(LIF(), torch.randn(4, 2, 6), "auto")
    assert _select._failed == set()  # the kernel stays in use


def test_lif_keeps_an_inexact_tau_eager_off_the_cpu():
    from hybridize.spiking.kernels import divides_as_eager

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert divides_as_eager(2.0, cuda) and divides_as_eager(0.5, cuda)
    assert not divides_as_eager(3.0, cuda) and not divides_as_eager(torch.tensor(2.0), cuda)
    assert divides_as_eager(3.0, cpu) and divides_as_eager(torch.tensor(1.7), cpu)


# ---------------------------------------------------------------------------------- memory


def _saved(fn, x: torch.Tensor) -> list[torch.Tensor]:
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    xi = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(xi)
    return saved


def test_kernels_save_only_h_and_z():
    x = torch.randn(4, 3, 5)
    with backend("uncompiled"):
        lif_saved = _saved(LIF(), x)
        enc_saved = _saved(lambda t: BitPlaneEncoder(bits=8, normalize="fixed", lo=-3, hi=3)(t), x)
    assert [tuple(t.shape) for t in lif_saved] == [(4, 15)]  # H only, [T, M]
    # z (and the clamp's r) of x's size: no plane [8, 4, 3, 5] is kept
    assert max(t.numel() for t in enc_saved) == x.numel()


def _conv_branch() -> torch.nn.Module:
    from hybridize.spiking import SpikingBranch

    torch.manual_seed(0)
    twin = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3, padding=1), LIF(time_steps=4), torch.nn.Conv2d(3, 2, 1)
    )
    return SpikingBranch(twin, BitPlaneEncoder(bits=4, normalize="minmax"), BitPlaneDecoder(4))


def test_spiking_branch_saves_planes_and_spikes_as_bits_and_gradients_are_unchanged():
    branch = _conv_branch()
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(10))
    stored: dict[str, list[torch.Tensor]] = {}
    for name in ("eager", "uncompiled"):
        seen: list[torch.Tensor] = []

        def pack(t, seen=seen):
            seen.append(t)
            return t

        with backend(name), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = branch(x.detach().requires_grad_())
        stored[name] = seen
        assert y.requires_grad
    # the outer hooks see what is stored: both convs' 0/1 inputs as bits, nothing else
    assert sorted(tuple(t.shape) for t in stored["uncompiled"] if t.dtype == torch.uint8) == [
        (75,),  # the planes, flattened [T*N, ...]: 600 values, 8 to a byte
        (113,),  # the LIF's spikes: 900 values, the last byte half used
    ]
    eager_binary = [t for t in stored["eager"] if t.dim() == 4 and t.shape[0] == 12]
    assert all(t.dtype == torch.float32 for t in eager_binary)  # eager: as before
    _assert_same(branch, x, "uncompiled", *TOL[torch.float32])  # unpacked exactly


def test_one_byte_saves_are_off_when_compiling_or_without_grad(monkeypatch):
    from hybridize.spiking.kernels import compact_binary_saves

    with backend("fused"), torch.no_grad():
        assert type(compact_binary_saves()).__name__ == "nullcontext"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with backend("fused"):
        assert type(compact_binary_saves()).__name__ == "nullcontext"
        assert not kernels.use_fused(torch.randn(4, requires_grad=True))


def test_planes_of_an_input_without_gradient_are_saved_as_bits():
    # a stem: the image needs no gradient, so the encoder's planes come from standard ops
    branch = _conv_branch()
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(11))
    for name, planes_dtype in (("eager", torch.float32), ("uncompiled", torch.uint8)):
        saved: list[torch.Tensor] = []

        def pack(t, saved=saved):
            saved.append(t)
            return t

        with backend(name), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = branch(x)
        assert y.requires_grad and not x.requires_grad
        first_conv_input = saved[0]  # the first thing stored: the first conv's input
        assert first_conv_input.dtype == planes_dtype
        if name == "uncompiled":  # 600 planes' values, 8 to a byte
            assert first_conv_input.shape == (12 * 2 * 25 // 8,)
        else:
            assert first_conv_input.shape == (12, 2, 5, 5)


def test_kernel_build_does_not_log_the_cuda_home_probe():
    """Importing torch.utils.cpp_extension logs 'No CUDA runtime is found' where CUDA files exist
    without a GPU (as here); the kernels' first build imports it with that logger muted."""
    import subprocess
    import sys

    code = (
        "import logging; logging.basicConfig()\n"
        "from hybridize.spiking.kernels._select import _import_cpp_extension_quietly as quiet\n"
        "quiet()\n"
        "import torch.utils.cpp_extension\n"
        "print(logging.getLogger('torch.utils.cpp_extension').level)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "No CUDA runtime" not in done.stderr
    assert done.stdout.strip() == "0"  # the logger's level is given back


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize("tau", [3.0, torch.tensor(1.7)], ids=["float-3", "tensor-1.7"])
def test_compiled_lif_forward_divides_as_eager(tau):
    """1/3 and 1/1.7 are not exact: a kernel that multiplied by the reciprocal instead of
    dividing would move H by an ulp and flip spikes at the threshold. On the CPU inductor
    divides as eager does; elsewhere the LIF keeps such a tau on the eager path."""
    x = torch.randn(8, 4099, generator=torch.Generator().manual_seed(9)) * 1.5 + 0.8
    cfg = kernels.LIFConfig(1.0, 0.0, True, False, "atan", 2.0)
    key = ("lif_forward", cfg, "tensor" if isinstance(tau, torch.Tensor) else tau)
    with backend("fused"):
        spikes, hs = kernels.run_kernel(key, kernels.lif_forward, x, tau, cfg)
    ref_spikes, ref_hs = kernels.lif_forward(x, tau, cfg)
    assert torch.equal(hs, ref_hs) and torch.equal(spikes, ref_spikes)


def test_lif_asks_the_division_gate_before_compiled_kernels(monkeypatch):
    from hybridize.spiking import neuron

    used: list[str] = []
    monkeypatch.setattr(neuron, "divides_as_eager", lambda tau, device: False)
    monkeypatch.setattr(neuron, "fused_lif", lambda *a: used.append("fused") or a[0] * 0)
    x = torch.randn(4, 2, 6, requires_grad=True)
    _run(LIF(), x, "fused")  # compiled: the gate says no, so the eager sequence runs
    assert used == []
    with backend("uncompiled"):  # op by op divides exactly anywhere: the gate does not apply
        LIF()(x)
    assert used == ["fused"]
