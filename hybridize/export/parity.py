"""Parity between a reference run (PyTorch eager) and an exported run (onnxruntime, pt2).

The rule (justified in docs/export.md): spike thresholds are discontinuous, so a float rounding
difference of 1 ulp can flip one spike and move the logits by far more than any float tolerance.
A sample therefore passes if its logits agree within ``atol + rtol * max|logits|``; a sample
outside that tolerance is accepted only if at least one of its spikes flipped (the difference is
explained by a threshold event, not by a wrong graph). On top of that, the whole check needs
top-1 agreement >= ``min_top1`` and a flipped-spike fraction <= ``max_flip_fraction``.

Where eager was also run teacher-forced (every spiking layer given the exported program's
spikes), the rule is judged on that comparison, so that a few rounding flips cascading through a
deep hybrid are not mistaken for a wrong graph; the free-running figures are still reported.
Teacher-forced, a layer's own flips cannot move the logits (the layers after it are given the
exported spikes), so only float rounding may remain; where float32 eager is too far from exact
to judge that (an ill-conditioned model), the same pass in float64 judges it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hybridize.errors import ExportError

ATOL = 1e-4
RTOL = 1e-3
MIN_TOP1 = 0.95
MAX_FLIP_FRACTION = 1e-3
DEFAULT_CHECK_BATCH = 4
# Judged against the float64 pass, an exported program may be this many times as far from it
# as float32 eager is (its logits' distance, in tolerances, the largest over a chunk; its
# flips), plus the tolerance: it is another float32 program, whose sums run in other orders
FLOAT32_SPREAD = 2.0
# ... but not where float32 eager is farther than this many tolerances from the float64 pass:
# then the model is too ill-conditioned to check, or computes something else in float64
# (dtype-dependent code), and float32 eager judges the batch
MAX_FLOAT32_ERROR = 100.0
# The ONNX check holds a chunk's spikes of every tapped layer three times (eager, onnxruntime,
# the teacher-forced pass; five times' worth where the float64 pass runs too); without a
# check_batch it shrinks the chunk to keep each copy within this (a 256 px ResNet-50-size
# hybrid has ~1 GB of spikes per sample)
SPIKE_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class CheckOptions:
    """How a parity check samples its inputs and what it accepts (the rule above).

    ``real_inputs``: a tensor of images, None/True for the foolbox sample images (None skips
    silently when they are not installed), False for random inputs only. ``check_batch`` is the
    batch size of a dynamic-batch program's check (None: :data:`DEFAULT_CHECK_BATCH`, which the
    ONNX check lowers, down to 1, until a batch's spikes fit :data:`SPIKE_CHUNK_BYTES`); a
    static one runs its own batch size.
    """

    real_inputs: torch.Tensor | bool | None = None
    n_random: int = 4
    max_real: int = 20
    check_batch: int | None = None
    atol: float = ATOL
    rtol: float = RTOL
    min_top1: float = MIN_TOP1
    max_flip_fraction: float = MAX_FLIP_FRACTION


def check_options(options: CheckOptions | None, overrides: dict[str, Any]) -> CheckOptions:
    """``options`` (default :class:`CheckOptions`) with the keyword ``overrides`` applied."""
    names = [f.name for f in dataclasses.fields(CheckOptions)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ExportError(f"unknown export option(s) {unknown}; the check options are {names}")
    resolved = dataclasses.replace(options or CheckOptions(), **overrides)
    _validate(resolved)
    return resolved


def _validate(o: CheckOptions) -> None:
    """One line for a check option out of range (NaN included: it would disable a rule)."""

    def fraction(v: float) -> bool:
        return math.isfinite(v) and 0.0 <= v <= 1.0

    checks = [
        (
            isinstance(o.n_random, int) and o.n_random >= 0,
            f"n_random {o.n_random!r}: give 0 or more",
        ),
        (
            isinstance(o.max_real, int) and o.max_real >= 0,
            f"max_real {o.max_real!r}: give 0 or more",
        ),
        (
            o.check_batch is None or (isinstance(o.check_batch, int) and o.check_batch >= 1),
            f"check_batch {o.check_batch!r}: give 1 or more",
        ),
        (math.isfinite(o.atol) and o.atol >= 0, f"atol {o.atol!r}: give a finite value >= 0"),
        (math.isfinite(o.rtol) and o.rtol >= 0, f"rtol {o.rtol!r}: give a finite value >= 0"),
        (fraction(o.min_top1), f"min_top1 {o.min_top1!r}: give a fraction from 0 to 1"),
        (
            fraction(o.max_flip_fraction),
            f"max_flip_fraction {o.max_flip_fraction!r}: give a fraction from 0 to 1",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ExportError(f"export check option {message}")


@dataclass
class ParityReport:
    """What an export wrote and how closely the exported program reproduces PyTorch eager."""

    format: str
    path: str
    ok: bool | None = None  # None when the check was skipped
    message: str = ""
    opset: int | None = None
    exporter: str | None = None  # the ONNX exporter that wrote the file (torchscript, dynamo)
    dynamic_batch: bool = True
    n_random: int = 0
    n_real: int = 0
    real_source: str | None = None
    check_batch: int | None = None  # the batch size the check ran
    max_abs_diff: float = 0.0
    max_abs_diff_random: float | None = None
    max_abs_diff_real: float | None = None
    atol: float = ATOL
    rtol: float = RTOL
    top1_agreement: float | None = None
    min_top1: float = MIN_TOP1
    spikes_compared: int = 0
    spikes_flipped: int = 0
    spikes_flipped_forced: int | None = None  # each layer given the exported spikes upstream
    max_flip_fraction: float = MAX_FLIP_FRACTION
    samples_outside_tol: int = 0
    samples_unexplained: int = 0
    flips_per_layer: dict[str, int] = field(default_factory=dict)
    forced_flips_per_layer: dict[str, int] = field(default_factory=dict)
    # eager's logits from the exported spikes against the exported logits (None: not run)
    max_abs_diff_forced: float | None = None
    top1_agreement_forced: float | None = None
    samples_outside_tol_forced: int = 0
    samples_unexplained_forced: int = 0
    # batches judged against the teacher-forced pass in float64, and float32 eager's own largest
    # logit error against it there (None: not needed)
    exact_batches: int = 0
    float32_error: float | None = None
    exact_unavailable: str = ""  # why the float64 pass could not run, where it was needed
    exact_distrusted: int = 0  # batches where float32 eager was too far from float64 to use it
    warning: str = ""

    @classmethod
    def start(cls, format: str, path: str, options: CheckOptions, **fields: Any) -> ParityReport:
        """An empty report that holds the acceptance rule of ``options``."""
        rule = ("atol", "rtol", "min_top1", "max_flip_fraction")
        return cls(format=format, path=path, **{k: getattr(options, k) for k in rule}, **fields)

    @property
    def spike_agreement(self) -> float | None:
        """Fraction of compared spikes (and bit-plane values) that agree; None if none compared."""
        if self.spikes_compared == 0:
            return None
        return 1.0 - self.spikes_flipped / self.spikes_compared

    def to_dict(self) -> dict:
        """A JSON-ready dict, including ``spike_agreement``."""
        d = asdict(self)
        d["spike_agreement"] = self.spike_agreement
        return d

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        status = {True: "PASS", False: "FAIL", None: "not checked"}[self.ok]
        via = f" (torch's {self.exporter} exporter, opset {self.opset})" if self.exporter else ""
        out = [f"{self.format} export: {self.path}{via} [{status}]"]
        if self.ok is None:
            return out
        n = self.n_random + self.n_real
        out.append(
            f"samples: {n} ({self.n_random} random, {self.n_real} real"
            + (f": {self.real_source}" if self.real_source else "")
            + ")"
            + (f" in batches of {self.check_batch}" if self.check_batch else "")
        )
        parts = [f"max |d logits| {self.max_abs_diff:.3g}"]
        if self.max_abs_diff_random is not None:
            parts.append(f"random {self.max_abs_diff_random:.3g}")
        if self.max_abs_diff_real is not None:
            parts.append(f"real {self.max_abs_diff_real:.3g}")
        out.append(", ".join(parts) + f" (tolerance {self.atol:g} + {self.rtol:g} * max|logits|)")
        out.append(f"top-1 agreement: {self.top1_agreement:.4f} (required >= {self.min_top1:g})")
        if self.spike_agreement is not None:
            out.append(
                f"spike agreement: {self.spike_agreement:.6f} "
                f"({self.spikes_flipped} of {self.spikes_compared} flipped; "
                f"allowed fraction {self.max_flip_fraction:g})"
            )
        if self.spikes_flipped_forced is not None:
            out.append(
                f"teacher-forced flips: {self.spikes_flipped_forced} of {self.spikes_compared} "
                "(each spiking layer given the exported spikes upstream; the allowed fraction "
                "applies to these)"
            )
        out.append(
            f"samples outside tolerance: {self.samples_outside_tol} "
            f"({self.samples_unexplained} without any spike flip)"
        )
        if self.top1_agreement_forced is not None:
            out.append(
                "teacher-forced logits (eager from the exported spikes"
                + (", against float64 where it ran" if self.exact_batches else "")
                + f"): max |d logits| {self.max_abs_diff_forced:.3g}, top-1 agreement "
                f"{self.top1_agreement_forced:.4f}, outside tolerance "
                f"{self.samples_outside_tol_forced} (no flip can explain these); the rule is "
                "judged on these"
            )
        if self.exact_batches:
            out.append(
                f"float64 reference: {self.exact_batches} batch(es) judged against eager run in "
                f"float64 from the exported spikes (float32 eager is itself {self.float32_error:.3g}"
                f" from it there; the exported program may be {FLOAT32_SPREAD:g} times as far, "
                f"plus the tolerance, and flip {FLOAT32_SPREAD:g} times as often, plus the allowed "
                "fraction)"
            )
        if self.exact_unavailable:
            out.append(f"float64 reference not available: {self.exact_unavailable}")
        if self.warning:
            out.append(f"warning: {self.warning}")
        if self.message:
            out.append(self.message)
        return out


@dataclass
class _Tally:
    max_diff: float = 0.0
    seen: bool = False


@dataclass
class _Logits:
    """One comparison of logits, accumulated over chunks (free-running or teacher-forced)."""

    max_diff: float = 0.0
    agree: int = 0
    outside: int = 0
    unexplained: int = 0

    def add(
        self,
        ref: torch.Tensor,
        test: torch.Tensor,
        explained: torch.Tensor,
        r: ParityReport,
        slack: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``ref``/``test``: [N, classes] float64; ``explained``: per sample, whether a flip
        stands behind a difference; ``slack``: per sample, how far float32 eager itself is from
        an exact ``ref`` (added to the tolerance and to the tie margin). Returns the per-sample
        max |difference|."""
        diff = (ref - test).abs().amax(dim=1)
        extra = torch.zeros_like(diff) if slack is None else slack
        tolerance = r.atol + r.rtol * ref.abs().amax(dim=1) + extra
        outside = diff > tolerance
        self.max_diff = max(self.max_diff, float(diff.max()))
        # a sample whose top reference logits lie within rounding of each other (rtol of the
        # largest) is a tie: the exported program may pick either of them
        same = ref.argmax(dim=1) == test.argmax(dim=1)
        if ref.shape[1] > 1:
            margin = r.rtol * ref.abs().amax(dim=1) + extra
            picked = ref.gather(1, test.argmax(dim=1, keepdim=True)).squeeze(1)
            same |= ref.amax(dim=1) - picked <= margin
        self.agree += int(same.sum())
        self.outside += int(outside.sum())
        self.unexplained += int((outside & ~explained).sum())
        return diff


