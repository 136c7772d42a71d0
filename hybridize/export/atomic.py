"""Temporary files beside a destination, so that a finished file appears by ``os.replace``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temp_beside(dest: Path, tag: str) -> Path:
    """A fresh, closed temporary file in ``dest``'s folder (same file system as ``dest``),
    named ``.NAME.RANDOM.partial.TAG`` (some writers insist on the extension ``TAG``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".partial.{tag}", dir=dest.parent)
    os.close(fd)
    return Path(name)


def remove_quietly(*paths: Path | None) -> None:
    """Delete the files that exist; ignore the rest."""
    for p in paths:
        if p is not None:
            p.unlink(missing_ok=True)
