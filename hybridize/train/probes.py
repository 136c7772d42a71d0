"""Observations of a hybrid during evaluation: LIF firing rates (forward hooks) and gate values."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from hybridize._util import record_outputs
from hybridize.spiking import LIF, FusionBlock


class FiringRates:
    """Context manager: counts spikes and elements at every LIF output while it is open.

    Totals live on the device (no sync per batch); :meth:`totals` reads them once.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules: dict[str, nn.Module] = {
            n: m for n, m in model.named_modules() if isinstance(m, LIF)
        }
        self._spikes: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._recording = contextlib.ExitStack()

    def _record(self, name: str, output: torch.Tensor) -> None:
        s = output.detach().float().sum()
        self._spikes[name] = self._spikes[name] + s if name in self._spikes else s
        self._counts[name] = self._counts.get(name, 0) + output.numel()

    def __enter__(self) -> FiringRates:
        self._recording.enter_context(record_outputs(self.modules.items(), self._record))
        return self

    def __exit__(self, *exc) -> None:
        self._recording.close()

    def totals(self) -> tuple[float, int]:
        """(spikes, elements) over all LIF modules."""
        spikes = sum(float(v) for v in self._spikes.values())
        return spikes, sum(self._counts.values())


def gate_values(model: nn.Module) -> dict[str, float]:
    """Mean gate value of every FusionBlock (per-channel gates are averaged)."""
    out: dict[str, float] = {}
    for name, m in model.named_modules():
        if isinstance(m, FusionBlock):
            gate = getattr(m, "gate", None)
            if isinstance(gate, torch.Tensor):
                out[name or "."] = float(gate.detach().float().mean())
    return out