class ParityCheck:
    """Accumulates chunk-by-chunk comparisons and decides pass/fail."""

    def __init__(
        self,
        report: ParityReport,
        layer_names: list[str],
        layouts: list[str],
    ) -> None:
        self.report = report
        self.layer_names = layer_names
        self.layouts = layouts  # per tapped layer: "folded" [T*N, ...] or "time_first" [T, N, ...]
        self.total = 0
        self.free = _Logits()
        self.forced: _Logits | None = None
        self.tallies = {"random": _Tally(), "real": _Tally()}
        self.nonfinite = False
        self.compared: dict[str, int] = {}  # spikes compared per tapped layer

    def add(
        self,
        source: str,
        ref: list[torch.Tensor],
        test: list[torch.Tensor],
        forced: list[torch.Tensor] | None = None,
        exact: Callable[[], list[torch.Tensor] | None] | None = None,
    ) -> None:
        """Compare one chunk: ``ref``/``test`` are ``[logits, *spikes]`` for the same inputs;
        ``forced`` the same from eager with every spiking layer given ``test``'s spikes
        (:meth:`SpikeTap.teacher_forced`), on which the rule is then judged; ``exact`` runs that
        pass in float64 (None where it cannot run), called only where float32 eager alone might
        fail the chunk (:class:`ExactTap`)."""
        r = self.report
        ref_logits, test_logits = ref[0].double(), test[0].double()
        if ref_logits.shape != test_logits.shape:
            raise ExportError(
                f"the exported program's output has shape {tuple(test_logits.shape)}, eager's "
                f"{tuple(ref_logits.shape)}; export with a static batch (--batch-size N) or "
                "check that the model's output does not depend on the batch it was traced with"
            )
        n = ref_logits.shape[0]
        if not (torch.isfinite(ref_logits).all() and torch.isfinite(test_logits).all()):
            self.nonfinite = True
        flat_test = test_logits.reshape(n, -1)
        flips = self._flips(self._count(ref[1:], test[1:], n), n, r.flips_per_layer)
        r.spikes_compared += sum(a.numel() for a in test[1:])
        for name, spikes in zip(self.layer_names, test[1:], strict=True):
            self.compared[name] = self.compared.get(name, 0) + spikes.numel()
        r.spikes_flipped += int(flips.total)
        diff = self.free.add(ref_logits.reshape(n, -1), flat_test, flips.explained, r)
        if forced is not None:
            self._add_forced(forced, test, n, exact)
        self.total += n
        t = self.tallies[source]
        t.max_diff, t.seen = max(t.max_diff, float(diff.max())), True
        if source == "random":
            r.n_random += n
        else:
            r.n_real += n

    def first(self, outputs: list[torch.Tensor], valid: int) -> list[torch.Tensor]:
        """``[logits, *spikes]`` of a chunk's first ``valid`` samples (the rest pad a static
        batch), spikes cut by their layout; the whole chunk where a tapped tensor cannot be
        cut per sample."""
        n = outputs[0].shape[0]
        if valid >= n:
            return outputs
        kept = [outputs[0][:valid]]
        for layout, spikes in zip(self.layouts, outputs[1:], strict=True):
            if layout == "folded" and spikes.dim() >= 1 and spikes.shape[0] % n == 0:
                steps = spikes.shape[0] // n
                view = spikes.reshape(steps, n, *spikes.shape[1:])[:, :valid]
                kept.append(view.reshape(steps * valid, *spikes.shape[1:]))
            elif layout == "time_first" and spikes.dim() >= 2 and spikes.shape[1] == n:
                kept.append(spikes[:, :valid])
            else:
                return outputs
        return kept

    def _add_forced(
        self,
        forced: list[torch.Tensor],
        test: list[torch.Tensor],
        n: int,
        exact_pass: Callable[[], list[torch.Tensor] | None] | None,
    ) -> None:
        """The judged comparison: the exported program against eager teacher-forced, or, where
        float32 eager alone might fail the chunk (a sample outside the tolerance, a top-1
        disagreement, or any flip: flips are judged summed over the chunks, and float64 may take
        a chunk's count below float32's), against the float64 pass, allowing
        :data:`FLOAT32_SPREAD` times float32 eager's own distance from it. No flip excuses a
        difference here: every layer after a flip was given the exported spikes, so only float
        rounding can remain."""
        r = self.report
        ref_logits = forced[0].double().reshape(n, -1)
        test_logits = test[0].double().reshape(n, -1)
        if not torch.isfinite(ref_logits).all():
            self.nonfinite = True
        counts = self._count(forced[1:], test[1:], n)
        fails_alone = self._fails_alone(ref_logits, test_logits)
        exact = None
        if exact_pass is not None and (fails_alone or any(c.total for c in counts)):
            exact = exact_pass()
        if exact is not None and not self._trusted(ref_logits, exact[0].double().reshape(n, -1)):
            exact = None
            r.exact_distrusted += fails_alone  # a chunk float32 then fails: say why, below
        slack = None
        if exact is not None:
            exact_logits = exact[0].double().reshape(n, -1)
            own = (ref_logits - exact_logits).abs().amax(dim=1)
            r.exact_batches += 1
            r.float32_error = max(r.float32_error or 0.0, float(own.max()))
            # float32's error, pooled over the chunk in tolerances (one sample's own distance is
            # a draw, small by luck where the export's is not): the largest, at most
            # MAX_FLOAT32_ERROR (_trusted), applied at each sample's tolerance
            tolerance = r.atol + r.rtol * exact_logits.abs().amax(dim=1)
            ratio = torch.where(own == 0, torch.zeros_like(own), own / tolerance)
            slack = FLOAT32_SPREAD * float(ratio.max()) * tolerance
            counts = _excess(
                self._count(exact[1:], test[1:], n), self._count(exact[1:], forced[1:], n)
            )
            ref_logits = exact_logits
        flips = self._flips(counts, n, r.forced_flips_per_layer)
        r.spikes_flipped_forced = (r.spikes_flipped_forced or 0) + int(flips.total)
        self.forced = self.forced or _Logits()
        no_flip_explains = torch.zeros(n, dtype=torch.bool)
        self.forced.add(ref_logits, test_logits, no_flip_explains, r, slack)

    def _trusted(self, float32: torch.Tensor, exact: torch.Tensor) -> bool:
        """Whether the float64 logits may judge a chunk: finite, float32 eager's too, and float32
        eager within :data:`MAX_FLOAT32_ERROR` tolerances of them on every sample."""
        if self.nonfinite or not torch.isfinite(exact).all():
            return False
        r = self.report
        tolerance = r.atol + r.rtol * exact.abs().amax(dim=1)
        return not ((float32 - exact).abs().amax(dim=1) > MAX_FLOAT32_ERROR * tolerance).any()

    def _fails_alone(self, float32: torch.Tensor, test: torch.Tensor) -> bool:
        """Whether float32 eager's logits alone put a sample of the chunk outside the tolerance
        or its top-1 apart (``float32``, ``test``: [N, classes] float64)."""
        probe = _Logits()
        n = test.shape[0]
        probe.add(float32, test, torch.zeros(n, dtype=torch.bool), self.report)
        return bool(probe.outside or probe.agree < n)

    def _count(self, a: list[torch.Tensor], b: list[torch.Tensor], n: int) -> list[_LayerFlips]:
        """Per tapped layer, the flips between two lists of spike tensors: how many, and per
        sample where they can be located."""
        counts = []
        for layout, x, y in zip(self.layouts, a, b, strict=True):
            flipped = _flipped(x, y)
            total = int(flipped.sum())
            counts.append(_LayerFlips(total, _per_sample(flipped, n, layout) if total else None))
        return counts

    def _flips(self, counts: list[_LayerFlips], n: int, per_layer: dict[str, int]) -> _Flips:
        """``counts`` added to ``per_layer``; per sample, whether any flipped (every sample
        when a flip cannot be located in its sample)."""
        per_sample = torch.zeros(n, dtype=torch.long)
        total = unattributed = 0
        for name, c in zip(self.layer_names, counts, strict=True):
            if not c.total:
                continue
            total += c.total
            per_layer[name] = per_layer.get(name, 0) + c.total
            if c.per_sample is None:
                unattributed += c.total
            else:
                per_sample += c.per_sample
        ordered = {name: per_layer[name] for name in self.layer_names if name in per_layer}
        per_layer.clear()  # in the order the layers ran, whichever chunk flipped them first
        per_layer.update(ordered)
        explained = torch.ones(n, dtype=torch.bool) if unattributed else per_sample > 0
        return _Flips(total, explained)

    def _layer_flip_problems(self) -> list[str]:
        """Rule 4 per tapped layer, on the teacher-forced flips (local to each layer)."""
        r = self.report
        problems = []
        for name, flips in r.forced_flips_per_layer.items():
            compared = self.compared.get(name, 0)
            if compared and flips > _layer_flips_allowed(compared, r.max_flip_fraction):
                problems.append(
                    f"teacher-forced flips in {name}: {flips} of its {compared} spikes "
                    f"({flips / compared:.3g} > {r.max_flip_fraction:g}); given the exported "
                    "spikes upstream, that layer's part of the graph computes other spikes"
                )
        return problems

    def finish(self) -> ParityReport:
        """Fill in the summary fields and the verdict."""
        r = self.report
        rnd, real = self.tallies["random"], self.tallies["real"]
        r.max_abs_diff_random = rnd.max_diff if rnd.seen else None
        r.max_abs_diff_real = real.max_diff if real.seen else None
        r.max_abs_diff = max(rnd.max_diff, real.max_diff)
        total = max(self.total, 1)
        r.top1_agreement = self.free.agree / total if self.total else None
        r.samples_outside_tol, r.samples_unexplained = self.free.outside, self.free.unexplained
        judged, kind = self.free, ""
        if self.forced is not None:
            judged, kind = self.forced, "teacher-forced "
            r.max_abs_diff_forced = self.forced.max_diff
            r.top1_agreement_forced = self.forced.agree / total
            r.samples_outside_tol_forced = self.forced.outside
            r.samples_unexplained_forced = self.forced.unexplained
        problems = []
        if not self.total:
            problems.append(
                "no sample was compared (n_random 0 and no real inputs); compare at least one"
            )
        if self.nonfinite:
            problems.append("non-finite logits")
        if judged.unexplained:
            why = (
                "(every spiking layer was given the exported spikes: no flip explains it)"
                if kind
                else "with no spike flip to explain it"
            )
            problems.append(
                f"{judged.unexplained} sample(s) differ by more than the tolerance {kind}{why}"
            )
        top1 = judged.agree / total if self.total else None
        if top1 is not None and top1 < r.min_top1:
            problems.append(f"{kind}top-1 agreement {top1:.4f} < {r.min_top1:g}")
        elif kind and r.top1_agreement is not None and r.top1_agreement < r.min_top1:
            r.warning = _chaotic(r)
        forced = r.spikes_flipped_forced
        frac = (r.spikes_flipped if forced is None else forced) / max(r.spikes_compared, 1)
        if frac > r.max_flip_fraction:
            problems.append(_too_many_flips(r, frac))
        elif forced is not None:  # and per layer: one wrong small layer hides among large ones
            problems += self._layer_flip_problems()[:1]
        if problems:  # why float64 did not judge comes first: it is what to read
            problems = self._float64_notes() + problems
        r.ok = not problems
        r.message = "; ".join(problems)
        return r

    def _float64_notes(self) -> list[str]:
        """Why the float64 reference did not judge some batches, where it did not."""
        r, notes = self.report, []
        if r.exact_distrusted:
            notes.append(
                f"on {r.exact_distrusted} batch(es) float32 eager is more than "
                f"{MAX_FLOAT32_ERROR:g} tolerances from its float64 pass, so float32 judged them: "
                "the model is too ill-conditioned to check in float32, or computes something "
                "else in float64"
            )
        if r.exact_unavailable:
            notes.append(
                "the float64 reference, which tells float32 rounding from a wrong graph, could "
                f"not run ({r.exact_unavailable})"
            )
        return notes


