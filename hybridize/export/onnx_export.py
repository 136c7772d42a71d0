"""ONNX export (torch's TorchScript-based or dynamo exporter), verified in onnxruntime."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hybridize._atomic import atomic_path, remove_quietly, temp_beside
from hybridize._util import missing_packages
from hybridize.errors import ExportError
from hybridize.export.inputs import batch_errors, check_batches, check_destination, check_example
from hybridize.export.onnx_writers import OnnxJob, check_exporter, check_opset, write_onnx
from hybridize.export.parity import (
    DEFAULT_CHECK_BATCH,
    SPIKE_CHUNK_BYTES,
    CheckOptions,
    ParityCheck,
    ParityReport,
    check_options,
)
from hybridize.export.prepare import ExactTap, SpikeTap, export_state, spiking_layers

if TYPE_CHECKING:  # optional at run time: imported where an export needs it
    import onnx

STANDARD_DOMAINS = ("", "ai.onnx")


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
    check: bool = True,
    exporter: str = "auto",
    options: CheckOptions | None = None,
    **overrides: Any,
) -> ParityReport:
    """Export ``model`` (eval mode, T unrolled, standard ONNX ops only) to ``path``.

    With ``check`` the file is run in onnxruntime on random inputs and on real images and
    compared with PyTorch eager: logits, top-1 and every spike; ``options`` (a
    :class:`CheckOptions`) and keyword ``overrides`` of its fields (``real_inputs=False``,
    ``n_random=2``, ...) set how. A failed check raises :class:`ExportError` and leaves no file
    behind. The written file has one input ``input`` and one output ``logits``; its batch axis
    is dynamic unless ``dynamic_batch=False``. ``exporter``: ``"torchscript"``, ``"dynamo"``
    (needs onnxscript; opset 18 at least) or ``"auto"``, the first and the second where it
    fails (:mod:`hybridize.export.onnx_writers`); the report says which wrote the file.
    """
    check_exporter(exporter)
    check_opset(opset, exporter)
    options = check_options(options, overrides)
    require_packages(["onnx", "onnxruntime"] if check else ["onnx"])
    dest = check_destination(Path(path), ".onnx")
    example = check_example(example)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = example.to(device)
    report = ParityReport.start(
        "onnx", str(dest), options, opset=opset, dynamic_batch=dynamic_batch
    )
    tapped = temp_beside(dest, "tapped")
    try:
        with export_state(model, example), atomic_path(dest, suffix=".partial.onnx") as final:
            layers = spiking_layers(model) if check else []
            tap = SpikeTap(model, layers).eval()  # the exporter restores the wrapper's mode
            calls: Counter[str] = Counter()
            if layers:  # a tapped layer the forward never runs: its own error, not an exporter's
                with torch.no_grad():
                    _, calls = tap.reference(example)
            # one output per call of each layer (a shared layer runs more than once)
            layouts = [_layout(m) for name, m in layers for _ in range(calls[name])]
            spike_names = [f"spikes_{i}" for i in range(len(layouts))]
            job = OnnxJob(
                tap,
                example,
                tapped,
                opset,
                dynamic_batch,
                output_names=["logits", *spike_names],
                output_axes=_output_axes(spike_names, layouts),
            )
            report.exporter, report.opset = write_onnx(job, exporter)
            import onnx

            proto = onnx.load(str(tapped))
            _check_domains(proto)
            _check_written_opset(proto, report.opset)
            report.dynamic_batch = _batch_is_dynamic(proto)
            if check:
                check_ = ParityCheck(report, tap.output_names(calls), layouts)
                _run_parity(tap, tapped, example, check_, report.dynamic_batch, options, calls)
                check_.finish()
            if report.ok is False:
                raise ExportError(
                    f"ONNX parity check failed for {dest}: {report.message}; the file was not "
                    "written (rerun with check=False / --no-check to keep it for debugging)"
                )
            del proto.graph.output[1:]  # keep the logits; the spikes were for the check only
            onnx.save(proto, str(final))
            onnx.checker.check_model(str(final))
        return report
    finally:
        remove_quietly(tapped)


def require_packages(names: list[str]) -> None:
    """Raise a one-line :class:`ExportError` naming the extra that installs missing ``names``."""
    missing = missing_packages(names)
    if missing:
        raise ExportError(
            f"ONNX export needs {' and '.join(missing)}, not installed here: "
            "pip install 'hybridize[export]'"
        )


def _layout(module: nn.Module) -> str:
    """LIF modules with ``time_steps`` see folded [T*N, ...] tensors; the rest [T, N, ...]."""
    return "folded" if getattr(module, "time_steps", None) and _is_lif(module) else "time_first"


def _is_lif(module: nn.Module) -> bool:
    from hybridize.spiking import LIF

    return isinstance(module, LIF)


def _output_axes(spike_names: list[str], layouts: list[str]) -> dict[str, dict[int, str]]:
    """The dynamic axes of the tapped outputs: the batch, or time x batch where T is folded."""
    axes = {"logits": {0: "batch"}}
    for name, layout in zip(spike_names, layouts, strict=True):
        axes[name] = {0: f"{name}_steps_x_batch"} if layout == "folded" else {1: "batch"}
    return axes


def _batch_is_dynamic(proto: onnx.ModelProto) -> bool:
    """Whether the written graph's input has a symbolic batch axis (an exporter may specialise
    it, as torch.export does for an example batch of 1)."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return bool(dims) and not dims[0].HasField("dim_value")


