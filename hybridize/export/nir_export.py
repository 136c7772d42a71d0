"""``export_nir``: one NIR graph per spiking twin, the whole model in ONNX, and a manifest.

The folder is written atomically: everything goes into a temporary folder beside the
destination, which is renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize._atomic import atomic_folder
from hybridize._util import example_shape, first_line, missing_packages, record_outputs
from hybridize.conversion.regions import find_regions
from hybridize.errors import ExportError
from hybridize.export.inputs import check_example
from hybridize.export.nir_manifest import FORMAT, decoder_info, encoder_info, gate_info, manifest
from hybridize.export.prepare import export_state
from hybridize.spiking.fusion import FusionBlock, SpikingBranch

MANIFEST = "manifest.json"
DEFAULT_DT = 1e-4  # seconds per time step; snnTorch's NIR import assumes this value


@dataclass
class NIRExport:
    """What :func:`export_nir` wrote (the manifest, as a dict, and a summary)."""

    path: str
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def exported(self) -> list[dict[str, Any]]:
        return [r for r in self.manifest["regions"] if r["status"] == "exported"]

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [r for r in self.manifest["regions"] if r["status"] != "exported"]

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        regions = self.manifest["regions"]
        out = [f"nir export: {self.path} ({len(self.exported)} of {len(regions)} twins in NIR)"]
        for r in regions:
            if r["status"] == "exported":
                v = r.get("verification") or {}
                extra = ""
                if "fraction_equal" in v:
                    extra = (
                        f"; {v['peer']}: {v['spikes_compared'] - v['spikes_differing']} of "
                        f"{v['spikes_compared']} equal ({v['spikes_fired']} fired)"
                    )
                out.append(f"  {r['region']}: {r['file']}{extra}")
            else:
                out.append(f"  {r['region']}: not exported: {r['reason']}")
        onnx = self.manifest["onnx"]
        out.append(
            f"  onnx: {onnx['file']}" + (f" [{onnx['parity']}]" if onnx.get("parity") else "")
            if onnx["file"]
            else f"  onnx: not written: {onnx['reason']}"
        )
        return out


# (name, SpikingBranch, FusionBlock or None (replace mode))
_Region = tuple[str, SpikingBranch, FusionBlock | None]


def _regions(model: nn.Module) -> list[_Region]:
    """Every twin's region, in module order."""
    out: list[_Region] = []
    for r in find_regions(model):
        branch, fusion = r.branch, r.fusion
        # find_regions yields SpikingBranches, alone or as the branch of a FusionBlock
        assert isinstance(branch, SpikingBranch)
        assert fusion is None or isinstance(fusion, FusionBlock)
        out.append((r.name, branch, fusion))
    return out


