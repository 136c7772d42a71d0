"""Benchmark: how much of the timm zoo survives conversion, stage by stage.

For every model in ``timm.list_models()`` within a parameter budget (pretrained=False,
num_classes=10), one subprocess per model runs the stages

    build -> input -> trace -> convert -> forward -> gate0 -> backward -> saveload
    then, for the models that pass them all: onnx, pt2 (export, each recorded on its own)

build: count the parameters cheaply (parameters created on the "meta" device) and skip models
above the budget, then build the model for real. input: the smallest workable input, 64 px (or
the model's min_input_size) and, when the model refuses it, its pretrained_cfg input_size.
trace: the conversion's own tracer, no leaves beyond the defaults. convert:
``hybridize.convert(model, "has8-finetune", example_input=x)``. forward: eval-mode output of
the hybrid, finite, shape (N, 10). gate0: that output equals the original model's exactly.
backward: every gate set to 1, train mode, cross entropy; all gradients finite and at least one
twin parameter gets a non-zero gradient. saveload: ``hybridize.save`` / ``hybridize.load``,
bit-identical eval outputs. onnx / pt2: ``hybridize.export_onnx`` (parity check in onnxruntime)
and ``hybridize.export_pt2`` (reload and parity check) on the hybrid as trained by the backward
stage (every gate at 1, so the spiking path counts); each is recorded as pass/fail with the
first line of its error and does not stop the other (``--no-export`` skips both); a failed
export is tried on the unconverted model with torch's exporter alone (``base_ok``), which tells
a hybridize failure from one torch has on the base model already.

The backward stage also records the hybrid's largest |parameter gradient| against its ANN's
(``grad_ratio``; same batch and loss, one train-mode backward of a copy of the ANN), and the
same check runs on a conversion with each other default recipe (``--grad-recipes``, default
``has8``: fresh twins), recorded under ``recipes`` without failing the model: issue 9's bound
(finite, within 1000x the ANN's) measured on every model of the run.

Results go to a JSON lines file, one record per model (with ``code``, the commit that made it),
appended as each model finishes; a second run skips the models already recorded (delete the
file to start over). One crash or hang costs one model: the record says "crash" or "timeout"
and the stage it was in.

    .venv/bin/python benchmarks/coverage.py [--budget-m 30] [--limit N] [--shard I/N]
        [--filter GLOB] [--timeout 120] [--jobs 1] [--out coverage.jsonl] [--no-export]
        [--grad-recipes has8]
    .venv/bin/python benchmarks/coverage.py --summarise coverage.jsonl [--shard I/N] [--filter G]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STAGES = ("build", "input", "trace", "convert", "forward", "gate0", "backward", "saveload")
EXPORT_STAGES = ("onnx", "pt2")
RECIPE = "has8-finetune"
RECIPE_STAGE = "recipe:"  # the stage name of another recipe's check: recipe:<name>
# the other default recipe: its hybrid's gate-1 backward is checked too (finite, and its largest
# gradient against the ANN's), recorded apart from the stages (``--grad-recipes``)
GRAD_RECIPES = ("has8",)
GRAD_BOUND = 1000  # issue 9: a hybrid's largest gradient within this many times its ANN's
NUM_CLASSES = 10
BATCH = 2  # > 1 so train-mode BatchNorm accepts 1x1 feature maps
DEFAULT_SIZE = 64


class StageFailure(Exception):
    """A stage ran but its check failed (as opposed to raising)."""


# --------------------------------------------------------------------------- worker side


@contextmanager
def _params_on_meta() -> Iterator[None]:
    """Create every nn.Parameter on the meta device (buffers and plain tensors stay on CPU),
    so a 1B-parameter model is counted in milliseconds and without memory."""
    import torch
    from torch import nn

    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def count_params(name: str) -> tuple[int | None, str]:
    """(parameter count, how it was counted) without materialising the weights; None when the
    cheap count fails (the caller then counts after a real build)."""
    import timm

    try:
        with _params_on_meta():
            model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
        return sum(p.numel() for p in model.parameters()), "meta"
    except Exception:
        return None, "build"


def _pick_input(model: Any) -> tuple[Any, str]:
    """The smallest input the (unconverted) model accepts in eval mode, and where it came from."""
    import torch

    cfg = getattr(model, "pretrained_cfg", None) or {}
    in_chans = int(getattr(model, "in_chans", 3) or 3)
    candidates: list[tuple[int, int, str]] = []
    min_size = cfg.get("min_input_size")
    first = max(DEFAULT_SIZE, *(min_size[1:] if min_size else (0,)))
    candidates.append((first, first, f"{first}px" if first == DEFAULT_SIZE else "min_input_size"))
    if cfg.get("input_size"):
        h, w = cfg["input_size"][1:]
        if (h, w) != (first, first):
            candidates.append((h, w, "pretrained_cfg"))
    errors = []
    for h, w, why in candidates:
        x = torch.randn(BATCH, in_chans, h, w, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                model(x)
            return x, why
        except Exception as exc:
            errors.append(f"{h}x{w}: {_first_line(exc)}")
    raise StageFailure("no workable input size (" + "; ".join(errors) + ")")


def _reinit_zero_heads(model: Any) -> None:
    """Several families zero-initialise their classifier, which would block all gradient."""
    import torch

    for m in model.modules():
        is_head = isinstance(m, torch.nn.Linear) or (
            isinstance(m, torch.nn.Conv2d) and m.out_channels == NUM_CLASSES
        )
        if is_head and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.1)


def _max_abs_grad(model: Any) -> float:
    return max(
        (p.grad.abs().max().item() for p in model.parameters() if p.grad is not None),
        default=0.0,
    )


def _ann_max_grad(model: Any, x: Any) -> float:
    """The largest |parameter gradient| of one train-mode backward of (a copy of) the ANN, with
    the backward stage's loss: what a hybrid's largest gradient is measured against."""
    import copy

    import torch

    ann = copy.deepcopy(model).train()
    target = torch.arange(x.shape[0]) % NUM_CLASSES
    torch.nn.functional.cross_entropy(ann(x), target).backward()
    return _max_abs_grad(ann)


def _check_backward(hybrid: Any, x: Any) -> dict[str, Any]:
    import torch

    from hybridize.spiking import FusionBlock

    blocks = [m for m in hybrid.modules() if isinstance(m, FusionBlock)]
    with torch.no_grad():
        for b in blocks:
            b.gate.fill_(1.0)
    hybrid.train()
    target = torch.arange(x.shape[0]) % NUM_CLASSES
    loss = torch.nn.functional.cross_entropy(hybrid(x), target)
    if not torch.isfinite(loss):
        raise StageFailure(f"loss is {loss.item()}")
    loss.backward()
    bad = [
        n
        for n, p in hybrid.named_parameters()
        if p.grad is not None and not p.grad.isfinite().all()
    ]
    if bad:
        raise StageFailure(f"non-finite gradient in {len(bad)} parameters")
    reached = 0
    for b in blocks:
        if any(p.grad is not None and p.grad.any() for p in b.branch.twin.parameters()):
            reached += 1
    if not reached:
        raise StageFailure("no twin parameter received a non-zero gradient")
    return {"blocks": len(blocks), "twins_with_grad": reached, "grad_max": _max_abs_grad(hybrid)}


def _check_recipes(
    model: Any, x: Any, recipes: tuple[str, ...], ann_max: float, rec: dict[str, Any], enter: Any
) -> None:
    """Convert ``model`` with each other recipe and run the backward stage's check on it;
    ``rec["recipes"][name]`` records ok, blocks, twins reached and the gradient ratio to the
    ANN's, or the failure (filled as it goes, like the exports)."""
    import hybridize

    out: dict[str, Any] = rec.setdefault("recipes", {})
    for name in recipes:
        enter(f"{RECIPE_STAGE}{name}")
        try:
            got = _check_backward(hybridize.convert(model, name, example_input=x), x)
            out[name] = {"ok": True, **got, "grad_ratio": _ratio(got["grad_max"], ann_max)}
        except Exception as exc:
            out[name] = {"ok": False, **_failure(exc)}