def _check_written_opset(proto: onnx.ModelProto, opset: int) -> None:
    """An exporter that cannot convert to the opset asked for may keep its own silently
    (onnxscript's version converter does, beyond what onnx defines); refuse that file."""
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ExportError(
            f"the exporter wrote opset {written} where {opset} was asked for; give an --opset "
            "the installed onnx package supports"
        )


def _check_domains(proto: onnx.ModelProto) -> None:
    """Every node, also inside subgraphs, must be in the standard ONNX domain."""
    bad: set[str] = set()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS:
                bad.add(f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(proto.graph)
    if bad:
        raise ExportError(
            f"the exported graph uses non-standard ONNX ops {sorted(bad)}; make the model use "
            "standard torch ops in eval mode (no custom autograd.Function in the forward)"
        )


def _spike_chunk(tap: SpikeTap, example: torch.Tensor, device: torch.device) -> int:
    """The check's batch size when none is given: :data:`DEFAULT_CHECK_BATCH`, lowered (to 1 at
    least) until a batch's spikes of every tapped layer fit :data:`SPIKE_CHUNK_BYTES`; the
    check holds three copies of them (eager, onnxruntime, teacher-forced)."""
    with torch.no_grad():
        outputs, _ = tap.reference(example[:1].to(device))
    per_sample = sum(t.numel() * t.element_size() for t in outputs[1:])
    return max(1, min(DEFAULT_CHECK_BATCH, SPIKE_CHUNK_BYTES // max(per_sample, 1)))


def _run_parity(
    tap: SpikeTap,
    onnx_path: Path,
    example: torch.Tensor,
    check: ParityCheck,
    dynamic_batch: bool,
    options: CheckOptions,
    traced_calls: Counter[str],
) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    device = next((p.device for p in tap.model.parameters()), torch.device("cpu"))
    if dynamic_batch and options.check_batch is None:
        options = dataclasses.replace(options, check_batch=_spike_chunk(tap, example, device))
    exact = ExactTap(tap)
    batches = check_batches(example, options, dynamic_batch, check.report)
    with full_float32():
        for kind, x, valid in batches:
            with torch.no_grad(), batch_errors(tuple(x.shape), "the model"):
                outputs, calls = tap.reference(x.to(device))
            if calls != traced_calls:
                layer = next(n for n in traced_calls if calls[n] != traced_calls[n])
                raise ExportError(
                    f"spiking layer {layer} runs {calls[layer]} times on a check batch of shape "
                    f"{tuple(x.shape)} and {traced_calls[layer]} times on the example: the "
                    "model's control flow depends on its input (its values or batch size), "
                    "which the exported graph, traced on the example, cannot follow"
                )
            ref = check.first([t.detach().cpu() for t in outputs], valid)
            with batch_errors(tuple(x.shape), "the exported ONNX graph"):
                run = session.run(None, {"input": x.cpu().numpy()})
            got_all = [torch.from_numpy(a) for a in run]
            got = check.first(got_all, valid)
            forced = check.first(tap.teacher_forced(x.to(device), got_all[1:], calls), valid)
            check.add(
                kind, ref, got, forced, partial(_exact, exact, check, x, got_all, calls, valid)
            )
    check.report.exact_unavailable = exact.unavailable


def _exact(
    exact: ExactTap,
    check: ParityCheck,
    x: torch.Tensor,
    got: list[torch.Tensor],
    calls: Counter[str],
    valid: int,
) -> list[torch.Tensor] | None:
    """The float64 teacher-forced pass of one check batch, cut to its own samples."""
    outputs = exact.teacher_forced(x, got[1:], calls)
    return None if outputs is None else check.first(outputs, valid)


# the backends whose float32 may run at a lower precision (TF32 on CUDA, bf16/TF32 in oneDNN)
# where torch has the per-backend ``fp32_precision`` setting
_FP32_BACKENDS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv")


@contextmanager
def full_float32() -> Iterator[None]:
    """Float32 proper (no TF32, no bf16 in float32 ops) while a check runs eager: the exported
    program runs in float32 on onnxruntime's CPU. Uses torch's ``fp32_precision`` settings
    where they exist (reading the older ``allow_tf32`` flags after a user set those raises)."""
    backends = [_backend(path) for path in _FP32_BACKENDS]
    settable = [b for b in backends if b is not None and hasattr(b, "fp32_precision")]
    if settable:
        saved = [b.fp32_precision for b in settable]
        for b in settable:
            b.fp32_precision = "ieee"
        try:
            yield
        finally:
            for b, value in zip(settable, saved, strict=True):
                b.fp32_precision = value
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _backend(path: str) -> Any:
    obj: Any = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
