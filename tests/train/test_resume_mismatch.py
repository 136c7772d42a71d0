"""Issue 14, item 11 (part): --resume continues the run as it was started. Options left out are
taken from the run; options that differ, another model or a broken state stop with one line."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hybridize.errors import CheckpointError, HybridizeError
from hybridize.train import ResumeMismatchError, finetune, resolve_config
from hybridize.train.resume import explicit_fields, resumed_config

from .conftest import COMMON, make_hybrid, make_plain


@pytest.fixture
def half_run(tmp_path: Path, data) -> Path:
    """A 2-epoch run stopped after its first epoch."""
    finetune(make_hybrid(), data, epochs=2, stop_after=1, out=tmp_path, **COMMON)
    return tmp_path


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_changed_epochs_and_lr_are_refused_in_one_line(half_run: Path, data) -> None:
    before = _snapshot(half_run)
    options = {**COMMON, "lr": 2e-2}
    with pytest.raises(ResumeMismatchError) as exc:
        finetune(make_hybrid(), data, epochs=3, resume=True, out=half_run, **options)
    message = str(exc.value)
    assert isinstance(exc.value, HybridizeError) and "\n" not in message
    assert "epochs 2 -> 3" in message and "lr 0.01 -> 0.02" in message
    assert "batch_size" not in message  # only the fields that differ are listed
    assert _snapshot(half_run) == before  # refused before anything was written


def test_options_left_out_come_from_the_run(half_run: Path, tmp_path_factory, data) -> None:
    straight = tmp_path_factory.mktemp("straight")
    finetune(make_hybrid(), data, epochs=2, out=straight, **COMMON)
    # no epochs, lr, batch size or workers: the run's own (2, 1e-2, 8, 0) are used
    resumed = finetune(make_hybrid(), data, resume=True, out=half_run, progress=False, device="cpu")
    assert resumed.config.epochs == 2 and resumed.config.lr == 1e-2
    assert [r["epoch"] for r in resumed.history] == [2]
    a, b = load_file(straight / "last.safetensors"), load_file(half_run / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_another_models_state_is_a_one_line_error(half_run: Path, data) -> None:
    with pytest.raises(ResumeMismatchError, match="trained another model") as exc:
        finetune(make_plain(), data, epochs=2, resume=True, out=half_run, **COMMON)
    assert "\n" not in str(exc.value) and "missing, e.g." in str(exc.value)


def test_an_unreadable_state_is_a_one_line_error(half_run: Path, data) -> None:
    # a pickle that weights_only refuses: torch's own message runs over many lines
    torch.save({"epoch": datetime.date(2020, 1, 1)}, half_run / "last.state.pt")
    with pytest.raises(CheckpointError, match="cannot read training state") as exc:
        finetune(make_hybrid(), data, epochs=2, resume=True, out=half_run, **COMMON)
    assert "\n" not in str(exc.value)


def test_data_set_and_preset_count_as_options(tmp_path: Path) -> None:
    stored = {**resolve_config(epochs=2).to_dict(), "data": "mnist"}
    requested = resolve_config(epochs=2)
    with pytest.raises(ResumeMismatchError, match="data 'mnist' -> 'fashion-mnist'"):
        resumed_config(stored, requested, {"epochs"}, tmp_path, "fashion-mnist")
    assert resumed_config(stored, requested, {"epochs"}, tmp_path, "mnist").epochs == 2
    # a preset given on resume stands for the options it sets
    explicit = explicit_fields("has8-small", {"epochs": 2, "lr": None})
    assert {"epochs", "optimizer", "batch_size", "preset"} <= explicit and "lr" in explicit
    with pytest.raises(ResumeMismatchError, match="optimizer 'adamw' -> 'adam'"):
        resumed_config(stored, resolve_config("has8-small", epochs=2), explicit, tmp_path)


def _converted(gain: str) -> torch.nn.Module:
    """The tiny ResNet (1 input channel) converted with has8-finetune, encoder gain ``gain``."""
    from tiny_resnet import Net

    import hybridize
    from hybridize.recipe import load_recipe

    torch.manual_seed(0)
    net = Net(c=4, classes=3)
    net.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
    recipe = load_recipe("has8-finetune").to_dict()
    recipe["defaults"]["encoder"]["gain"] = gain
    return hybridize.convert(net, recipe, example_input=torch.zeros(1, 1, 8, 8))


def test_a_hybrid_of_another_recipe_is_refused(tmp_path: Path, data) -> None:
    """Encoder settings leave the tensors' names and shapes alike: the recipe is compared."""
    finetune(_converted("unit"), data, epochs=2, stop_after=1, out=tmp_path, **COMMON)
    before = _snapshot(tmp_path)
    with pytest.raises(ResumeMismatchError, match="another recipe") as exc:
        finetune(_converted("raw"), data, epochs=2, resume=True, out=tmp_path, **COMMON)
    assert "defaults.encoder.gain 'unit' -> 'raw'" in str(exc.value)
    assert _snapshot(tmp_path) == before
    result = finetune(_converted("unit"), data, epochs=2, resume=True, out=tmp_path, **COMMON)
    assert [r["epoch"] for r in result.history] == [2]


