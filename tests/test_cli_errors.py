"""Exit codes (0 ok, 1 internal, 2 user error, 130 interrupted) and one-line errors of every
command (issue 14, items 4, 5, 11, 12, 13); --debug shows the traceback."""

from __future__ import annotations

import errno
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hybridize_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_user_error_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "missing.safetensors"
    result = _run("evaluate", str(missing), "--data", "fashion-mnist")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not found" in lines[0] and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = _run("--debug", "evaluate", str(tmp_path / "missing.safetensors"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "CheckpointError" in result.stderr


def test_version_and_help():
    assert _run("--version").stdout.startswith("hybridize ")
    help_text = _run("--help").stdout
    for command in ("convert", "finetune", "evaluate", "demo", "inspect", "export", "recipes"):
        assert command in help_text


# ---------------------------------------------------------------------------------------------
# In process: hybridize_cli.main.main_entry(argv) -> exit code, with stderr captured.

TINY = ["--no-pretrained", "--num-classes", "10", "--img-size", "32"]


def cli(capsys, *argv) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of one CLI call."""
    from hybridize_cli.main import main_entry

    code = main_entry([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_user_error(code: int, lines: list[str], *needles: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "internal error" not in lines[0], lines
    assert "Traceback" not in lines[0] and "\x1b" not in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def checkpoint(hybrid_checkpoint):
    return hybrid_checkpoint


def _png(path: Path, shade: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), (shade, 255 - shade, shade // 2)).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A valid two-class ImageFolder (train/ and val/, two PNGs per class)."""
    root = tmp_path / "images"
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            for i in range(2):
                _png(root / split / name / f"{i}.png", 40 * i + 100 * c)
    return root