@dataclass(frozen=True)
class _LayerFlips:
    total: int
    per_sample: torch.Tensor | None  # [N] counts; None where none flipped or not locatable


def _excess(exported: list[_LayerFlips], float32: list[_LayerFlips]) -> list[_LayerFlips]:
    """Per layer, the exported program's flips against the float64 pass beyond
    :data:`FLOAT32_SPREAD` times float32 eager's own against it: what the export adds to
    rounding (not located per sample: teacher-forced, no flip explains a sample)."""
    return [
        _LayerFlips(max(0, e.total - math.floor(FLOAT32_SPREAD * f.total)), None)
        for e, f in zip(exported, float32, strict=True)
    ]


@dataclass(frozen=True)
class _Flips:
    total: int
    explained: torch.Tensor  # [N] bool: the sample has a flip, or flips could not be located


def _chaotic(r: ParityReport) -> str:
    """The warning for a faithful export of a hybrid that amplifies float rounding."""
    return (
        f"free-running top-1 agreement {r.top1_agreement:.4f} < {r.min_top1:g}: the exported "
        "program is faithful (teacher-forced it agrees), but this hybrid amplifies float rounding "
        f"through its spikes ({r.spikes_flipped} free-running flips against "
        f"{r.spikes_flipped_forced} teacher-forced), so its predictions differ between runtimes"
    )


