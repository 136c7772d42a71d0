"""Opting in to code that a file names.

A checkpoint or a recipe may name code: a model entry point (``package.module:callable``) or a
dotted path (``trace.autowrap_functions``, ``trace.leaf_modules``) whose module is not imported
yet. Such code runs only while the user trusts it: ``hybridize.load(path, trust_code=True)``,
``with hybridize.trusting_code(): ...``, or the CLI's ``--trust-code``. Otherwise the load stops
with an :class:`UntrustedCodeError` naming what the file asks to run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from hybridize.errors import UntrustedCodeError

_TRUSTED: ContextVar[bool] = ContextVar("hybridize_trust_code", default=False)

HOW_TO_TRUST = (
    "if you trust where it came from, pass trust_code=True or wrap the call in "
    "hybridize.trusting_code() (CLI: --trust-code)"
)


def code_trusted() -> bool:
    """True inside :func:`trusting_code` (the caller opted in to code named by files)."""
    return _TRUSTED.get()


@contextlib.contextmanager
def trusting_code(enabled: bool = True) -> Iterator[None]:
    """Within this block, entry points and imports named by checkpoints and recipes may run.

    ``enabled=False`` changes nothing, so callers can pass a flag straight through.
    """
    token = _TRUSTED.set(_TRUSTED.get() or bool(enabled))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


@contextlib.contextmanager
def exactly(trusted: bool) -> Iterator[None]:
    """Within this block code is trusted exactly when ``trusted`` (for one explicit load)."""
    token = _TRUSTED.set(bool(trusted))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def refuse(what: str) -> UntrustedCodeError:
    """The one-line error for code the caller did not opt in to; ``what`` names it."""
    return UntrustedCodeError(f"{what}, which runs code; {HOW_TO_TRUST}")
