"""Re-run an exported NIR graph in an independent framework (snnTorch's ``import_from_nir``)
and compare its spikes with our twin's, neuron by neuron and step by step.

Nothing of ours runs on the peer side: the graph is read back from the file with ``nir.read``
and executed by snnTorch's own modules (``snn.Leaky``, ``torch.nn.Conv2d``...) wired by
nirtorch's interpreter, one time step per call.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, SupportsInt

import numpy as np
import torch
from torch import nn

from hybridize._util import missing_packages, record_outputs
from hybridize.errors import ExportError


@dataclass
class Agreement:
    """Spike agreement between our twin and the peer for one region."""

    region: str
    spikes_compared: int = 0
    spikes_differing: int = 0
    spikes_fired: int = 0  # ours: how many of the compared entries are spikes (non-zero)
    output_max_abs_diff: float = 0.0

    @property
    def fraction_equal(self) -> float:
        if self.spikes_compared == 0:
            return 1.0
        return 1.0 - self.spikes_differing / self.spikes_compared


def peer_missing() -> str | None:
    """Why the peer cannot run, in one line (None: it can)."""
    missing = missing_packages(("nir", "nirtorch", "snntorch"))
    if missing:
        names = " and ".join(missing)
        return f"{names} not installed (pip install nir nirtorch snntorch, or the test extra)"
    return None


def load_peer(path: str | Path, type_check: bool = True) -> nn.Module:
    """The graph at ``path`` as a snnTorch module (read with ``nir.read``; ``type_check=False``
    for graphs with grouped convs, whose types NIR 1.0 cannot infer).

    snnTorch 1.0 builds a grouped ``nir.Conv2d`` with in_channels = weight.shape[1] (it should
    be weight.shape[1] * groups), so it cannot load a depthwise conv. For graphs that have one,
    that single mapping is replaced by a plain ``torch.nn.Conv2d`` with the right channel count;
    the neurons, pooling, wiring and edge sums stay snnTorch's and nirtorch's.
    """
    import nir
    import nirtorch
    from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir

    graph = nir.read(str(path), type_check=type_check)
    grouped = any(isinstance(n, nir.Conv2d) and n.groups != 1 for n in graph.nodes.values())
    with contextlib.redirect_stdout(io.StringIO()):  # snnTorch prints its threshold rescaling
        if not grouped:
            return import_from_nir(graph)
        node_map = {
            t: (lambda n: _nir_to_snntorch_module(n, init_hidden=True))
            for t in (nir.Affine, nir.Linear, nir.Flatten, nir.AvgPool2d, nir.IF, nir.LIF)
        }
        node_map[nir.Conv2d] = _grouped_conv
        return nirtorch.nir_to_torch(graph, node_map)


class _Conv2dNode(Protocol):
    """The fields of a ``nir.Conv2d`` read here (nir ships no type information). nir stores
    stride, padding and dilation as pairs; ``padding="same"/"valid"`` is never written here."""

    @property
    def weight(self) -> np.ndarray: ...
    @property
    def bias(self) -> np.ndarray: ...
    @property
    def stride(self) -> Iterable[SupportsInt]: ...
    @property
    def padding(self) -> Iterable[SupportsInt]: ...
    @property
    def dilation(self) -> Iterable[SupportsInt]: ...
    @property
    def groups(self) -> SupportsInt: ...


def _int_pair(values: Iterable[SupportsInt]) -> tuple[int, int]:
    a, b = (int(v) for v in values)
    return a, b


def _grouped_conv(node: _Conv2dNode) -> nn.Module:
    w = torch.as_tensor(node.weight)
    conv = nn.Conv2d(
        w.shape[1] * int(node.groups),
        w.shape[0],
        (w.shape[-2], w.shape[-1]),
        stride=_int_pair(node.stride),
        padding=_int_pair(node.padding),
        dilation=_int_pair(node.dilation),
        groups=int(node.groups),
    )
    conv.weight.data = w.float()
    assert conv.bias is not None, "built with the default bias=True"
    conv.bias.data = torch.as_tensor(node.bias).float()
    return conv


def run_peer(
    net: nn.Module, planes: torch.Tensor, neurons: list[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run ``net`` over ``planes`` [T, N, ...] one step per call, from a fresh state.

    Returns the outputs [T, N, ...] and the spikes [T, N, ...] of each NIR LIF node in
    ``neurons`` (read by forward hooks on the peer's own neuron modules).
    """
    import snntorch as snn

    modules = dict(net.named_modules())
    taps: dict[str, list[torch.Tensor]] = {name: [] for name in neurons}
    missing = [name for name in neurons if name.replace(".", "_") not in modules]
    if missing:
        raise ExportError(f"the peer graph has no neuron {missing[0]!r}")
    for m in net.modules():
        if isinstance(m, snn.Leaky):
            m.mem = torch.zeros(0)  # fresh membrane (the module re-creates it at the input shape)

    def record(name: str, out: object) -> None:
        taps[name].append(_first_output(out).detach().clone())

    outputs = []
    peer_neurons = [(name, modules[name.replace(".", "_")]) for name in neurons]
    with torch.no_grad(), record_outputs(peer_neurons, record):
        for t in range(planes.shape[0]):
            outputs.append(_first_output(net(planes[t])).detach().clone())
    return torch.stack(outputs), {k: torch.stack(v) for k, v in taps.items()}


