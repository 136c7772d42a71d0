"""The fusion block (docs/method.md 1): y = A(x) + g * Decode(S(Encode(x)))."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from hybridize.errors import SpikingConfigError
from hybridize.spiking.decoder import BitPlaneDecoder
from hybridize.spiking.encoder import BitPlaneEncoder
from hybridize.spiking.kernels import compacting_binary_saves
from hybridize.spiking.neuron import LIF
from hybridize.spiking.options import check_choice, check_number

GATE_KINDS = ("fixed", "learnable")


def fold_over_time(value: Tensor, t: int) -> Tensor:
    """[N, ...] -> [T*N, ...]: ``value`` repeated T times along dim 0, t-major (the layout of
    ``planes.flatten(0, 1)`` for planes [T, N, ...])."""
    return value.repeat(t, *([1] * (value.dim() - 1)))


class SpikingBranch(nn.Module):
    """x [N, ...] -> decoder(unfold(twin(fold(encoder(x)), *side))).

    The twin sees folded [T*N, ...] tensors (t-major); each of its LIF modules must have
    ``time_steps == encoder.time_steps``. Used alone it is the "replace" mode.

    Arguments after ``x`` (side inputs: a rotary table, a mask, a shape) go to the twin as they
    are, except those named in ``fold`` (positions, 1 = the first after ``x``, or keyword
    names): batch-shaped tensors that the twin sees repeated T times along dim 0, t-major.
    When the twin returns a tuple or list, ``out_index`` picks the item that is decoded.
    """

    def __init__(
        self,
        twin: nn.Module,
        encoder: nn.Module,
        decoder: nn.Module,
        fold: tuple[int | str, ...] = (),
        out_index: int | None = None,
    ) -> None:
        super().__init__()
        self.twin, self.encoder, self.decoder = twin, encoder, decoder
        self.fold, self.out_index = tuple(fold), out_index
        t = getattr(encoder, "time_steps", None)
        for name, m in twin.named_modules():
            if isinstance(m, LIF) and t is not None and m.time_steps != t:
                raise SpikingConfigError(
                    f"SpikingBranch: LIF {name or '<twin>'!r} has time_steps={m.time_steps} "
                    f"but the encoder gives T={t}; build the twin's LIFs with time_steps={t}"
                )
        if (
            isinstance(encoder, BitPlaneEncoder)
            and isinstance(decoder, BitPlaneDecoder)
            and decoder.kind == "bitplane"
            and decoder.bits != encoder.bits
        ):
            raise SpikingConfigError(
                f"SpikingBranch: decoder bits={decoder.bits} != encoder bits="
                f"{encoder.bits}; give both the same bits"
            )
        if isinstance(encoder, BitPlaneEncoder) and isinstance(decoder, BitPlaneDecoder):
            _check_plane_orders(encoder, decoder)

    def extra_repr(self) -> str:
        parts = [f"fold={self.fold}"] if self.fold else []
        if self.out_index is not None:
            parts.append(f"out_index={self.out_index}")
        return ", ".join(parts)

    @compacting_binary_saves  # the twin's layers keep the planes and spikes as uint8
    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        planes = self.encoder(x)
        t, n = planes.shape[0], planes.shape[1]
        if self.fold:
            args = tuple(
                fold_over_time(a, t) if i + 1 in self.fold else a for i, a in enumerate(args)
            )
            kwargs = {k: fold_over_time(v, t) if k in self.fold else v for k, v in kwargs.items()}
        out = self.twin(planes.flatten(0, 1), *args, **kwargs)
        if self.out_index is not None:
            out = out[self.out_index]
        return self.decoder(out.reshape(t, n, *out.shape[1:]))


def _check_plane_orders(encoder: BitPlaneEncoder, decoder: BitPlaneDecoder) -> None:
    """The decoder weighs step t as the plane the encoder put there; only the released code's
    own mismatch (both sides ``compat``) is allowed to differ."""
    if decoder.kind != "bitplane":
        return
    encoder_compat = encoder.options.compat
    if decoder.compat is not None and encoder_compat is None:
        raise SpikingConfigError(
            f"SpikingBranch: a compat={decoder.compat!r} decoder goes with an encoder of the "
            f"same compat (it reproduces the released order mismatch); give the encoder "
            f"compat={decoder.compat!r} or drop the decoder's"
        )
    if decoder.compat is None and decoder.order != encoder.order:
        raise SpikingConfigError(
            f"SpikingBranch: the encoder emits planes in order {encoder.order!r} and the "
            f"decoder weighs them as {decoder.order!r}; give both the same order"
        )


class FusionBlock(nn.Module):
    """y = ann(x, *side) + g * branch(x, *side).

    Side inputs go to both paths unchanged (the branch folds the batch-shaped ones). When the
    ANN block returns a tuple or list, the spiking path adds to item ``branch.out_index`` and
    the other items pass through from the ANN.

    gate "fixed": a buffer equal to 1 (or ``gate_init``); "learnable": a Parameter initialised
    at 0 (or ``gate_init``). Scalar unless ``gate_channels`` is given: then per channel on dim 1,
    or on the last dim for rank-2/3 (token) outputs. With g == 0 the output equals ann(x)
    exactly (the branch output is finite by construction).
    """

    def __init__(
        self,
        ann: nn.Module,
        branch: SpikingBranch,
        gate: str = "fixed",
        gate_init: float | None = None,
        gate_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.ann, self.branch = ann, branch
        self.gate_kind = check_choice("FusionBlock", "gate", gate, GATE_KINDS)
        init = (1.0 if gate == "fixed" else 0.0) if gate_init is None else gate_init
        init = check_number("FusionBlock", "gate_init", init)
        if gate_channels is not None and (
            isinstance(gate_channels, bool)
            or not isinstance(gate_channels, int)
            or gate_channels < 1
        ):
            raise SpikingConfigError(
                f"FusionBlock: gate_channels={gate_channels!r} is invalid; give a positive int"
            )
        shape = () if gate_channels is None else (gate_channels,)
        value = torch.full(shape, init)
        if gate == "learnable":
            self.gate = nn.Parameter(value)
        else:
            self.register_buffer("gate", value)

    @property
    def encoder(self) -> nn.Module:
        return self.branch.encoder

    @property
    def decoder(self) -> nn.Module:
        return self.branch.decoder

    @property
    def twin(self) -> nn.Module:
        return self.branch.twin

    def extra_repr(self) -> str:
        return f"gate={self.gate_kind!r}, gate_shape={tuple(self.gate.shape)}"

    def _broadcast_gate(self, y: Tensor) -> Tensor:
        g = self.gate.to(y.dtype)
        if g.ndim == 0:
            return g
        dim = y.ndim - 1 if y.ndim <= 3 else 1
        if y.ndim < 2 or y.shape[dim] != g.shape[0]:
            raise SpikingConfigError(
                f"FusionBlock: per-channel gate of size {g.shape[0]} does not match output "
                f"shape {tuple(y.shape)} on dim {dim}; set gate_channels to that size"
            )
        shape = [1] * y.ndim
        shape[dim] = g.shape[0]
        return g.reshape(shape)

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor | tuple | list:
        # branch first, as the released code does: autograd then sums the two branches'
        # gradients into x in the released order (float32 gradients equal it bit for bit)
        b = self.branch(x, *args, **kwargs)
        out = self.ann(x, *args, **kwargs)
        index = self.branch.out_index
        a = out if index is None else out[index]
        y = a + self._broadcast_gate(a) * b.to(a.dtype)
        if index is None:
            return y
        items = list(out)
        items[index] = y
        return items if isinstance(out, list) else tuple(items)
