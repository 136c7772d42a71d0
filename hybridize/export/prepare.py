"""Put a hybrid into its exportable state, and tap its spike tensors as extra outputs."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeGuard

import torch
from torch import nn

from hybridize._util import first_line, model_input_errors, record_outputs
from hybridize.errors import ExportError
from hybridize.spiking import LIF, BitPlaneEncoder

# the module classes whose outputs are spikes or bit planes
SPIKING_TYPES: tuple[type[nn.Module], ...] = (LIF, BitPlaneEncoder)


def spiking_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every LIF neuron and bit-plane encoder in ``model``, by qualified name, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SPIKING_TYPES)]


class _Exportable(Protocol):
    """A module with an ``export_mode`` switch (standard ops only when True)."""

    export_mode: bool


def _has_export_mode(m: nn.Module) -> TypeGuard[_Exportable]:
    return hasattr(m, "export_mode")


@contextmanager
def export_state(model: nn.Module, example: torch.Tensor | None = None) -> Iterator[nn.Module]:
    """Eval mode and ``export_mode = True`` on every module that has it; both restored after.
    With ``example``, the model first runs on it once: an input it does not accept (another
    image size) is one line here rather than an exporter's traceback."""
    training = {m: m.training for m in model.modules()}
    flagged = {m: m.export_mode for m in model.modules() if _has_export_mode(m)}
    model.eval()
    for flag in flagged:
        flag.export_mode = True
    try:
        if example is not None:
            device = next((p.device for p in model.parameters()), example.device)
            with torch.no_grad(), model_input_errors(tuple(example.shape), ExportError):
                model(example.to(device))
        yield model
    finally:
        for m, was_training in training.items():
            m.training = was_training
        for flag, was_on in flagged.items():
            flag.export_mode = was_on


class SpikeTap(nn.Module):
    """Wraps a model so that forward returns ``(logits, *spike_tensors)``.

    The spike tensors are the outputs of ``layers`` in the order given, every call of each (a
    layer shared within one forward, as Res2Net shares its activation, gives one tensor per call,
    in call order), collected by forward hooks that live only for the duration of one call
    (nothing survives the call).
    """

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.model = model
        self.layer_names = [name for name, _ in layers]
        self._layers = [m for _, m in layers]  # plain list: not registered twice as submodules

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.reference(x)[0]

    def reference(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Counter[str]]:
        """``forward``'s outputs, and how many times each spiking layer ran."""
        captured: dict[str, list[torch.Tensor]] = {name: [] for name in self.layer_names}

        def record(name: str, output: torch.Tensor) -> None:
            captured[name].append(output)

        with record_outputs(zip(self.layer_names, self._layers, strict=True), record):
            out = self.model(x)
        missing = [name for name in self.layer_names if not captured[name]]
        if missing:  # a layer that did not run (unused branch): it cannot be compared
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise ExportError(
                f"spiking layers {shown} do not run in the model's forward, so the parity check "
                "cannot compare their spikes; remove the unused twins or export with --no-check"
            )
        calls = Counter({name: len(outputs) for name, outputs in captured.items()})
        return (out, *(t for name in self.layer_names for t in captured[name])), calls

    def output_names(self, calls: Counter[str]) -> list[str]:
        """A name per tapped tensor of :meth:`reference`: the layer's, with the call where the
        layer runs more than once."""
        return [
            name if calls[name] == 1 else f"{name} (call {k + 1} of {calls[name]})"
            for name in self.layer_names
            for k in range(calls[name])
        ]

    def teacher_forced(
        self, x: torch.Tensor, spikes: list[torch.Tensor], calls: Counter[str]
    ) -> list[torch.Tensor]:
        """``[logits, *spikes]`` as eager computes them when every call of every spiking layer
        gives ``spikes`` (an exported program's, in :meth:`reference`'s order) instead of its
        own output: a difference to ``spikes`` then comes from that layer's segment of the
        graph alone, not from flips upstream that cascade, and the logits are eager's from the
        exported spikes (a difference to the exported logits comes from the graph after or
        beside the spikes, never from a flip). ``calls``: the layers' call counts from
        :meth:`reference` on the same input."""
        given: dict[str, list[torch.Tensor]] = {}
        rest = iter(spikes)
        for name in self.layer_names:
            given[name] = [next(rest) for _ in range(calls[name])]
        computed: dict[str, list[torch.Tensor]] = {name: [] for name in self.layer_names}

        def force(name: str) -> Callable[..., torch.Tensor | None]:
            def hook(
                _module: nn.Module, _inputs: object, output: torch.Tensor
            ) -> torch.Tensor | None:
                done = computed[name]
                done.append(output.detach().cpu())
                if len(done) > len(given[name]):
                    return None  # more calls than the exported program made: caught below
                return given[name][len(done) - 1].to(device=output.device, dtype=output.dtype)

            return hook

        handles = [
            m.register_forward_hook(force(name))
            for name, m in zip(self.layer_names, self._layers, strict=True)
        ]
        try:
            with torch.no_grad():
                logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        changed = [n for n in self.layer_names if len(computed[n]) != calls[n]]
        if changed:
            raise ExportError(
                f"spiking layer {changed[0]} ran {len(computed[changed[0]])} times given the "
                f"exported spikes and {calls[changed[0]]} times on its own: the model's control "
                "flow depends on its spikes, which an exported graph cannot follow"
            )
        return [logits.detach().cpu(), *(t for n in self.layer_names for t in computed[n])]


