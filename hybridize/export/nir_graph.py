"""Translate one spiking twin (an fx graph of conv / linear / BN / pooling / LIF / add) into a
NIR graph, or say exactly why it cannot be.

Mapping (docs/export.md, "NIR"):

- Conv2d -> ``nir.Conv2d``; Linear on [N, D] -> ``nir.Affine`` (``nir.Linear`` without bias).
  An eval-mode BatchNorm right after a conv/linear whose only user it is, is folded into it
  (scale s = gamma / sqrt(var + eps), computed in float64); any other BatchNorm becomes a
  per-channel affine (a depthwise 1x1 ``Conv2d``, or a diagonal ``Affine``).
- Asymmetric "same" padding (timm's ``Conv2dSame``, torch's ``padding="same"``) with one extra
  row/column at the bottom/right is made symmetric by prepending a zero row/column to the
  kernel; any other asymmetry is refused.
- LIF -> ``nir.LIF`` with the time step ``dt``: tau_NIR = tau * dt, v_leak = v_reset = 0,
  R = 1 (decay_input) or R = tau (not), v_threshold = the float32 just below V_th (NIR's
  threshold is strict, ours is not). Forward Euler on NIR's
  tau dv/dt = (v_leak - v) + R I with step dt is then exactly our discrete charge equation.
- AvgPool2d (count_include_pad, no ceil overhang) and divisible AdaptiveAvgPool2d ->
  ``nir.AvgPool2d``: NIR's average pool is SumPool2d / (kh * kw), zero padding counted.
- ``a + b`` (the SEW add, or an analog residual add) -> both edges into one identity synapse
  (a depthwise 1x1 ``Conv2d`` with weight 1 and bias 0, or an identity ``Affine``): NIR sums
  all edges that enter a node.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeGuard

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from hybridize._util import first_line
from hybridize.conversion.activations import ADD_FUNCTIONS, ADD_METHODS
from hybridize.spiking.neuron import LIF

# modules that are the identity in eval mode
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
PASS_THROUGH_NAMES = ("DropPath", "DropBlock2d", "StochasticDepth")
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)


class ExactTypes(NamedTuple):
    """The layers the graph writes, matched by exact type (subclasses such as timm's StdConv2d
    change the weights)."""

    convs: tuple[type[nn.Module], ...]
    batch_norms: tuple[type[nn.Module], ...]
    same_conv: type[nn.Module]  # timm's TF "same" conv, padded at run time


@functools.cache
def exact_types() -> ExactTypes:
    """:class:`ExactTypes`, timm's classes imported on first use (as everywhere here)."""
    from timm.layers import BatchNormAct2d, Conv2dSame

    return ExactTypes((nn.Conv2d, Conv2dSame), (*BN_TYPES, BatchNormAct2d), Conv2dSame)


class Unsupported(Exception):
    """A twin element NIR cannot express exactly; the message is the manifest's reason."""


@dataclass
class NeuronMap:
    """One LIF of the twin and the NIR LIF parameters it became."""

    module: str  # qualified name of the LIF module inside the twin
    tau: float
    v_threshold: float
    decay_input: bool
    nir: dict[str, float]


@dataclass
class TwinGraph:
    """The NIR graph of a twin (None when refused) and what was done to get it."""

    graph: Any = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    neurons: dict[str, NeuronMap] = field(default_factory=dict)  # NIR node -> LIF
    input_shape: list[int] = field(default_factory=list)
    output_shape: list[int] = field(default_factory=list)
    type_check: bool = True  # False: read it with nir.read(path, type_check=False)


class _Tracer(fx.Tracer):
    """torch.nn layers, LIF and timm's layers stay leaves (one node each)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            isinstance(m, LIF)
            or type(m).__module__.startswith("timm.")
            or super().is_leaf_module(m, qualname)
        )


def twin_to_nir(twin: nn.Module, planes: torch.Tensor, dt: float) -> TwinGraph:
    """NIR graph of ``twin`` (eval mode) for folded planes ``[T*N, ...]``; refusals in
    ``reason``. ``planes`` is run once to learn every node's shape."""
    out = TwinGraph()
    try:
        gm = twin if isinstance(twin, fx.GraphModule) else _trace(twin)
        shapes = _shapes(gm, planes)
        _Builder(gm, shapes, dt, out).run()
    except Unsupported as exc:
        out.graph, out.reason = None, str(exc)
    return out


def _trace(twin: nn.Module) -> fx.GraphModule:
    try:
        graph = _Tracer().trace(twin)
    except Exception as exc:
        raise Unsupported(
            f"the twin cannot be traced with torch.fx ({first_line(exc, 120)})"
        ) from exc
    return fx.GraphModule(twin, graph)