def test_a_new_run_in_a_used_folder_leaves_nothing_of_the_earlier_run(tmp_path: Path, data):
    """Run B, started in run A's folder and interrupted before its first checkpoint, must not
    leave A's training state behind for a later --resume to continue under B's config."""
    from hybridize.train import TrainInterrupted

    from .conftest import interrupt_at

    finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
    assert (tmp_path / "last.state.pt").is_file() and (tmp_path / "best.state.pt").is_file()
    model = make_hybrid()
    interrupt_at(model, 1)
    with pytest.raises(TrainInterrupted, match="nothing to resume"):
        finetune(model, data, epochs=1, out=tmp_path, **{**COMMON, "lr": 2e-2})
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & {"last.safetensors", "last.state.pt", "best.safetensors", "best.state.pt"}
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 2e-2


def test_a_resume_writes_the_runs_own_config(half_run: Path, data) -> None:
    (half_run / "config.json").write_text("{}")  # a config.json that does not describe the run
    finetune(make_hybrid(), data, resume=True, out=half_run, **COMMON)
    assert json.loads((half_run / "config.json").read_text())["epochs"] == 2


def test_a_preset_resume_follows_the_runs_batch_size(tmp_path: Path, data) -> None:
    """has8-imagenet's lr is 0.1 B / 256: resuming with the preset alone must use the run's B,
    not the default's (which asked for another lr and was refused)."""
    options = {k: v for k, v in COMMON.items() if k not in ("lr", "batch_size")}
    finetune(
        make_hybrid(), data, epochs=2, stop_after=1, out=tmp_path, preset="has8-imagenet",
        batch_size=16, **options,
    )  # fmt: skip
    result = finetune(
        make_hybrid(), data, resume=True, out=tmp_path, preset="has8-imagenet", **options
    )
    assert result.config.batch_size == 16 and result.config.lr == pytest.approx(0.1 * 16 / 256)


def test_resume_without_data_takes_the_runs_own(half_run: Path, data, monkeypatch) -> None:
    from typer.testing import CliRunner

    import hybridize
    from hybridize.errors import TrainError
    from hybridize_cli.main import app

    # in-memory data sets are not in the state: one line asks for them again
    with pytest.raises(TrainError, match="given in memory"):
        finetune(make_hybrid(), None, resume=True, out=half_run, **COMMON)
    # the CLI leaves --data to the run when it is not given
    seen: dict = {}
    monkeypatch.setattr(hybridize, "finetune", lambda *a, **kw: seen.update(data=a[1]))
    CliRunner().invoke(app, ["finetune", "x.safetensors", "--resume", "--out", str(half_run)])
    assert seen == {"data": None}


def test_a_resume_with_another_data_set_is_refused(half_run: Path, data) -> None:
    """The run's data set is stored beside its config; a resume naming another is refused
    (it was compared against a key the config never held)."""
    state = torch.load(half_run / "last.state.pt", weights_only=True)
    state["data"] = "mnist"  # as a run on a named data set stores it
    torch.save(state, half_run / "last.state.pt")
    with pytest.raises(ResumeMismatchError, match="data 'mnist' -> 'fashion-mnist'"):
        finetune(make_hybrid(), "fashion-mnist", resume=True, out=half_run, **COMMON)


def test_a_new_run_keeps_the_checkpoint_it_starts_from(tmp_path: Path, data, monkeypatch):
    """`finetune runs/x/best.safetensors --out runs/x` (no --resume): the earlier run's files
    are cleared, but not the file this run was read from."""
    from hybridize.train import TrainInterrupted
    from hybridize.train import loop as loop_module

    from .conftest import interrupt_at

    finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
    source = tmp_path / "best.safetensors"
    kept = source.read_bytes()

    def read(path):  # the model of that file (a tiny hybrid), stopped at its first step
        assert Path(path) == source
        model = make_hybrid()
        interrupt_at(model, 1)
        return model

    monkeypatch.setattr(loop_module, "resolve_model", read)
    with pytest.raises(TrainInterrupted):
        finetune(source, data, epochs=1, out=tmp_path, **COMMON)
    assert source.read_bytes() == kept
    assert not (tmp_path / "last.safetensors").exists()  # the earlier run's other files: gone
