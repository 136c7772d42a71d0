"""Issue 14, item 11 (part): --resume continues the run as it was started. Options left out are
taken from the run; options that differ, another model or a broken state stop with one line."""

from __future__ import annotations

import datetime
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