def _ratio(hybrid_max: float, ann_max: float) -> float | None:
    return hybrid_max / ann_max if ann_max > 0 else None


def _check_exports(hybrid: Any, base: Any, x: Any, rec: dict[str, Any], enter: Any) -> None:
    """Export to ONNX and torch.export with their parity checks; ``rec["export"][fmt]`` records
    each (filled as it goes, so a timeout in pt2 keeps the onnx result). When a hybrid's export
    fails, ``base`` (the unconverted model) is exported by torch's own exporter the same way:
    ``base_ok`` says whether the failure is the base model's (torch cannot export it either)."""
    import hybridize

    out: dict[str, Any] = rec.setdefault("export", {})
    exporters = {"onnx": hybridize.export_onnx, "pt2": hybridize.export_pt2}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in EXPORT_STAGES:
            enter(fmt)
            start = time.monotonic()
            try:
                report = exporters[fmt](hybrid, x, Path(tmp) / f"hybrid.{fmt}", real_inputs=False)
                out[fmt] = {"ok": True, **({"warning": report.warning} if report.warning else {})}
                if report.exact_batches:  # judged against the float64 reference (docs/export.md)
                    out[fmt]["exact_batches"] = report.exact_batches
                    out[fmt]["float32_error"] = report.float32_error
            except Exception as exc:
                out[fmt] = {"ok": False, **_failure(exc)}
            out[fmt]["seconds"] = round(time.monotonic() - start, 1)
            if not out[fmt]["ok"]:
                out[fmt].update(_base_export(fmt, base, x, Path(tmp) / f"base.{fmt}"))


