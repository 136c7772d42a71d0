"""hybridize._atomic.atomic_folder: a folder appears complete or not at all."""

from __future__ import annotations

import os

import pytest

from hybridize._atomic import atomic_folder
from hybridize.errors import OutputError


def test_new_folder_appears_complete_and_no_temporary_is_left(tmp_path) -> None:
    dest = tmp_path / "out"
    with atomic_folder(dest) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not dest.exists()  # nothing at the destination while writing
    assert (dest / "a.txt").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    mask = os.umask(0)
    os.umask(mask)
    assert (dest / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_existing_folder_is_replaced_whole(tmp_path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with atomic_folder(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_error_leaves_the_earlier_folder_untouched(tmp_path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(dest) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in dest.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_refused_move_of_the_earlier_folder_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    from hybridize import _atomic

    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("earlier")
    real = os.replace

    def refuse_first(src, dst):
        if str(src) == str(target):
            raise PermissionError(13, "Permission denied", str(src))
        return real(src, dst)

    monkeypatch.setattr(_atomic.os, "replace", refuse_first)
    with pytest.raises(OutputError, match="permission denied"), atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]