def _file_name(region: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", region) or "region"
    name, i = f"{stem}.nir", 1
    while name in taken:
        name, i = f"{stem}_{i}.nir", i + 1
    taken.add(name)
    return name


def _capture_planes(
    model: nn.Module, example: torch.Tensor, branches: dict[str, SpikingBranch]
) -> dict[str, torch.Tensor]:
    """The planes [T, N, ...] each region's encoder emits when the model runs ``example``."""
    captured: dict[str, torch.Tensor] = {}
    encoders = [(name, b.encoder) for name, b in branches.items()]
    try:
        with torch.no_grad(), record_outputs(encoders, captured.__setitem__):
            model(example)
    except Exception as exc:
        raise ExportError(
            f"the model fails on the example input of shape {tuple(example.shape)} "
            f"({first_line(exc)}); give an input the model accepts"
        ) from exc
    return captured


def _onnx(
    model: nn.Module, example: torch.Tensor, folder: Path, check: bool, real: Any
) -> dict[str, Any]:
    missing = missing_packages(("onnx", "onnxruntime") if check else ("onnx",))
    if missing:
        return {
            "file": None,
            "reason": f"{' and '.join(missing)} not installed (pip install 'hybridize[export]')",
        }
    from hybridize.export.onnx_export import export_onnx

    x = example if example.shape[0] > 1 else example.repeat(2, *([1] * (example.dim() - 1)))
    report = export_onnx(model, x, folder / "model.onnx", check=check, real_inputs=real)
    info: dict[str, Any] = {
        "file": "model.onnx",
        "contents": "the whole hybrid (ANN branches, encoders, twins, decoders, gates); "
        "input 'input', output 'logits', dynamic batch",
    }
    if report.ok is not None:
        info["parity"] = "PASS" if report.ok else "FAIL"
        info["parity_report"] = report.to_dict()
    return info


def _prepare_destination(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise ExportError(
            f"the NIR output {dest} exists and is a file; give a folder path (-o OUT/)"
        )
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    written = _files_of_export(dest / MANIFEST)
    others = sorted(p.name for p in dest.iterdir() if p.name not in written)
    if not written or others:  # rewriting the folder would delete them
        what = f"holds {', '.join(others[:3])}, not" if others else "holds no"
        raise ExportError(
            f"the NIR output folder {dest} is not empty and {what} part of an earlier NIR "
            "export; choose a new folder or empty it"
        )


def _files_of_export(manifest: Path) -> set[str]:
    """The names an earlier export wrote (its manifest, ONNX file and NIR files); empty when
    ``manifest`` is missing or is not one of ours."""
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT:  # another program's manifest.json: not ours
            return set()
        files = [r.get("file") for r in record.get("regions", [])]
        files.append(record.get("onnx", {}).get("file"))
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {MANIFEST, *(f for f in files if isinstance(f, str))}


def export_nir(
    model: nn.Module,
    out_dir: str | os.PathLike,
    example: torch.Tensor | None = None,
    *,
    dt: float = DEFAULT_DT,
    onnx: bool = True,
    check: bool = True,
    real_inputs: torch.Tensor | bool | None = False,
    verify: bool = False,
) -> NIRExport:
    """Write ``out_dir/``: one ``REGION.nir`` per twin NIR can express, ``model.onnx`` (the
    whole hybrid, when ``onnx`` and the onnx extra is installed) and ``manifest.json``.

    ``example`` (default: the checkpoint's example shape with batch 1) is run once to learn
    each twin's input shape. ``dt`` is the NIR time step in seconds (tau_NIR = tau * dt).
    ``check`` runs the ONNX parity check; ``verify`` re-runs every NIR file in snnTorch on the
    example's bit planes and records the spike agreement. A model without twins, an output
    path that is a file, or a failure leaves nothing behind and raises :class:`ExportError`.
    """
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not dt > 0:
        raise ExportError(f"dt={dt!r} must be a positive number of seconds per time step")
    dest = Path(out_dir)
    regions = _regions(model)
    if not regions:
        raise ExportError(
            f"{type(model).__name__} has no spiking twin (FusionBlock or SpikingBranch); "
            "convert the model first (hybridize convert)"
        )
    if missing_packages(("nir",)):
        raise ExportError("NIR export needs the nir package; pip install 'hybridize[nir]'")
    _prepare_destination(dest)
    example = _example(model, example)
    with atomic_folder(dest) as tmp:
        with export_state(model, example):
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            planes = _capture_planes(model, example.to(device), {n: b for n, b, _ in regions})
            rows = _write_graphs(model, regions, planes, tmp, dt, verify)
        onnx_info = (
            _onnx(model, example, tmp, check, real_inputs)
            if onnx
            else {"file": None, "reason": "not asked for (onnx=False)"}
        )
        manifest_ = manifest(model, example, dt, rows, onnx_info)
        (tmp / MANIFEST).write_text(json.dumps(manifest_, indent=2) + "\n")
    return NIRExport(path=str(dest), manifest=manifest_)


def _example(model: nn.Module, example: torch.Tensor | None) -> torch.Tensor:
    if example is not None:
        return check_example(example)
    return torch.rand(example_shape(model))


def _write_graphs(
    model: nn.Module,
    regions: list[_Region],
    planes: dict[str, torch.Tensor],
    folder: Path,
    dt: float,
    verify: bool,
) -> list[dict[str, Any]]:
    import nir

    from hybridize.export.nir_graph import twin_to_nir

    taken: set[str] = set()
    rows = []
    why_no_peer = None
    if verify:
        from hybridize.export.nir_check import peer_missing

        why_no_peer = peer_missing()
        if why_no_peer is None and dt != DEFAULT_DT:  # the peer would read other time constants
            why_no_peer = (
                f"snnTorch's NIR import assumes dt={DEFAULT_DT:g}; this export's is {dt:g}"
            )
    for name, branch, fusion in regions:
        row: dict[str, Any] = {
            "region": name,
            "mode": "parallel" if fusion is not None else "replace",
            "status": "not exported",
            "file": None,
            "reason": "",
            "gate": gate_info(fusion),
            "encoder": encoder_info(branch.encoder),
            "decoder": decoder_info(branch.decoder),
        }
        rows.append(row)
        p = planes.get(name)
        if p is None:
            row["reason"] = "the twin did not run on the example input (unused branch)"
            continue
        graph = twin_to_nir(branch.twin, p.flatten(0, 1), dt)
        if graph.graph is None:
            row["reason"] = graph.reason
            continue
        row["file"] = _file_name(name, taken)
        nir.write(str(folder / row["file"]), graph.graph)
        row.update(
            status="exported",
            time_steps=int(p.shape[0]),
            input_shape=graph.input_shape,
            output_shape=graph.output_shape,
            io=(
                "feed the encoder's planes one step at a time (step t carries plane "
                "encoder.plane_of_step[t]); decode the T outputs with the decoder rule"
            ),
            nir_type_check=graph.type_check,
            neurons={k: vars(v) for k, v in graph.neurons.items()},
            notes=graph.notes,
        )
        if verify:
            row["verification"] = _verify(
                name, branch.twin, folder / row["file"], p, graph, why_no_peer
            )
    return rows


def _verify(
    name: str, twin: nn.Module, path: Path, planes: torch.Tensor, graph: Any, missing: str | None
) -> dict[str, Any]:
    if missing:
        return {"peer": "snntorch", "status": f"not verified: {missing}"}
    from hybridize.export.nir_check import compare, load_peer

    peer = load_peer(path, type_check=graph.type_check)
    modules = {k: v.module for k, v in graph.neurons.items()}
    a = compare(name, twin, peer, planes, modules)
    informative = a.spikes_fired > 0  # a silent twin agrees with anything that stays silent
    return {
        "peer": "snntorch",
        "status": "verified" if informative else "not informative: no spike fired on the inputs",
        "spikes_compared": a.spikes_compared,
        "spikes_differing": a.spikes_differing,
        "spikes_fired": a.spikes_fired,
        "fraction_equal": a.fraction_equal,
        "output_max_abs_diff": a.output_max_abs_diff,
    }
