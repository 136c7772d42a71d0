"""Exit codes of the CLI and the one line each failure is reported with.

0 ok, 1 internal error (a bug), 2 user error (option, input or environment), 130 interrupted.
"""

from __future__ import annotations

import errno
import re

import typer

from hybridize.errors import HybridizeError, is_out_of_memory

OK, INTERNAL, USER, INTERRUPTED = 0, 1, 2, 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 internal error (a bug: rerun with --debug and report it); "
    "2 user error (an option, input file, data folder or the environment; one line says "
    "what and how to fix it); 130 interrupted (Ctrl-C)."
)

_MAX_LINE = 400  # a longer message keeps its head and its tail (the fix)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# OSErrors that are the environment's or the user's (a path), not a bug
_USER_ERRNOS = {
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.EROFS: "read-only file system; choose a writable folder",
    errno.EISDIR: "is a folder; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EEXIST: "already exists and is in the way; choose another path",
    errno.ENOENT: "no such file or folder; check the path",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
    errno.EMFILE: "too many open files; lower --workers or raise the open-file limit",
    errno.EPIPE: "the reader of the output went away (a closed pipe); nothing more to print",
    errno.EIO: "input/output error on the device; check the disk or the network mount",
    errno.EFBIG: "file too large for this file system; write elsewhere",
    errno.ELOOP: "too many symbolic links in the path; check the path",
    errno.EBUSY: "the file or folder is busy; close what holds it, or choose another path",
    errno.ENOTEMPTY: "the folder is not empty and is in the way; choose another path",
    errno.ESTALE: "stale network file handle; remount, or write to a local folder",
}


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """typer's own (vendored) click exceptions, and real click's when installed."""
    types: list[type[BaseException]] = []
    vendored = getattr(typer, "TyperException", None)
    if isinstance(vendored, type):
        types.append(vendored)
    try:
        import click
    except ImportError:
        pass
    else:
        types.append(click.ClickException)
    return tuple(types)


USAGE_ERRORS = _usage_error_types()


def one_line(text: str) -> str:
    """``text`` as one bounded line: a worker's re-raised error keeps its original message,
    colour codes and newlines go, and an overlong middle is cut."""
    text = _ANSI.sub("", str(text))
    if "Original Traceback" in text:  # a DataLoader worker's error, re-raised by torch
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split())
    if len(text) > _MAX_LINE:
        text = f"{text[:250]} ... {text[-(_MAX_LINE - 255) :]}"
    return text


def was_interrupted(exc: BaseException) -> bool:
    """True for Ctrl-C, also when the library re-raised it as another exception: one chained
    to the KeyboardInterrupt (even ``from None``), or one named for it (``...Interrupted``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        if not isinstance(current, OSError) and any(  # InterruptedError is EINTR, not Ctrl-C
            "Interrupt" in cls.__name__ for cls in type(current).__mro__
        ):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def os_error_line(exc: OSError) -> str | None:
    """One line for an OSError caused by the environment or a path, else None."""
    hint = _USER_ERRNOS.get(exc.errno or -1)
    if hint is None:
        return None
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    where = f"{path}: " if path is not None else ""
    return f"{where}{hint} ({exc.strerror or exc})"


def usage_error_line(exc: BaseException) -> str:
    """typer/click's usage error as one line, with where to find the help."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "hybridize"
    return f"{one_line(message)} (see {path} --help)"


def classify(exc: BaseException) -> tuple[int, str]:
    """Exit code and line for an exception that ended a command."""
    if was_interrupted(exc):
        if isinstance(exc, HybridizeError):  # e.g. saving the interrupted run failed
            return INTERRUPTED, f"interrupted: {one_line(str(exc))}"
        # a plain Ctrl-C has no message; the library's TrainInterrupted says how to resume
        message = one_line(str(exc))
        return INTERRUPTED, f"interrupted: {message}" if message else "interrupted"
    if isinstance(exc, HybridizeError):
        return USER, f"error: {one_line(str(exc))}"
    if isinstance(exc, USAGE_ERRORS):
        return USER, f"error: {usage_error_line(exc)}"
    if isinstance(exc, OSError):
        line = os_error_line(exc)
        if line is not None:
            return USER, f"error: {one_line(line)}"
    if is_out_of_memory(exc):
        return USER, (
            "error: out of memory "
            f"({one_line(str(exc)) or type(exc).__name__}); lower --batch-size or --img-size, "
            "or use a machine with more memory"
        )
    name = type(exc).__name__
    return INTERNAL, (
        f"internal error: {name}: {one_line(str(exc))} (rerun with --debug for the traceback)"
    )