# -- item 5: usage errors exit 2 with one line (typer's vendored click exceptions) ------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["convert", "resnet10t", "--bogus"], "--bogus"),
        (["convert"], "Missing argument"),
        (["bogus"], "No such command"),
        (["finetune", "x.safetensors", "--epochs", "abc"], "--epochs"),
        (["finetune", "x.safetensors", "--workers", "-1"], "--workers"),
        (["finetune", "x.safetensors", "--img-size", "-8"], "--img-size"),
        (["finetune", "x.safetensors", "--img-size", "0"], "--img-size"),
        (["evaluate", "x.safetensors", "--img-size", "0"], "--img-size"),
        (["finetune", "x.safetensors", "--device", "tpu"], "--device"),
        (["evaluate", "x.safetensors", "--device", "tpu"], "--device"),
        (["evaluate", "x.safetensors", "--batch-size", "0"], "--batch-size"),
        (["finetune", "x.safetensors", "--limit-train", "-5"], "--limit-train"),
        (["finetune", "x.safetensors", "--limit-train", "0"], "--limit-train"),
        (["evaluate", "x.safetensors", "--limit", "-3"], "--limit"),
        (["finetune", "x.safetensors", "--amp", "fp17"], "--amp"),
        (["evaluate", "x.safetensors", "--amp", "fp17"], "--amp"),
        (["convert", "resnet10t", "--img-size", "0"], "--img-size"),
        (["inspect", "x.safetensors", "--batch-size", "0"], "--batch-size"),
        (["export", "x.safetensors", "--img-size", "0"], "--img-size"),
        (["export", "x.safetensors", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, needle):
    code, lines = cli(capsys, *argv)
    assert_user_error(code, lines, needle)
    assert lines[0].endswith("--help)")  # says where the help is


def test_usage_error_from_the_console_script(tmp_path):
    result = _run("finetune", str(tmp_path / "x.safetensors"), "--epochs", "abc")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--epochs" in lines[0] and "internal error" not in lines[0]


def test_help_lists_the_exit_codes(capsys):
    from hybridize_cli.main import main_entry

    assert main_entry(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 ok", "1 internal error", "2 user error", "130 interrupted"):
        assert code in text


# -- item 4: Ctrl-C exits 130 with one line, whatever the library does with it ----------------


def _sigint(*_args, **_kwargs):
    signal.raise_signal(signal.SIGINT)  # the real signal: Python raises KeyboardInterrupt
    raise AssertionError("SIGINT did not interrupt")


@pytest.mark.parametrize(
    "target, argv",
    [
        ("create_model", ["convert", "resnet10t", *TINY]),
        ("evaluate", ["evaluate", "x.safetensors"]),
        ("load", ["inspect", "x.safetensors"]),
        ("load", ["export", "x.safetensors", "--format", "pt2"]),
        ("list_recipes", ["recipes", "list"]),
        ("run_demo", ["demo", "--out", "{tmp}/demo"]),
    ],
)
def test_ctrl_c_exits_130(capsys, monkeypatch, tmp_path, target, argv):
    import hybridize

    monkeypatch.setattr(hybridize, target, _sigint)
    code, lines = cli(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert (code, lines) == (130, ["interrupted"])


class _Interrupted(Exception):
    """What a library might raise after saving an interrupted run."""


def _reraise_as_own_exception(*_args, **_kwargs):
    try:
        _sigint()
    except KeyboardInterrupt as exc:
        raise _Interrupted("saved the run") from exc


class TrainInterrupted(Exception):
    """A dedicated exception a library might raise after a signal handler set a flag."""


def _raise_dedicated_exception(*_args, **_kwargs):
    raise TrainInterrupted("saved the run")


@pytest.mark.parametrize(
    "library",
    [_sigint, _reraise_as_own_exception, _raise_dedicated_exception],
)
def test_ctrl_c_in_finetune_exits_130(capsys, monkeypatch, tmp_path, checkpoint, library):
    import hybridize

    monkeypatch.setattr(hybridize, "finetune", library)
    code, lines = cli(capsys, "finetune", checkpoint, "--out", tmp_path / "run")
    assert code == 130 and len(lines) == 1 and lines[0].startswith("interrupted"), lines


def test_ctrl_c_in_finetune_prints_the_resume_hint(capsys, monkeypatch, tmp_path, checkpoint):
    import hybridize
    from hybridize.train import TrainInterrupted as LibraryInterrupted

    hint = "run: interrupted in epoch 2; last.safetensors holds epoch 1: continue with --resume"

    def interrupted(*_args, **_kwargs):
        raise LibraryInterrupted(hint)

    monkeypatch.setattr(hybridize, "finetune", interrupted)
    code, lines = cli(capsys, "finetune", checkpoint, "--out", tmp_path / "run")
    assert (code, lines) == (130, [f"interrupted: {hint}"])


@pytest.mark.parametrize(
    "options",
    [{"limit_train": -5}, {"limit_train": 0}, {"limit_eval": -3}, {"img_size": 0},
     {"workers": -1}, {"amp": "fp17"}, {"grad_clip": 0.0}],
)  # fmt: skip
def test_the_library_config_refuses_the_same_values(options):
    from hybridize.errors import TrainError
    from hybridize.train.config import resolve_config

    with pytest.raises(TrainError) as info:
        resolve_config(**options)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"limit_eval": -3}, {"limit_train": 0}, {"img_size": -8},
     {"workers": -1}],
)  # fmt: skip
def test_the_loaders_refuse_the_same_values(options, image_folder):
    from hybridize.data import build_loaders
    from hybridize.errors import DataError

    with pytest.raises(DataError) as info:
        build_loaders(f"imagefolder:{image_folder}", **options)
    assert "\n" not in str(info.value)


# -- item 5: environment and user mistakes ---------------------------------------------------


def _no_space(_filename: str) -> Exception:
    from safetensors import SafetensorError

    # what safetensors raises on a full disk (measured on a 64 KiB tmpfs)
    return SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )


@pytest.mark.parametrize(
    "make_error, free, needle",
    [
        (_no_space, None, "no space left"),
        # torch.save on a full disk (measured): the free space tells
        (lambda f: RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos"), 0,
         "no space left"),
        (lambda f: PermissionError(errno.EACCES, "Permission denied", f), None, "permission"),
        (lambda f: OSError(errno.EROFS, "Read-only file system", f), None, "read-only"),
    ],
)  # fmt: skip
def test_disk_full_and_read_only_are_user_errors(
    capsys, monkeypatch, tmp_path, make_error, free, needle
):
    import safetensors.torch

    import hybridize._atomic

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")  # the disk fills up mid-write
        raise make_error(str(filename))

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    if free is not None:
        usage = types.SimpleNamespace(total=1 << 30, used=1 << 30, free=free)
        monkeypatch.setattr(hybridize._atomic.shutil, "disk_usage", lambda _p: usage)
    out = tmp_path / "out"
    out.mkdir()
    code, lines = cli(capsys, "convert", "resnet10t", *TINY, "-o", out / "h.safetensors")
    assert_user_error(code, lines, needle, str(out / "h.safetensors"))
    assert list(out.iterdir()) == []  # no half-written file, no temp file