class ExactTap:
    """:meth:`SpikeTap.teacher_forced` in float64 on the CPU, on a copy of the model made at
    first use.

    Float32 eager is not exact: in an ill-conditioned model (a layer norm over values with a
    large common offset, a quantiser whose inputs sit near its steps) it differs from the exact
    result by more than a float tolerance, and so may an exported program that is faithful.
    This pass tells which of the two is off. It runs on the CPU whatever the model's device
    (float64 is slow or missing on many GPUs, and a GPU's float32 may be TF32). A model that
    cannot run in float64 leaves :attr:`unavailable` saying why, and the check keeps float32's
    verdict."""

    def __init__(self, tap: SpikeTap) -> None:
        self._tap = tap
        self._copy: SpikeTap | None = None
        self.unavailable = ""

    def teacher_forced(
        self, x: torch.Tensor, spikes: list[torch.Tensor], calls: Counter[str]
    ) -> list[torch.Tensor] | None:
        if self.unavailable:
            return None
        try:
            if self._copy is None:
                model = _float64_cpu_copy(self._tap.model)
                modules = dict(model.named_modules())
                layers = [(name, modules[name]) for name in self._tap.layer_names]
                self._copy = SpikeTap(model, layers)
            x = x.cpu()
            if x.is_floating_point():  # an integer image stays one: the model decodes it itself
                x = x.to(torch.float64)
            return self._copy.teacher_forced(x, spikes, calls)
        except Exception as exc:  # any failure of this optional pass: float32 eager decides
            self.unavailable = f"{type(exc).__name__}: {first_line(exc, 200)}"
            self._copy = None
            return None


def _float64_cpu_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU with its floating tensors in float64, made without a
    second copy on the model's own device (deepcopy takes the prepared tensors from its memo):
    parameters, buffers and tensors kept as plain module attributes, each copied (never shared
    with the model, also where no conversion was needed)."""

    def cpu64(t: torch.Tensor) -> torch.Tensor:
        dtype = torch.float64 if t.is_floating_point() else t.dtype
        return t.detach().to("cpu", dtype, copy=True)

    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(cpu64(p), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = cpu64(b)
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and id(value) not in memo:
                memo[id(value)] = cpu64(value)
    return copy.deepcopy(model, memo)
