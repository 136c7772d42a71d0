"""``inspect``: run a hybrid on some inputs and measure it region by region."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from hybridize._util import model_input_errors, param_count, record_outputs
from hybridize.conversion.regions import ROOT_REGION, SpikingRegion, find_regions, region_holds
from hybridize.errors import HybridizeError
from hybridize.metrics.counting import OpCounter, OpTally
from hybridize.metrics.energy import EnergyModel, energy_model
from hybridize.metrics.report import LayerStats, RegionStats, Report

if TYPE_CHECKING:
    from hybridize.spiking.neuron import LIF


def _batches(inputs: torch.Tensor | Iterable, max_batches: int | None) -> Iterator[torch.Tensor]:
    items = [inputs] if isinstance(inputs, torch.Tensor) else inputs
    for i, item in enumerate(items):
        if max_batches is not None and i >= max_batches:
            return
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise HybridizeError(
                f"inspect: batch {i} is a {type(x).__name__}, not a tensor; pass a tensor, or an "
                "iterable of tensors or (images, labels) pairs"
            )
        if x.ndim == 0 or x.shape[0] == 0:
            raise HybridizeError(
                f"inspect: batch {i} holds no images (shape {tuple(x.shape)}); pass batches of "
                "at least one image"
            )
        yield x


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, with nn.MultiheadAttention's fast path off: in eval mode
    without grad it runs one fused op the counter cannot see into (its MACs would count 0)."""
    modes = {m: m.training for m in model.modules()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m, was in modes.items():
            m.training = was


def _inspect_error(message: str) -> HybridizeError:
    return HybridizeError(f"inspect: {message}")


def _input_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype floating inputs are cast to: the model's first floating parameter's."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


class _Spikes:
    """Per-LIF accumulators, filled by a forward hook."""

    def __init__(self, name: str, region: str, module: LIF) -> None:
        self.name, self.region, self.module = name, region, module
        self.spikes = 0
        self.slots = 0
        self.time_steps = 0
        self.neurons = 0

    def as_steps(self, out: torch.Tensor, n: int) -> torch.Tensor:
        """The output as [T, N, neurons] (folded [T*N, ...] or time-first [T, N, ...])."""
        if self.module.time_steps:
            return out.reshape(self.module.time_steps, n, -1)
        return out.reshape(out.shape[0], n, -1)


def inspect(
    model: nn.Module,
    inputs: torch.Tensor | Iterable | str,
    *,
    energy: str | EnergyModel = "45nm",
    max_batches: int | None = None,
    raster_region: str | None = None,
    raster_neurons: int = 64,
    batch_size: int = 8,
    img_size: int | None = None,
    data_root: str | None = None,
) -> Report:
    """Run ``model`` (eval mode, no grad) on ``inputs`` and measure every spiking region.

    ``inputs`` is a tensor batch, an iterable of tensors or ``(images, labels)`` pairs (at
    most ``max_batches`` are used), or a name: ``samples`` (real images), ``random`` or a data
    set (``max_batches`` batches of ``batch_size`` at ``img_size``; see ``inputs.py``). Per region: mode, T, parameters, dense MACs of the ANN
    branch, twin MACs and event-driven ACs (operator-level counting, see ``counting.py``),
    measured firing rate of every LIF, gate values and energy under the ``energy`` preset.
    A spike raster (first sample, up to ``raster_neurons`` neurons per LIF) is kept for
    ``raster_region`` (default: the first region).
    """
    from hybridize.spiking.fusion import FusionBlock
    from hybridize.spiking.neuron import LIF

    model_energy = energy_model(energy)
    source = "given"
    if isinstance(inputs, str):
        from hybridize.metrics.inputs import named_inputs, resolve_data_name

        source = resolve_data_name(inputs)
        inputs = named_inputs(
            model,
            source,
            batches=max_batches or 1,
            batch_size=batch_size,
            img_size=img_size,
            data_root=data_root,
        )
    regions = find_regions(model)
    names = [r.name for r in regions]
    if raster_region is not None and raster_region not in names:
        raise HybridizeError(
            f"inspect: no spiking region named {raster_region!r}; regions are {names}"
        )
    raster_name = raster_region or (names[0] if names else None)
    stack: list[tuple[str, str]] = []
    handles = []

    def push(entry: tuple[str, str]) -> Callable[[nn.Module, object], None]:
        def pre(_m: nn.Module, _args: object) -> None:
            stack.append(entry)

        return pre

    def pop(_m: nn.Module, _args: object, _out: object) -> None:
        stack.pop()

    for r in regions:
        parts: list[tuple[nn.Module, str]] = []
        if r.mode == "parallel":
            block = r.module
            assert isinstance(block, FusionBlock), "find_regions: a parallel region is a block"
            parts = [(block, "fusion"), (block.ann, "ann"), (r.branch, "twin")]
        elif r.mode == "replace":
            parts = [(r.module, "twin")]
        for module, role in parts:
            handles.append(module.register_forward_pre_hook(push((r.name, role))))
            handles.append(module.register_forward_hook(pop))

    def where() -> tuple[tuple[str, str], bool]:
        if not stack:
            return ("", "outside"), False
        return stack[-1], stack[-1][1] == "twin"

    layers: dict[str, _Spikes] = {}
    for name, m in model.named_modules():
        if isinstance(m, LIF):
            inside = (r for r in names if region_holds(r, name))
            region = max(inside, key=lambda r: 0 if r == ROOT_REGION else len(r), default="")
            layers[name] = _Spikes(name, region, m)
    state = {"n": 0}
    raster: dict = {"region": raster_name, "layers": []}

    def on_spikes(name: str, out: torch.Tensor) -> None:
        acc = layers[name]
        steps = acc.as_steps(out.detach(), state["n"])
        acc.spikes += int(torch.count_nonzero(steps))
        acc.slots += steps.numel()
        first_call = not acc.time_steps
        if first_call:  # a LIF run more than once per forward reports its first call's shape
            acc.time_steps, acc.neurons = steps.shape[0], steps.shape[2]
        if first_call and acc.region == raster_name:
            k = min(raster_neurons, steps.shape[2])
            idx = torch.linspace(0, steps.shape[2] - 1, k).round().long()
            raster["layers"].append(
                {
                    "name": acc.name,
                    "neurons": idx.tolist(),
                    "spikes": steps[:, 0, idx].to(torch.int8).tolist(),
                }
            )

    counter = OpCounter(where)
    n_samples = 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = _input_dtype(model)
    spikes = record_outputs(((a.name, a.module) for a in layers.values()), on_spikes)
    try:
        with _eval(model), torch.no_grad(), spikes:
            for x in _batches(inputs, max_batches):
                state["n"] = x.shape[0]
                x = x.to(device, dtype if x.is_floating_point() and dtype else x.dtype)
                with counter, model_input_errors(tuple(x.shape), _inspect_error):
                    model(x)
                n_samples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
    if n_samples == 0:
        raise HybridizeError("inspect: no inputs were given; pass at least one batch")
    report = _build_report(
        regions, list(layers.values()), counter.tallies, n_samples, model_energy, raster
    )
    report.inputs = source
    return report


def _build_report(
    regions: list[SpikingRegion],
    layers: list[_Spikes],
    tallies: dict[tuple[str, str], OpTally],
    n: int,
    em: EnergyModel,
    raster: dict,
) -> Report:
    report = Report(n, em.name, em.e_mac_pj, em.e_ac_pj)
    report.outside_macs = tallies.get(("", "outside"), OpTally()).dense_macs / n
    for acc in layers:
        rate = acc.spikes / acc.slots if acc.slots else None  # None: it never ran
        report.layers.append(
            LayerStats(acc.name, acc.region, acc.time_steps, acc.neurons, acc.spikes, rate)
        )
    for r in regions:
        empty = OpTally()
        twin = tallies.get((r.name, "twin"), empty)
        ann_dense = (
            tallies.get((r.name, "ann"), empty).dense_macs
            + tallies.get((r.name, "fusion"), empty).dense_macs
        ) / n
        t = r.time_steps
        ann_macs = ann_dense if r.mode == "parallel" else None
        equiv = ann_dense if r.mode == "parallel" else twin.dense_macs / n / (t or 1)
        own = [a for a in layers if a.region == r.name]
        slots = sum(a.slots for a in own)
        gate = getattr(r.module, "gate", None) if r.mode == "parallel" else None
        hybrid = (ann_macs or 0.0) * em.e_mac_pj + (
            twin.macs / n * em.e_mac_pj + twin.acs / n * em.e_ac_pj
        )
        report.regions.append(
            RegionStats(
                name=r.name,
                mode=r.mode,
                time_steps=t,
                params_ann=param_count(cast(nn.Module, r.module.ann))
                if r.mode == "parallel"
                else 0,
                params_twin=param_count(r.branch),
                ann_macs=ann_macs,
                ann_equiv_macs=equiv,
                twin_dense_macs=twin.dense_macs / n,
                twin_macs=twin.macs / n,
                twin_acs=twin.acs / n,
                gate=gate.detach().flatten().tolist() if isinstance(gate, torch.Tensor) else None,
                firing_rate=sum(a.spikes for a in own) / slots if slots else None,
                energy_ann_pj=equiv * em.e_mac_pj,
                energy_hybrid_pj=hybrid,
            )
        )
    report.raster = raster if raster["layers"] else None
    return report