def test_output_naming_a_folder(capsys, tmp_path):
    code, lines = cli(capsys, "convert", "resnet10t", *TINY, "-o", tmp_path)
    assert_user_error(code, lines, str(tmp_path), "folder")


def test_out_naming_a_file(capsys, tmp_path, checkpoint):
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    code, lines = cli(capsys, "finetune", checkpoint, "--out", taken)
    assert_user_error(code, lines, str(taken), "is a file")
    assert taken.read_text() == "mine"


def test_empty_image_folder(capsys, tmp_path, checkpoint):
    for split in ("train/cat", "val/cat"):
        (tmp_path / "empty" / split).mkdir(parents=True)
    data = f"imagefolder:{tmp_path / 'empty'}"
    code, lines = cli(capsys, "evaluate", checkpoint, "--data", data, "--workers", "0")
    assert_user_error(code, lines, str(tmp_path / "empty"), "no images")


@pytest.mark.parametrize("workers", ["0", "1"])
def test_corrupt_jpeg_is_named(capsys, image_folder, checkpoint, workers):
    bad = image_folder / "val" / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    data = f"imagefolder:{image_folder}"
    args = ["--data", data, "--workers", workers, "--img-size", "16", "--batch-size", "8"]
    code, lines = cli(capsys, "evaluate", checkpoint, *args, "--device", "cpu")
    assert_user_error(code, lines, str(bad))


def test_missing_cifar_is_not_created(capsys, monkeypatch, tmp_path, checkpoint):
    import urllib.error
    import urllib.request

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HYBRIDIZE_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "cifar"
    args = ["--data", "cifar10", "--data-root", root, "--workers", "0"]
    code, lines = cli(capsys, "evaluate", checkpoint, *args)
    assert_user_error(code, lines, "cifar10", str(root))
    assert not root.exists()


def test_resume_with_another_models_run(capsys, tmp_path, image_folder):
    import torch

    import hybridize
    from hybridize.train.state import save_model

    tiny = hybridize.create_model("timm:test_efficientnet", num_classes=2)
    checkpoint = tmp_path / "tiny.safetensors"
    example = torch.zeros(1, 3, 16, 16)
    hybridize.save(hybridize.convert(tiny, "has8-finetune", example_input=example), checkpoint)
    data = ["--data", f"imagefolder:{image_folder}", "--img-size", "16", "--workers", "0"]
    run = tmp_path / "run"  # a real run of `checkpoint`, stopped after its first epoch
    hybridize.finetune(
        checkpoint, data[1], epochs=2, stop_after=1, img_size=16, workers=0, batch_size=2,
        out=run, progress=False, device="cpu",
    )  # fmt: skip
    other = save_model(
        hybridize.create_model("resnet10t", num_classes=10), tmp_path / "o.safetensors"
    )
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, lines = cli(capsys, "finetune", other, *data, "--out", run, "--resume", "--device", "cpu")
    assert_user_error(code, lines, "--resume", str(run), "trained another model")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# -- item 11: multi-line errors become one line ----------------------------------------------


def test_garbage_training_state_is_one_line(capsys, tmp_path, checkpoint, image_folder):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "last.safetensors")
    (run / "last.state.pt").write_bytes(bytes(range(256)) * 4)
    args = ["--data", f"imagefolder:{image_folder}", "--img-size", "16", "--workers", "0"]
    code, lines = cli(
        capsys, "finetune", checkpoint, *args, "--out", run, "--resume", "--device", "cpu"
    )
    assert_user_error(code, lines, "last.state.pt")