def _failure(exc: BaseException) -> dict[str, str]:
    return {"error_type": type(exc).__name__, "error": _first_line(exc), "where": _where(exc)}


def _base_export(fmt: str, base: Any, x: Any, path: Path) -> dict[str, Any]:
    """torch's exporter (the one ``hybridize.export_<fmt>`` uses, dynamic batch) on the base
    model: ``{"base_ok": True}`` or ``{"base_ok": False, "base_error": first line}``."""
    import warnings

    import torch

    base.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                torch.onnx.export(
                    base, (x,), str(path), dynamo=False, opset_version=17,
                    input_names=["input"], dynamic_axes={"input": {0: "batch"}},
                )  # fmt: skip
            else:
                torch.export.export(base, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception as exc:
        return {"base_ok": False, "base_error": f"{type(exc).__name__}: {_first_line(exc)}"}
    return {"base_ok": True}


def run_model(
    name: str, budget: int, report: Any, export: bool = True, grad_recipes: tuple[str, ...] = ()
) -> None:
    """Run every stage on one model; send ("stage", name) as each starts, then ("result", rec)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rec: dict[str, Any] = {"model": name, "status": "ok"}
    stage = "build"

    def enter(s: str) -> None:
        nonlocal stage
        stage = s
        report.send(("stage", {**rec, "stage": s}))

    try:
        import hybridize
        from hybridize.conversion.trace import make_tracer, trace
        from hybridize.recipe import load_recipe

        enter("build")
        params, how = count_params(name)
        if params is not None and params > budget:
            rec.update(status="over_budget", params=params, counted=how)
            report.send(("result", rec))
            return
        model = hybridize.create_model(name, num_classes=NUM_CLASSES)
        rec["params"] = sum(p.numel() for p in model.parameters())
        rec["counted"] = how
        if rec["params"] > budget:
            rec["status"] = "over_budget"
            report.send(("result", rec))
            return
        _reinit_zero_heads(model)
        model.eval()

        enter("input")
        x, why = _pick_input(model)
        rec["input"], rec["input_from"] = list(x.shape[1:]), why

        enter("trace")
        recipe = load_recipe(RECIPE)
        trace(model, make_tracer(recipe.trace))

        enter("convert")
        hybrid = hybridize.convert(model, RECIPE, example_input=x)
        plan = hybrid.conversion_plan
        rec["regions"] = len(plan.converted)
        rec["params_after"] = plan.params_after

        enter("forward")
        hybrid.eval()
        with torch.no_grad():
            y = hybrid(x)
        if tuple(y.shape) != (BATCH, NUM_CLASSES) or not torch.isfinite(y).all():
            raise StageFailure(f"output shape {tuple(y.shape)} or non-finite values")

        enter("gate0")
        with torch.no_grad():
            ref = model(x)
        if not torch.equal(y, ref):
            diff = (y - ref).abs().max().item()
            raise StageFailure(f"gate-0 output differs from the original (max abs diff {diff:.3g})")

        enter("backward")
        rec.update(_check_backward(hybrid, x))
        ann_max = _ann_max_grad(model, x)
        rec["ann_grad_max"] = ann_max
        rec["grad_ratio"] = _ratio(rec["grad_max"], ann_max)

        enter("saveload")
        hybrid.eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "hybrid.safetensors"
            hybridize.save(hybrid, path)
            loaded = hybridize.load(path)
        with torch.no_grad():
            if not torch.equal(loaded(x), hybrid(x)):
                raise StageFailure("loaded model's eval output differs from the saved model's")
        del loaded

        # exports before the other recipes' checks: a check killed for memory (a worker that
        # dies takes the record's later stages with it) then costs only its own result
        if export:
            _check_exports(hybrid, model, x, rec, enter)
        hybrid.zero_grad(set_to_none=True)
        _check_recipes(model, x, grad_recipes, ann_max, rec, enter)
    except Exception as exc:
        rec.update(status="fail", stage=stage, **_failure(exc))
    report.send(("result", rec))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:400]


def _where(exc: BaseException) -> str:
    """The innermost frame in hybridize (else the innermost overall): 'file:line in func'."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/hybridize/" in f.filename]
    f = (ours or frames or [None])[-1]
    if f is None:
        return ""
    short = re.sub(r".*/(site-packages|work/main)/", "", f.filename)
    return f"{short}:{f.lineno} in {f.name}"


