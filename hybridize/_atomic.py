"""Atomic file writes: nothing half-written is ever left at the destination."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``.

    On any error (or Ctrl-C) the temporary file is removed and ``target`` is untouched. The
    file gets the usual permissions (0666 minus the umask), not mkstemp's 0600. ``suffix`` is
    for writers that insist on an extension (``.png``, ``.onnx``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def temp_beside(dest: Path, tag: str) -> Path:
    """A fresh, closed temporary file in ``dest``'s folder (same file system as ``dest``),
    named ``.NAME.RANDOM.partial.TAG`` (some writers insist on the extension ``TAG``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".partial.{tag}", dir=dest.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())  # the finished file gets the usual permissions
    return Path(name)


def remove_quietly(*paths: Path | None) -> None:
    """Delete the files that exist; ignore the rest."""
    for p in paths:
        if p is not None:
            p.unlink(missing_ok=True)


def refuse_same_file(
    output: str | os.PathLike[str] | None, *inputs: str | os.PathLike[str] | None
) -> None:
    """Raise HybridizeError before anything is written when ``output`` is one of ``inputs``.

    Paths are compared resolved (symlinks, ``..``) and, when both exist, by inode (hard links),
    so ``export x.safetensors -o ./x.safetensors`` cannot overwrite its own input.
    """
    from hybridize.errors import HybridizeError

    if output is None:
        return
    out = Path(output)
    for given in inputs:
        if given is None:
            continue
        src = Path(given)
        try:
            same = out.resolve() == src.resolve() or (
                out.exists() and src.exists() and os.path.samefile(out, src)
            )
        except OSError:
            same = False
        if same:
            raise HybridizeError(
                f"output {out} is the input {src}; writing it would destroy the input: "
                "give another output path"
            )
