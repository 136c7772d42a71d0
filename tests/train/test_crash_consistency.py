"""Issue 14, item 9: a kill between any two writes of an epoch's end leaves a folder that
--resume completes exactly: no duplicate or missing metrics line, no weights of one epoch with
the state of another. Kills are simulated by making one write raise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hybridize.train.run as run
from hybridize.train import finetune, read_metrics
from hybridize.train.report import MetricsWriter
from hybridize.train.state import load_state

from .conftest import COMMON, make_data, make_hybrid

EPOCHS = 2
OPTIONS = {**COMMON, "lr": 1e-3}  # top-1 improves in epoch 2, so best is written then too


class Killed(BaseException):
    """Not an Exception: nothing in the library may catch it (as with SIGKILL)."""


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    finetune(make_hybrid(), make_data(), epochs=EPOCHS, out=out, **OPTIONS)
    assert load_state(out / "best.state.pt")["epoch"] == 2
    return out


def _kill_on(monkeypatch, target: str, name: str, nth: int) -> None:
    """Make the ``nth`` call of ``run.<target>`` for file ``name`` raise :class:`Killed`."""
    real = getattr(run, target)
    calls = [0]

    def wrapped(*args, **kwargs):
        path = next(a for a in args if isinstance(a, (str, Path)))
        if Path(path).name == name:
            calls[0] += 1
            if calls[0] == nth:
                raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(run, target, wrapped)


def _kill_metrics_line(monkeypatch, nth: int) -> None:
    real = MetricsWriter.write
    calls = [0]

    def wrapped(self, record):
        calls[0] += 1
        if calls[0] == nth:
            raise Killed
        return real(self, record)

    monkeypatch.setattr(MetricsWriter, "write", wrapped)


KILLS = {
    # the writes at the end of epoch 2, in the order the loop makes them
    "before last state": lambda mp: _kill_on(mp, "save_state", "last.state.pt", 2),
    "between last state and weights": lambda mp: _kill_on(mp, "save_model", "last.safetensors", 2),
    "before the metrics line": lambda mp: _kill_metrics_line(mp, 2),
    "between best state and weights": lambda mp: _kill_on(mp, "save_model", "best.safetensors", 2),
}


@pytest.mark.parametrize("where", list(KILLS))
def test_kill_between_writes_then_resume_is_exact(
    where: str, straight: Path, tmp_path: Path, monkeypatch
) -> None:
    data = make_data()
    with monkeypatch.context() as mp:
        KILLS[where](mp)
        with pytest.raises(Killed):
            finetune(make_hybrid(), data, epochs=EPOCHS, out=tmp_path, **OPTIONS)
    finetune(make_hybrid(seed=5), data, epochs=EPOCHS, resume=True, out=tmp_path, **OPTIONS)

    a, b = read_metrics(straight), read_metrics(tmp_path)
    assert [r["epoch"] for r in b] == list(range(1, EPOCHS + 1))  # none twice, none missing
    keys = ("epoch", "train_loss", "eval_loss", "eval_top1", "best_top1", "gates")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    for name in ("last.safetensors", "best.safetensors"):
        mine, theirs = load_file(tmp_path / name), load_file(straight / name)
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), name
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_new_run_in_an_old_folder_starts_metrics_afresh(tmp_path: Path, data) -> None:
    finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
    finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]


def test_resume_of_a_finished_run_adds_no_line(tmp_path: Path, data) -> None:
    finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
    before = (tmp_path / "metrics.jsonl").read_text()
    result = finetune(make_hybrid(), data, epochs=1, resume=True, out=tmp_path, **COMMON)
    assert result.history == [] and (tmp_path / "metrics.jsonl").read_text() == before


def test_a_state_without_history_keeps_each_finished_epoch_once(tmp_path: Path) -> None:
    """States written before they held the metrics: metrics.jsonl is cut to their epochs."""
    from hybridize.train.resume import previous_records

    lines = [{"epoch": 1, "x": "a"}, {"epoch": 2, "x": "b"}, {"epoch": 2, "x": "c"}, {"epoch": 3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert previous_records(tmp_path, {"epoch": 2}, 2) == lines[:2]
    kept = [{"epoch": 1, "x": "z"}]
    assert previous_records(tmp_path, {"epoch": 1, "history": kept}, 1) == kept