def test_legacy_pickle_weights_are_one_line(capsys, tmp_path):
    import torch

    import hybridize

    legacy = tmp_path / "whole_model.pth"
    torch.save(hybridize.create_model("resnet10t", num_classes=10), legacy)  # a pickled module
    code, lines = cli(capsys, "convert", "resnet10t", *TINY, "--weights", legacy)
    assert_user_error(code, lines, str(legacy))


def test_export_opset_out_of_range_is_checked_first(capfd, checkpoint, tmp_path):
    from hybridize.export.onnx_writers import opset_range
    from hybridize_cli.main import main_entry

    dest = tmp_path / "m.onnx"
    code = main_entry([
        "export", str(checkpoint), "--format", "onnx", "--opset", "0", "-o", str(dest)
    ])  # fmt: skip
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    low, high = opset_range()
    assert_user_error(code, lines, "--opset 0", f"{low} to {high}")
    assert out == "" and not dest.exists()


def test_export_failure_does_not_dump_the_graph(capfd, checkpoint, tmp_path):
    pytest.importorskip("onnx")
    from hybridize_cli.main import main_entry

    # opset 9 lacks Round, which the encoder needs: the exporter fails inside torch
    argv = ["export", str(checkpoint), "--format", "onnx", "--opset", "9", "--no-real"]
    code = main_entry([*argv, "-o", str(tmp_path / "m.onnx")])
    out, err = capfd.readouterr()  # file descriptors: the exporter's C++ logger writes to fd 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert_user_error(code, lines, "opset 9")
    assert "graph" not in out.lower() and len(out) < 200


# -- item 12: suggestions and the order of checks ---------------------------------------------


def test_model_typo_suggests_the_closest_names(capsys):
    code, lines = cli(capsys, "convert", "mobilenetv3_smal_050", *TINY)
    assert_user_error(code, lines, "did you mean mobilenetv3_small_050")
    assert "edgetpu" not in lines[0]


def test_unknown_recipe_is_reported_before_the_model_is_built(capsys, monkeypatch):
    import hybridize

    built = []
    monkeypatch.setattr(hybridize, "create_model", lambda *a, **k: built.append(a))
    code, lines = cli(capsys, "convert", "resnet10t", *TINY, "--recipe", "nope")
    assert_user_error(code, lines, "unknown recipe 'nope'")
    assert built == []


# -- item 13: missing extras are named; defaults need no extra ---------------------------------


def test_export_without_onnx_names_the_extra(capsys, monkeypatch, checkpoint, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails, find_spec is None
    dest = tmp_path / "m.onnx"
    code, lines = cli(capsys, "export", checkpoint, "--format", "onnx", "-o", dest)
    assert_user_error(code, lines, "pip install 'hybridize[export]'")
    assert not dest.exists()


def test_inspect_default_needs_no_extra(capsys, monkeypatch, checkpoint):
    from hybridize_cli.main import main_entry

    monkeypatch.setitem(sys.modules, "foolbox", None)  # as installed without the samples extra
    code = main_entry(["inspect", str(checkpoint)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "spiking regions (8 images: random inputs" in out  # auto: random without the extra


def _cpu_allocator_error() -> BaseException:
    """The error torch's CPU allocator raises for a request it cannot meet (nothing is
    allocated: the size is refused up front)."""
    try:
        torch.empty(2**60, dtype=torch.uint8)
    except RuntimeError as exc:
        return exc
    raise AssertionError("2^60 bytes were allocated")


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:119] . DefaultCPUAllocator: not enough "
                "memory: you tried to allocate 1073741824 bytes."
            ),
            "out of memory",
        ),
        (MemoryError(), "out of memory"),
        (_cpu_allocator_error(), "out of memory"),  # torch's own words on this machine
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "lower --batch-size"),
        (BrokenPipeError(32, "Broken pipe"), "closed pipe"),
        (OSError(5, "Input/output error", "/mnt/x"), "/mnt/x: input/output error"),
    ],
)
def test_the_environment_running_out_is_a_user_error(capsys, monkeypatch, error, needle):
    """Memory, a closed pipe, a failing disk: exit 2 with one line, not 'internal error'."""
    import hybridize

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(hybridize, "load", fail)
    code, lines = cli(capsys, "inspect", "x.safetensors")
    assert_user_error(code, lines, needle)