def grad_profile(name: str, size: int = DEFAULT_SIZE) -> list[tuple[str, float]]:
    """max |dL/dy| at each fusion block's output (graph order) for the backward stage's setup:
    has8-finetune, every gate set to 1, train mode, cross entropy on a fixed batch."""
    import torch

    import hybridize
    from hybridize.spiking import FusionBlock

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = hybridize.create_model(name, num_classes=NUM_CLASSES)
    _reinit_zero_heads(model)
    model.eval()
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    hybrid = hybridize.convert(model, RECIPE, example_input=x)
    mags: dict[str, float] = {}
    order: list[str] = []

    def watch(block_name: str) -> Any:
        def hook(_m: Any, _a: Any, out: Any) -> None:
            order.append(block_name)
            out.register_hook(lambda g: mags.__setitem__(block_name, g.abs().max().item()))

        return hook

    for block_name, m in hybrid.named_modules():
        if isinstance(m, FusionBlock):
            with torch.no_grad():
                m.gate.fill_(1.0)
            m.register_forward_hook(watch(block_name))
    hybrid.train()
    target = torch.arange(BATCH) % NUM_CLASSES
    torch.nn.functional.cross_entropy(hybrid(x), target).backward()
    return [(n, mags.get(n, float("nan"))) for n in order]


def _child(
    name: str, budget: int, conn: Any, export: bool = True, grad_recipes: tuple[str, ...] = ()
) -> None:
    run_model(name, budget, conn, export, grad_recipes)
    conn.close()


# --------------------------------------------------------------------------- parent side


def select_models(filter_glob: str | None, shard: tuple[int, int], limit: int | None) -> list[str]:
    """timm.list_models() (sorted) -> glob filter -> every n-th from i (shard i/n) -> limit."""
    import timm

    names = sorted(timm.list_models())
    if filter_glob:
        names = [n for n in names if fnmatch.fnmatchcase(n, filter_glob)]
    i, n = shard
    names = names[i::n]
    return names[:limit] if limit is not None else names