def _first_output(out: object) -> torch.Tensor:
    """snnTorch modules return ``(spikes, membrane)``; plain modules a tensor."""
    first = out[0] if isinstance(out, tuple) else out
    assert isinstance(first, torch.Tensor)
    return first


def run_twin(
    twin: nn.Module, planes: torch.Tensor, modules: dict[str, str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Our twin on ``planes`` [T, N, ...] (folded as in the fusion block): the output
    [T, N, ...] and the spikes [T, N, ...] of each LIF (NIR node -> twin module name)."""
    t, n = planes.shape[0], planes.shape[1]
    named = dict(twin.named_modules())
    taps: dict[str, torch.Tensor] = {}

    def record(node: str, out: torch.Tensor) -> None:
        taps[node] = out.detach().reshape(t, n, *out.shape[1:]).clone()

    lifs = [(node, named[module]) for node, module in modules.items()]
    with torch.no_grad(), record_outputs(lifs, record):
        out = twin(planes.flatten(0, 1))
    return out.reshape(t, n, *out.shape[1:]), taps


def compare(
    region: str,
    twin: nn.Module,
    peer: nn.Module,
    planes: torch.Tensor,
    modules: dict[str, str],
) -> Agreement:
    """Run both on the same planes [T, N, ...] and count differing spikes per neuron."""
    device = next((p.device for p in twin.parameters()), torch.device("cpu"))
    ours_out, ours = run_twin(twin, planes.to(device), modules)
    ours_out, ours = ours_out.cpu(), {k: v.cpu() for k, v in ours.items()}
    peer_out, theirs = run_peer(peer, planes.cpu(), list(modules))
    result = Agreement(region=region)
    for node in modules:
        a, b = ours[node], theirs[node]
        if a.shape != b.shape:
            raise ExportError(
                f"{region}: neuron {node} has shape {tuple(a.shape)} here and "
                f"{tuple(b.shape)} in the peer; the exported graph is wrong"
            )
        differing = int((a != b).sum())
        result.spikes_compared += a.numel()
        result.spikes_differing += differing
        result.spikes_fired += int((a != 0).sum())
    if ours_out.shape != peer_out.shape:
        raise ExportError(
            f"{region}: output shape {tuple(ours_out.shape)} here, {tuple(peer_out.shape)} in "
            "the peer; the exported graph is wrong"
        )
    result.output_max_abs_diff = (
        float((ours_out - peer_out).abs().max()) if ours_out.numel() else 0.0
    )
    return result