def _per_sample(flipped: torch.Tensor, n: int, layout: str) -> torch.Tensor | None:
    """Flip counts per sample for a [T*N, ...] (t-major) or [T, N, ...] tensor; None if unknown."""
    if layout == "folded" and flipped.dim() >= 1 and flipped.shape[0] % n == 0:
        view = flipped.reshape(flipped.shape[0] // n, n, -1)
    elif layout == "time_first" and flipped.dim() >= 2 and flipped.shape[1] == n:
        view = flipped.reshape(flipped.shape[0], n, -1)
    else:
        return None
    return view.sum(dim=(0, 2))


def _flipped(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Where two spike (or bit-plane) tensors disagree: values 0/1, compared in float64."""
    return (a.double() - b.double()).abs() > 0.5


def _layer_flips_allowed(compared: int, fraction: float) -> float:
    """Teacher-forced flips a layer may have: the fraction of its own spikes, at least 2 (a
    rounding flip or two in a small layer is not a wrong graph)."""
    return max(fraction * compared, 2.0)


def _too_many_flips(r: ParityReport, frac: float) -> str:
    """Rule 4's message: the teacher-forced flips' worst layer when they were counted, else where
    the free-running flips start and where most are, with what a cascade means (layers in the
    order they ran)."""
    if r.spikes_flipped_forced is not None:
        layer, n = max(r.forced_flips_per_layer.items(), key=lambda kv: kv[1])
        return (
            f"teacher-forced flip fraction {frac:.3g} > {r.max_flip_fraction:g} (most in "
            f"{layer}: {n}; each spiking layer was given the exported program's spikes "
            "upstream, so these flips come from that layer's part of the graph)"
        )
    message = f"flipped-spike fraction {frac:.3g} > {r.max_flip_fraction:g}"
    flipped = [(name, n) for name, n in r.flips_per_layer.items() if n]
    if not flipped:
        return message
    (first, n_first), (most, n_most) = flipped[0], max(flipped, key=lambda kv: kv[1])
    return (
        f"{message} (first flips in {first}: {n_first}; most in {most}: {n_most}; a few flips "
        "that multiply through later layers are float rounding cascading through a deep hybrid: "
        "if top-1 agreement holds, accept them with max_flip_fraction=F, "
        "CLI --max-flip-fraction F)"
    )