def read_results(path: Path) -> list[dict[str, Any]]:
    """Records of a results file; a torn last line (a killed run) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "model" in rec:
            out.append(rec)
    return out


def _append(path: Path, rec: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _lost(partial: dict[str, Any], name: str, error_type: str, error: str) -> dict[str, Any]:
    """The record of a worker that crashed or ran out of time in the stage it last entered.
    In an export stage or another recipe's check the model passed the conversion stages: only
    that check failed."""
    failure = {"error_type": error_type, "error": error, "where": ""}
    stage = str(partial.get("stage"))
    key, item = "", ""
    if stage in EXPORT_STAGES:
        key, item = "export", stage
    elif stage.startswith(RECIPE_STAGE):
        key, item = "recipes", stage.removeprefix(RECIPE_STAGE)
    if key:
        rec = {k: v for k, v in partial.items() if k != "stage"}
        rec.update(model=name, status="ok")
        rec[key] = {**rec.get(key, {}), item: {"ok": False, **failure}}
        return rec
    return {**partial, "model": name, "status": "fail", **failure}


def code_version() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), recorded with each model: a
    results file filled over several sessions says which code made which record."""
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *argv], capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_all(names: list[str], args: argparse.Namespace) -> None:
    out = Path(args.out)
    done = {r["model"] for r in read_results(out)}
    todo = [n for n in names if n not in done]
    print(
        f"{len(names)} models selected, {len(names) - len(todo)} already in {out}, "
        f"{len(todo)} to run",
        flush=True,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "timm", "hybridize.conversion", "hybridize.io"])
    budget = int(args.budget_m * 1e6)
    code = code_version()
    running: dict[str, tuple[Any, Any, float, dict]] = {}  # name -> (proc, conn, start, partial)
    queue = list(todo)
    finished = 0
    while queue or running:
        while queue and len(running) < args.jobs:
            name = queue.pop(0)
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_child,
                args=(name, budget, child, not args.no_export, args.grad_recipes),
                daemon=True,
            )
            proc.start()
            child.close()
            running[name] = (proc, parent, time.monotonic(), {"stage": "start"})
        for name in list(running):
            proc, conn, start, partial = running[name]
            rec = None
            try:
                while conn.poll():
                    kind, value = conn.recv()
                    if kind == "stage":
                        partial = value
                    else:
                        rec = value
            except (EOFError, OSError):
                if rec is None:
                    proc.join(timeout=5)
                    rec = _lost(partial, name, "Crash", f"worker died (exit code {proc.exitcode})")
            elapsed = time.monotonic() - start
            if rec is None and elapsed > args.timeout:
                proc.kill()
                rec = _lost(partial, name, "Timeout", f"no result within {args.timeout:.0f} s")
            if rec is None:
                running[name] = (proc, conn, start, partial)
                continue
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
            conn.close()
            rec["seconds"] = round(elapsed, 1)
            rec["code"] = code
            _append(out, rec)
            del running[name]
            finished += 1
            tail = f"{rec.get('stage')}: {rec.get('error')}" if rec["status"] == "fail" else ""
            print(f"[{finished}/{len(todo)}] {name}: {rec['status']} {tail}", flush=True)
        time.sleep(0.05)
    print()
    print(summarise(read_results(out), names))


# --------------------------------------------------------------------------- summary


def normalize_error(error: str) -> str:
    """Group key of an error line: quoted names, numbers, shapes and addresses blanked."""
    no_region = re.match(r"recipe .* converted no region of \w+ \((.*)", error)
    if no_region:  # group by the first refusal of a block, not by the model's region names
        reasons = [r.partition(": ")[2] for r in no_region[1].split("; ")]
        block = [r for r in reasons if r and "no activation" not in r] or reasons
        error = f"converted no region; blocks refused: {block[0]}"
    s = re.sub(r"0x[0-9a-fA-F]+", "<addr>", error)
    s = re.sub(r"/tmp\S*", "<tmp>", s)
    s = re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "'?'", s)
    s = re.sub(r"\[[\d, ]+\]|\([\d, ]+\)|torch\.Size\([^)]*\)", "<shape>", s)
    s = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", s)
    return s.strip()