def _shapes(gm: fx.GraphModule, planes: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-node output shape without the folded time-batch axis."""
    shapes: dict[str, tuple[int, ...]] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            value = super().run_node(n)
            if isinstance(value, torch.Tensor):
                shapes[n.name] = tuple(value.shape[1:])
            return value

    # side inputs (a rotary table, a mask); an argument with a default value runs with it
    if sum(n.op == "placeholder" and not n.args for n in gm.graph.nodes) > 1:
        raise Unsupported("the twin takes more than one input; NIR graphs here take one")
    try:
        with torch.no_grad():
            Recorder(gm).run(planes)
    except Exception as exc:
        raise Unsupported(
            f"the twin does not run on its planes alone ({first_line(exc, 120)})"
        ) from exc
    return shapes


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _bn_scale_shift(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = s x + b (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise Unsupported(
            f"{type(bn).__name__} without running statistics normalises with batch "
            "statistics even in eval mode; it has no fixed NIR weights"
        )
    var, mean = bn.running_var.double(), bn.running_mean.double()
    s = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.double()
    shift = -mean * s
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return s, shift


def _conv_input_shape(hw: Sequence[int], groups: int, out: TwinGraph) -> tuple[int, int]:
    """(H, W); notes that NIR's own type check will reject a grouped conv: NIR 1.0 derives a
    Conv2d's input channels from weight.shape[1], ignoring groups."""
    if groups != 1:
        out.type_check = False
    h, w = hw
    return int(h), int(w)


def _is_bn(m: nn.Module) -> TypeGuard[_BatchNorm]:
    return isinstance(m, _BatchNorm)


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


class _Builder:
    def __init__(
        self, gm: fx.GraphModule, shapes: dict[str, tuple[int, ...]], dt: float, out: TwinGraph
    ) -> None:
        self.gm, self.shapes, self.dt, self.out = gm, shapes, dt, out
        self.modules = dict(gm.named_modules())
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.src: dict[str, str] = {}  # fx node -> NIR node producing its value
        self.folded: dict[str, str] = {}  # BN fx node -> conv/linear fx node folded into
        self.fold_into: dict[str, _BatchNorm] = {}  # conv/linear fx node -> its BN module
        self.lif_calls: dict[str, int] = {}

    # ---------------------------------------------------------------------------- walk
    def run(self) -> None:
        import nir

        self._plan_folding()
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.src:
                    raise Unsupported(
                        "the twin takes more than one input; NIR graphs here take one"
                    )
                self.out.input_shape = list(self.shapes[n.name])
                self.nodes["input"] = nir.Input(np.array(self.out.input_shape))
                self.src[n.name] = "input"
            elif n.op == "output":
                arg = n.args[0]
                if not isinstance(arg, fx.Node) or arg.name not in self.shapes:
                    raise Unsupported("the twin does not return one tensor")
                self.out.output_shape = list(self.shapes[arg.name])
                self.nodes["output"] = nir.Output(np.array(self.out.output_shape))
                self.edges.append((self.src[arg.name], "output"))
            elif n.op == "call_module":
                self._module(n, self.modules[n.target])
            elif n.op in ("call_function", "call_method"):
                self._function(n)
            else:
                raise Unsupported(f"node {n.name} ({n.op} {n.target}) has no NIR equivalent")
        for name, count in self.lif_calls.items():
            if count > 1:
                raise Unsupported(f"LIF {name} is called {count} times; each NIR LIF is one call")
        try:
            self.out.graph = nir.NIRGraph(nodes=self.nodes, edges=self.edges, type_check=False)
        except Exception as exc:  # pragma: no cover - a graph we built wrongly
            raise Unsupported(f"nir rejected the graph ({exc})") from exc

    def _plan_folding(self) -> None:
        for n in self.gm.graph.nodes:
            if n.op != "call_module":
                continue
            bn = self.modules[n.target]
            if not _is_bn(bn):
                continue
            prev = n.args[0] if n.args else None
            if (
                isinstance(prev, fx.Node)
                and prev.op == "call_module"
                and type(self.modules[prev.target]) in (*exact_types().convs, nn.Linear)
                and len(prev.users) == 1
            ):
                self.folded[n.name] = prev.name
                self.fold_into[prev.name] = bn

    def _input(self, n: fx.Node, i: int = 0) -> fx.Node:
        arg = n.args[i] if len(n.args) > i else None
        if not isinstance(arg, fx.Node):
            raise Unsupported(f"node {n.name}: input {i} is not a tensor of the twin")
        return arg

    def _emit(self, name: str, node: Any, inputs: list[fx.Node]) -> None:
        self.nodes[name] = node
        for a in inputs:
            self.edges.append((self.src[a.name], name))

    def _alias(self, n: fx.Node, of: fx.Node) -> None:
        self.src[n.name] = self.src[of.name]

    # ---------------------------------------------------------------------------- modules
    def _module(self, n: fx.Node, m: nn.Module) -> None:
        if isinstance(m, PASS_THROUGH) or type(m).__name__ in PASS_THROUGH_NAMES:
            self._alias(n, self._input(n))
        elif isinstance(m, nn.Conv2d) and type(m) in exact_types().convs:
            self._conv(n, m)
        elif type(m) is nn.Linear:
            self._linear(n, m)
        elif _is_bn(m) and type(m) in exact_types().batch_norms:
            self._bn(n, m)
        elif isinstance(m, LIF):
            assert isinstance(n.target, str), "a call_module node's target is a qualified name"
            self._lif(n.name, n.target, m, self._input(n), n)
        elif type(m) is nn.AvgPool2d:  # not timm's AvgPool2dSame (divisor excludes padding)
            self._avg_pool(
                n,
                m.kernel_size,
                m.stride,
                m.padding,
                m.ceil_mode,
                m.count_include_pad,
                m.divisor_override,
            )
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self._adaptive_pool(n, m.output_size)
        else:
            raise Unsupported(f"{n.target}: {type(m).__name__} has no NIR equivalent")

    def _conv(self, n: fx.Node, m: nn.Conv2d) -> None:
        import nir

        x = self._input(n)
        if m.padding_mode != "zeros":
            raise Unsupported(f"{n.target}: padding_mode {m.padding_mode!r} is not NIR's zeros")
        weight = m.weight.detach().double()
        bias = m.bias.detach().double() if m.bias is not None else None
        bn = self._bn_after(n)
        if bn is not None:
            s, shift = _bn_scale_shift(bn)
            weight = weight * s.reshape(-1, 1, 1, 1)
            bias = shift if bias is None else bias * s + shift
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=torch.float64)
        in_hw = self.shapes[x.name][-2:]
        k, stride, dil = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
        pads = self._conv_pads(n, m, in_hw, k, stride, dil)
        padding = []
        for axis, (top, bottom) in enumerate(pads):
            if top == bottom:
                padding.append(top)
            elif bottom == top + 1 and dil[axis] == 1:
                # extra zero row/column at the start of the kernel: its window then starts one
                # pixel earlier, i.e. on the symmetric padding of `bottom` pixels
                zero_shape = list(weight.shape)
                zero_shape[2 + axis] = 1
                weight = torch.cat([weight.new_zeros(zero_shape), weight], dim=2 + axis)
                padding.append(bottom)
                self.out.notes.append(
                    f"{n.target}: asymmetric 'same' padding ({top}, {bottom}) on axis {axis} "
                    "made symmetric with a zero kernel row/column"
                )
            else:
                raise Unsupported(
                    f"{n.target}: asymmetric padding ({top}, {bottom}) has no NIR Conv2d form"
                )
        node = nir.Conv2d(
            input_shape=_conv_input_shape(in_hw, m.groups, self.out),
            weight=_f32(weight),
            stride=stride,
            padding=tuple(padding),
            dilation=dil,
            groups=int(m.groups),
            bias=_f32(bias),
        )
        if bn is not None:
            self.out.notes.append(f"{n.target}: BatchNorm folded into the weights (eval mode)")
        self._emit(n.name, node, [x])
        self.src[n.name] = n.name

    def _conv_pads(
        self,
        n: fx.Node,
        m: nn.Conv2d,
        in_hw: tuple[int, ...],
        k: tuple[int, int],
        stride: tuple[int, int],
        dil: tuple[int, int],
    ) -> list[tuple[int, int]]:
        if type(m) is exact_types().same_conv:  # timm: TF "same", padded at run time
            return [_same_pads(int(in_hw[i]), k[i], stride[i], dil[i]) for i in range(2)]
        if isinstance(m.padding, str):
            if m.padding == "valid":
                return [(0, 0), (0, 0)]
            totals = [dil[i] * (k[i] - 1) for i in range(2)]  # torch "same" (stride 1)
            return [(t // 2, t - t // 2) for t in totals]
        p = _pair(m.padding)
        return [(p[0], p[0]), (p[1], p[1])]

    def _bn_after(self, n: fx.Node) -> _BatchNorm | None:
        """The BatchNorm folded into conv/linear node ``n``, if any."""
        return self.fold_into.get(n.name)

    def _linear(self, n: fx.Node, m: nn.Linear) -> None:
        import nir

        x = self._input(n)
        if len(self.shapes[x.name]) != 1:
            raise Unsupported(
                f"{n.target}: Linear on a {len(self.shapes[x.name]) + 1}-D input; NIR's Affine "
                "takes one feature vector per sample"
            )
        weight = m.weight.detach().double()
        bias = m.bias.detach().double() if m.bias is not None else None
        bn = self._bn_after(n)
        if bn is not None:
            s, shift = _bn_scale_shift(bn)
            weight = weight * s.reshape(-1, 1)
            bias = shift if bias is None else bias * s + shift
            self.out.notes.append(f"{n.target}: BatchNorm folded into the weights (eval mode)")
        node = (
            nir.Linear(weight=_f32(weight))
            if bias is None
            else nir.Affine(weight=_f32(weight), bias=_f32(bias))
        )
        self._emit(n.name, node, [x])
        self.src[n.name] = n.name

    def _bn(self, n: fx.Node, m: _BatchNorm) -> None:
        import nir

        x = self._input(n)
        if n.name in self.folded:
            self._alias(n, x)
        else:
            s, shift = _bn_scale_shift(m)
            shape = self.shapes[x.name]
            if len(shape) == 3:
                node = nir.Conv2d(
                    input_shape=_conv_input_shape(shape[1:], int(shape[0]), self.out),
                    weight=_f32(s.reshape(-1, 1, 1, 1)),
                    stride=1,
                    padding=0,
                    dilation=1,
                    groups=int(shape[0]),
                    bias=_f32(shift),
                )
            elif len(shape) == 1:
                node = nir.Affine(weight=_f32(torch.diag(s)), bias=_f32(shift))
            else:
                raise Unsupported(f"{n.target}: BatchNorm on a {len(shape) + 1}-D tensor")
            self.out.notes.append(f"{n.target}: BatchNorm as a per-channel affine (not folded)")
            self._emit(n.name, node, [x])
            self.src[n.name] = n.name
        # timm's BatchNormAct2d: BN, then drop, then act inside the same leaf
        drop, act = getattr(m, "drop", None), getattr(m, "act", None)
        for part, what in ((drop, "drop"), (act, "act")):
            if part is None or isinstance(part, PASS_THROUGH):
                continue
            if type(part).__name__ in PASS_THROUGH_NAMES:
                continue
            if what == "act" and isinstance(part, LIF):
                self._lif(f"{n.name}_act", f"{n.target}.act", part, n, n)
            else:
                raise Unsupported(f"{n.target}.{what}: {type(part).__name__} has no NIR equivalent")

    def _lif(self, name: str, module: str, m: LIF, x: fx.Node, n: fx.Node) -> None:
        """NIR LIF ``name`` for the LIF ``m`` (qualified name ``module``) fed by ``x``."""
        import nir

        self.lif_calls[module] = self.lif_calls.get(module, 0) + 1
        if m.v_reset is None:
            raise Unsupported(
                f"{module}: soft reset (v_reset=None, V -= V_th on a spike) has no NIR LIF "
                "form; NIR's LIF resets to v_reset"
            )
        if m.v_reset != 0.0:
            raise Unsupported(
                f"{module}: v_reset={m.v_reset} != 0; our membrane starts at v_reset, NIR has "
                "no initial state (importers start at 0)"
            )
        tau = float(torch.as_tensor(m.tau).detach())
        r = 1.0 if m.decay_input else tau
        shape = self.shapes[n.name] if n.name in self.shapes else self.shapes[x.name]

        def full(v: float) -> np.ndarray:
            return np.full(shape, v, dtype=np.float32)

        # NIR fires on v > v_threshold, we on H >= V_th: the float32 just below V_th makes the
        # two agree on an exactly representable membrane (integer spike sums, SEW adds)
        threshold = float(np.nextafter(np.float32(m.v_threshold), np.float32(-np.inf)))
        node = nir.LIF(
            tau=full(tau * self.dt),
            r=full(r),
            v_leak=full(0.0),
            v_threshold=full(threshold),
            v_reset=full(0.0),
        )
        self._emit(name, node, [x])
        self.src[n.name] = name
        self.out.neurons[name] = NeuronMap(
            module=module,
            tau=tau,
            v_threshold=float(m.v_threshold),
            decay_input=bool(m.decay_input),
            nir={
                "tau": tau * self.dt,
                "r": r,
                "v_leak": 0.0,
                "v_reset": 0.0,
                "v_threshold": threshold,
            },
        )

    def _avg_pool(
        self,
        n: fx.Node,
        kernel: Any,
        stride: Any,
        padding: Any,
        ceil_mode: bool,
        count_include_pad: bool,
        divisor_override: Any,
    ) -> None:
        import nir

        x = self._input(n)
        k = _pair(kernel)
        s = k if stride is None or stride == [] else _pair(stride)
        p = _pair(padding)
        if divisor_override:
            raise Unsupported(f"{n.name}: average pool with divisor_override={divisor_override}")
        if not count_include_pad and any(p):
            raise Unsupported(
                f"{n.name}: average pool that excludes padding from the divisor; NIR's "
                "AvgPool2d divides by kh * kw"
            )
        in_hw = self.shapes[x.name][-2:]
        floor_hw = tuple((in_hw[i] + 2 * p[i] - k[i]) // s[i] + 1 for i in range(2))
        if ceil_mode and tuple(self.shapes[n.name][-2:]) != floor_hw:
            raise Unsupported(f"{n.name}: ceil_mode pooling with a partial last window")
        node = nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
        self._emit(n.name, node, [x])
        self.src[n.name] = n.name

    def _adaptive_pool(self, n: fx.Node, output_size: Any) -> None:
        x = self._input(n)
        in_hw = self.shapes[x.name][-2:]
        out_hw = self.shapes[n.name][-2:]
        if any(in_hw[i] % out_hw[i] for i in range(2)):
            raise Unsupported(
                f"{n.name}: adaptive average pool {tuple(in_hw)} -> {tuple(out_hw)} has "
                "uneven windows"
            )
        k = tuple(in_hw[i] // out_hw[i] for i in range(2))
        self._avg_pool(n, k, k, 0, False, True, None)

    # ---------------------------------------------------------------------------- functions
    def _function(self, n: fx.Node) -> None:
        target = n.target
        if (n.op == "call_function" and any(target is f for f in ADD_FUNCTIONS)) or (
            n.op == "call_method" and target in ADD_METHODS
        ):
            self._add(n)
        elif n.op == "call_function" and target is F.avg_pool2d:
            names = (
                "kernel_size",
                "stride",
                "padding",
                "ceil_mode",
                "count_include_pad",
                "divisor_override",
            )
            given = dict(zip(names, n.args[1:], strict=False)) | dict(n.kwargs)
            self._avg_pool(
                n,
                given["kernel_size"],
                given.get("stride"),
                given.get("padding", 0),
                bool(given.get("ceil_mode", False)),
                bool(given.get("count_include_pad", True)),
                given.get("divisor_override"),
            )
        elif n.op == "call_function" and target is F.adaptive_avg_pool2d:
            self._adaptive_pool(n, n.args[1] if len(n.args) > 1 else n.kwargs["output_size"])
        else:
            what = getattr(target, "__name__", str(target))
            raise Unsupported(f"node {n.name}: {what}() has no NIR equivalent")

    def _add(self, n: fx.Node) -> None:
        import nir

        if n.kwargs.get("alpha", 1) != 1 or len(n.args) != 2:
            raise Unsupported(f"node {n.name}: an add with alpha or extra arguments")
        a, b = n.args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
            raise Unsupported(f"node {n.name}: adds a constant; NIR has no constant input")
        if self.src[a.name] == self.src[b.name]:
            raise Unsupported(f"node {n.name}: adds a value to itself (x + x)")
        shape = self.shapes[n.name]
        if self.shapes[a.name] != shape or self.shapes[b.name] != shape:
            raise Unsupported(f"node {n.name}: a broadcasting add")
        if len(shape) == 3:
            c = int(shape[0])  # a dense identity 1x1 conv: passes NIR's type check
            node = nir.Conv2d(
                input_shape=tuple(int(v) for v in shape[1:]),
                weight=np.eye(c, dtype=np.float32).reshape(c, c, 1, 1),
                stride=1,
                padding=0,
                dilation=1,
                groups=1,
                bias=np.zeros(c, dtype=np.float32),
            )
        elif len(shape) == 1:
            d = int(shape[0])
            node = nir.Affine(
                weight=np.eye(d, dtype=np.float32), bias=np.zeros(d, dtype=np.float32)
            )
        else:
            raise Unsupported(f"node {n.name}: an add of {len(shape) + 1}-D tensors")
        self._emit(n.name, node, [a, b])
        self.src[n.name] = n.name
        self.out.notes.append(
            f"{n.name}: add = two NIR edges into an identity synapse (weight 1, bias 0)"
        )
