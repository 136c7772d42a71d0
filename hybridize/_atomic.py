"""Atomic file writes: nothing half-written is ever left at the destination."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        _raise_if_environment(exc, target)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        _fsync(tmp_path)  # the data reaches the disk before the rename makes it the target
        os.replace(tmp_path, target)
    except BaseException as exc:
        full = _nearly_full(target.parent)  # before the temporary file gives its space back
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, Exception):
            _raise_if_environment(exc, target, full)
        raise


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; on success it takes ``target``'s place
    (an earlier folder there is moved aside, then deleted). On any error the temporary folder
    is removed and ``target`` is untouched. Files get 0666 and the folder 0777, minus the umask.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
    except OSError as exc:
        _raise_if_environment(exc, target)
        raise
    try:
        yield tmp
        for p in tmp.iterdir():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~_umask())
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_folder(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception):
            _raise_if_environment(exc, target)
        raise


def _replace_folder(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` onto ``target``; an existing ``target`` is put back if the rename fails."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    try:
        os.replace(target, old / "previous")
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old / "previous", target)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# writers report a full disk in their own words: safetensors "(os error 28)", torch.save a
# failed zip write; so an errno, a message, or a (nearly) full file system tells it
_ENVIRONMENT = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.EROFS: "read-only file system; choose a writable folder",
}
_OS_ERROR = re.compile(r"os error (\d+)|No space left on device")


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _raise_if_environment(exc: BaseException, target: Path, full: bool = False) -> None:
    """Raise a one-line :class:`OutputError` when writing ``target`` failed for a reason of
    the environment (full disk, read-only or forbidden folder); else return."""
    from hybridize.errors import HybridizeError, OutputError

    if isinstance(exc, HybridizeError):
        return
    code = exc.errno if isinstance(exc, OSError) else None
    match = _OS_ERROR.search(str(exc))
    if code is None and match:
        code = int(match.group(1)) if match.group(1) else errno.ENOSPC
    if code not in _ENVIRONMENT and full:
        code = errno.ENOSPC
    if code in _ENVIRONMENT:
        raise OutputError(f"cannot write {target}: {_ENVIRONMENT[code]}", code) from exc


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