def summarise(records: list[dict[str, Any]], only: list[str] | None = None) -> str:
    """Markdown summary: pass rate per stage and failures grouped by stage and cause."""
    if only is not None:
        keep = set(only)
        records = [r for r in records if r["model"] in keep]
    over = [r for r in records if r["status"] == "over_budget"]
    runs = [r for r in records if r["status"] != "over_budget"]
    lines = [
        f"models recorded: {len(records)}; over the budget: {len(over)}; "
        f"run: {len(runs)}; passed every stage: {sum(r['status'] == 'ok' for r in runs)}",
        "",
    ]
    lines += ["| stage | reached | passed | pass rate | passed / run |", "|---|---|---|---|---|"]
    failed_at = Counter(r["stage"] for r in runs if r["status"] == "fail")
    reached = len(runs)
    for s in STAGES:
        passed = reached - failed_at[s]
        rate = f"{100 * passed / reached:.1f}%" if reached else "-"
        whole = f"{100 * passed / len(runs):.1f}%" if runs else "-"
        lines.append(f"| {s} | {reached} | {passed} | {rate} | {whole} |")
        reached = passed
    lines += grad_summary(runs)
    lines += export_summary(runs)
    inputs = Counter(r.get("input_from") for r in runs if r.get("input_from"))
    if inputs:
        lines += ["", "input used: " + ", ".join(f"{k} {v}" for k, v in inputs.most_common())]
    partial = [r for r in runs if r.get("blocks") and r.get("twins_with_grad", 0) < r["blocks"]]
    if partial:
        lines += [
            "",
            "twins without gradient (passed, but not every twin learns): "
            + ", ".join(f"{r['model']} ({r['twins_with_grad']}/{r['blocks']})" for r in partial),
        ]
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    examples: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in runs:
        if r["status"] == "fail":
            key = (r["stage"], r.get("error_type", ""), normalize_error(r.get("error", "")))
            groups[key].append(r["model"])
            examples.setdefault(key, r)
    if groups:
        lines += ["", "## failures by cause (most models first)", ""]
        for key, models in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            ex = examples[key]
            lines.append(f"- [{len(models)}] {key[0]}: {key[1]}: {key[2]}")
            lines.append(f"  - e.g. {ex['model']}: {ex.get('error', '')}")
            if ex.get("where"):
                lines.append(f"  - at {ex['where']}")
            lines.append(f"  - models: {', '.join(sorted(models))}")
    return "\n".join(lines)


