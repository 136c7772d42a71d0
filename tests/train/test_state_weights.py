"""Plain checkpoints (train/state.py): written, read back, and refused in one line when damaged
or made for another model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from hybridize.errors import CheckpointError, OutputError
from hybridize.train.state import load_weights, save_model


def _net(width: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, 2))


def test_round_trip(tmp_path) -> None:
    path = save_model(_net(), tmp_path / "m.safetensors")
    other = _net()
    for p in other.parameters():
        nn.init.zeros_(p)
    load_weights(other, path)
    for a, b in zip(_net().state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_another_models_weights_are_one_line(tmp_path) -> None:
    path = save_model(_net(4), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_weights(_net(5), path)
    msg = str(info.value)
    assert "\n" not in msg and "does not fit" in msg and "0.weight is (4, 3) in the file" in msg


def test_a_damaged_file_is_one_line(tmp_path) -> None:
    path = save_model(_net(), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:40])  # cut inside the header
    with pytest.raises(CheckpointError) as info:
        load_weights(_net(), path)
    assert "\n" not in str(info.value) and "cannot read checkpoint" in str(info.value)


def test_metrics_lines_survive_a_failed_write(tmp_path: Path, monkeypatch) -> None:
    """A disk that fills up while epoch 2's line is written leaves epoch 1's file whole (the
    file is replaced atomically, never appended in place) and no temporary file behind."""
    import errno

    from hybridize.train.report import MetricsWriter, read_metrics

    writer = MetricsWriter(tmp_path)
    writer.write({"epoch": 1, "train_loss": 0.5})
    real = Path.write_text

    def full_disk(self: Path, text: str, *args, **kwargs) -> int:
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OutputError, match="no space left"):  # one line, as atomic_path words it
        writer.write({"epoch": 2, "train_loss": 0.25})
    monkeypatch.undo()
    assert read_metrics(tmp_path) == [{"epoch": 1, "train_loss": 0.5}]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["metrics.jsonl"]
    writer.write({"epoch": 2, "train_loss": 0.25})
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
