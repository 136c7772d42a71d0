"""Put a hybrid into its exportable state, and tap its spike tensors as extra outputs."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeGuard

import torch
from torch import nn

from hybridize._util import model_input_errors, record_outputs
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

    The spike tensors are the outputs of ``layers`` in the order given, collected by forward hooks
    that live only for the duration of one call (nothing survives the call).
    """

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.model = model
        self.layer_names = [name for name, _ in layers]
        self._layers = [m for _, m in layers]  # plain list: not registered twice as submodules

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.reference(x)[0]

    def reference(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Counter[str]]:
        """``forward``'s outputs, and how many times each spiking layer ran (a layer shared
        within one forward runs more than once; its last output is the one returned)."""
        captured: dict[str, torch.Tensor] = {}
        calls: Counter[str] = Counter()

        def record(name: str, output: torch.Tensor) -> None:
            captured[name] = output
            calls[name] += 1

        with record_outputs(zip(self.layer_names, self._layers, strict=True), record):
            out = self.model(x)
        missing = [name for name in self.layer_names if name not in captured]
        if missing:  # a layer that did not run (unused branch): it cannot be compared
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise ExportError(
                f"spiking layers {shown} do not run in the model's forward, so the parity check "
                "cannot compare their spikes; remove the unused twins or export with --no-check"
            )
        return (out, *(captured[name] for name in self.layer_names)), calls

    def teacher_forced(
        self, x: torch.Tensor, spikes: list[torch.Tensor], calls: Counter[str]
    ) -> list[torch.Tensor]:
        """``[logits, *spikes]`` as eager computes them when every spiking layer gives
        ``spikes`` (an exported program's, in ``layer_names`` order) instead of its own output:
        a difference to ``spikes`` then comes from that layer's segment of the graph alone, not
        from flips upstream that cascade, and the logits are eager's from the exported spikes
        (a difference to the exported logits comes from the graph after or beside the spikes).

        A layer called more than once per forward (one activation module shared by several
        branches, as in Res2Net) is forced and compared at its last call, the one the tap
        exports; its earlier calls run free. ``calls``: the layers' call counts from
        :meth:`reference` on the same input."""
        layers = list(zip(self.layer_names, self._layers, strict=True))
        seen: Counter[str] = Counter()
        computed: dict[str, torch.Tensor] = {}

        def force(name: str, given: torch.Tensor) -> Callable[..., torch.Tensor | None]:
            def hook(
                _module: nn.Module, _inputs: object, output: torch.Tensor
            ) -> torch.Tensor | None:
                seen[name] += 1
                if seen[name] < calls[name]:
                    return None  # an earlier call of a shared layer: its own output
                computed[name] = output.detach().cpu()
                return given.to(device=output.device, dtype=output.dtype)

            return hook

        handles = [
            m.register_forward_hook(force(name, given))
            for (name, m), given in zip(layers, spikes, strict=True)
        ]
        try:
            with torch.no_grad():
                logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return [logits.detach().cpu(), *(computed[name] for name in self.layer_names)]


class ExactTap:
    """:meth:`SpikeTap.teacher_forced` in float64, on a copy of the model made at first use.

    Float32 eager is not exact: in an ill-conditioned model (a layer norm over values with a
    large common offset, a quantiser whose inputs sit near its steps) it differs from the exact
    result by more than a float tolerance, and so may an exported program that is faithful.
    This pass tells which of the two is off. A model that cannot run in float64 leaves
    :attr:`unavailable` saying why, and the check keeps float32's verdict."""

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
                model = copy.deepcopy(self._tap.model).to(torch.float64)
                modules = dict(model.named_modules())
                layers = [(name, modules[name]) for name in self._tap.layer_names]
                self._copy = SpikeTap(model, layers)
            return self._copy.teacher_forced(x.to(torch.float64), spikes, calls)
        except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
            # an op without a float64 kernel, a dtype the model fixes itself: float32 decides
            self.unavailable = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            self._copy = None
            return None