def grad_summary(runs: list[dict[str, Any]]) -> list[str]:
    """Lines on the gate-1 backward: largest gradient against the ANN's, for the stage's
    recipe and each other recipe checked; every failure of another recipe's check."""
    rows: dict[str, list[tuple[float, str]]] = defaultdict(list)
    failed: dict[str, list[str]] = defaultdict(list)
    for r in runs:
        if r.get("grad_ratio") is not None:
            rows[RECIPE].append((r["grad_ratio"], r["model"]))
        for name, res in (r.get("recipes") or {}).items():
            if res.get("ok"):
                if res.get("grad_ratio") is not None:
                    rows[name].append((res["grad_ratio"], r["model"]))
            else:
                failed[name].append(f"{r['model']} ({res.get('error_type')}: {res.get('error')})")
    if not rows and not failed:
        return []
    lines = ["", "gate-1 backward, largest |parameter gradient| / the ANN's:"]
    for name in sorted(set(rows) | set(failed)):
        ratios = sorted(rows[name])
        if ratios:
            (lo, lo_m), (hi, hi_m) = ratios[0], ratios[-1]
            median = ratios[len(ratios) // 2][0]
            over = [m for v, m in ratios if v > GRAD_BOUND]
            lines.append(
                f"- {name}: {len(ratios)} finite; median {median:.3g}x, from {lo:.3g}x ({lo_m}) "
                f"to {hi:.3g}x ({hi_m}); above {GRAD_BOUND}x: {', '.join(over) or 'none'}"
            )
        if failed[name]:
            lines.append(f"  - {name} failed on {len(failed[name])}: {'; '.join(failed[name])}")
    return lines


def export_summary(runs: list[dict[str, Any]]) -> list[str]:
    """Lines on the export stages: pass counts of the models that reached them, and each
    failure grouped by cause."""
    tried = [r for r in runs if r["status"] == "ok" and r.get("export")]
    if not tried:
        return []
    lines = ["", f"export ({len(tried)} models passed every conversion stage and were exported):"]
    for fmt in EXPORT_STAGES:
        done = [r for r in tried if fmt in r["export"]]
        ok = sum(bool(r["export"][fmt].get("ok")) for r in done)
        rate = f"{100 * ok / len(tried):.1f}%"
        lines.append(
            f"- {fmt}: {ok} of {len(tried)} pass ({rate}); {len(tried) - len(done)} not run"
        )
        groups: dict[str, list[str]] = defaultdict(list)
        for r in done:
            res = r["export"][fmt]
            if not res.get("ok"):
                base = {True: " (the base model exports)", False: " (the base model fails too)"}
                groups[
                    f"{res.get('error_type', '')}: {normalize_error(res.get('error', ''))}"
                    f"{base.get(res.get('base_ok'), '')}"
                ].append(r["model"])
        for key, models in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  - [{len(models)}] {key}: {', '.join(sorted(models))}")
        warned = sorted(r["model"] for r in done if r["export"][fmt].get("warning"))
        if warned:
            lines.append(
                f"  - passed with a warning (faithful teacher-forced, but the free-running "
                f"predictions differ: rounding amplified through the spikes): {', '.join(warned)}"
            )
    both = sum(all(r["export"].get(f, {}).get("ok") for f in EXPORT_STAGES) for r in tried)
    lines.append(f"- both: {both} of {len(tried)}")
    return lines


def _shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text)
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: give I/N with 0 <= I < N, e.g. 0/6")
    return int(m[1]), int(m[2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-m", type=float, default=30.0, help="max parameters, millions")
    p.add_argument("--limit", type=int, default=None, help="at most this many models")
    p.add_argument("--shard", type=_shard, default=(0, 1), help="I/N: every N-th model from I")
    p.add_argument("--filter", default=None, help="glob on timm model names, e.g. 'resnet*'")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per model")
    p.add_argument("--jobs", type=int, default=1, help="models run at once")
    p.add_argument("--out", default="coverage.jsonl", help="results file (JSON lines)")
    p.add_argument("--no-export", action="store_true", help="skip the onnx and pt2 stages")
    p.add_argument(
        "--grad-recipes",
        type=lambda text: tuple(r for r in text.split(",") if r),
        default=GRAD_RECIPES,
        help="other recipes whose gate-1 backward is checked too (comma-separated; '' for none)",
    )
    p.add_argument(
        "--summarise",
        metavar="FILE",
        default=None,
        help="only print the summary of an existing results file (of the models --shard, "
        "--filter and --limit select, when given)",
    )
    p.add_argument(
        "--grad-profile",
        metavar="MODEL",
        default=None,
        help="only print max |dL/dy| per fusion block of MODEL (backward-stage setup)",
    )
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="input size for --grad-profile")
    args = p.parse_args(argv)
    if args.grad_profile:
        import math

        for block, value in grad_profile(args.grad_profile, args.size):
            exp = f"{math.log10(value):6.1f}" if 0 < value < math.inf else f"{value:>6}"
            print(f"{block:40s} log10 max|dL/dy| = {exp}")
        return 0
    if args.summarise:
        path = Path(args.summarise)
        if not path.is_file():
            print(
                f"error: results file {path} not found; run the benchmark with --out first",
                file=sys.stderr,
            )
            return 2
        selected = args.filter is not None or args.shard != (0, 1) or args.limit is not None
        only = select_models(args.filter, args.shard, args.limit) if selected else None
        print(summarise(read_results(path), only))
        return 0
    names = select_models(args.filter, args.shard, args.limit)
    run_all(names, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
