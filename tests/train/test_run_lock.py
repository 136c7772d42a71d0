"""Issue 14, item 10: one run per output folder; a dead run's lock never blocks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridize.errors import HybridizeError
from hybridize.train import RunInUseError, TextProgress, TrainError, finetune, read_metrics
from hybridize.train.lock import LOCK_NAME

from .conftest import COMMON, make_hybrid

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_on_the_same_folder_is_refused(tmp_path: Path, data) -> None:
    """While run A trains, run B on the same --out stops at once; A is untouched."""
    model, seen = make_hybrid(), []

    def second_run(module, args) -> None:
        if module.training and not seen:
            with pytest.raises(RunInUseError) as exc:
                finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
            seen.append(exc.value)

    model.register_forward_pre_hook(second_run)
    finetune(model, data, epochs=2, out=tmp_path, **COMMON)
    (error,) = seen
    assert isinstance(error, HybridizeError) and "\n" not in str(error)
    assert f"pid {os.getpid()}" in str(error) and str(tmp_path) in str(error)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]  # nothing interleaved
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_killed_run_does_not_block_the_next(tmp_path: Path, data) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / LOCK_NAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"pid {holder.pid}"):
            finetune(make_hybrid(), data, epochs=1, out=tmp_path, **COMMON)
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind with the dead pid
        holder.wait()
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)
    buffer = io.StringIO()
    options = {**COMMON, "progress": TextProgress(buffer)}
    finetune(make_hybrid(), data, epochs=1, out=tmp_path, **options)
    assert f"took over the lock in {tmp_path} of an earlier run (pid {holder.pid})" in (
        buffer.getvalue()
    )
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert not (tmp_path / LOCK_NAME).exists()


def test_out_naming_a_file_is_a_one_line_error(tmp_path: Path, data) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    with pytest.raises(TrainError, match="is a file, not a folder"):
        finetune(make_hybrid(), data, epochs=1, out=target, **COMMON)
    assert target.read_text() == "keep me"


def test_a_run_that_stops_before_writing_leaves_no_folder(tmp_path: Path, data) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainError, match="fp16 needs a CUDA device"):  # after the lock
        finetune(make_hybrid(), data, epochs=1, amp="fp16", out=out, **COMMON)
    assert not out.exists()
    with pytest.raises(TrainError, match="not found"):
        finetune(make_hybrid(), data, epochs=1, resume=True, out=out, **COMMON)
    assert not out.exists()


def test_a_file_system_without_locks_is_a_one_line_error(tmp_path: Path, data, monkeypatch) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(TrainError, match="cannot lock the run folder .* local folder") as exc:
        finetune(make_hybrid(), data, epochs=1, out=tmp_path / "run", **COMMON)
    assert "\n" not in str(exc.value)
