"""How a run reports while it trains: a callback protocol, and a plain-text one (no rich here:
the command line passes its own progress bar)."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO


class ProgressCallback(Protocol):
    """What :func:`hybridize.finetune` tells its caller. Called on rank 0 only."""

    def note(self, text: str) -> None:
        """A one-line remark (e.g. a stale run lock was taken over)."""

    def epoch_start(self, description: str, steps: int) -> None:
        """An epoch of ``steps`` training steps begins (``description``: "TAG 2/3")."""

    def step(self, loss: float) -> None:
        """One training step finished with this loss."""

    def epoch_end(self, record: dict[str, Any], summary: str) -> None:
        """An epoch finished and was saved; ``record`` is its metrics.jsonl line,
        ``summary`` the same in one line of text."""


class TextProgress:
    """Notes and one summary line per epoch, as plain text (stderr by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self._print(text)

    def epoch_start(self, description: str, steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch_end(self, record: dict[str, Any], summary: str) -> None:
        self._print(summary)


class NotesOnly(TextProgress):
    """``progress=False``: silent, except for notes (they say something changed on disk)."""

    def epoch_end(self, record: dict[str, Any], summary: str) -> None:
        pass


class Silent(NotesOnly):
    """Ranks other than 0 report nothing."""

    def note(self, text: str) -> None:
        pass


def resolve_progress(progress: ProgressCallback | bool, is_main: bool = True) -> ProgressCallback:
    """``True``: plain text; ``False``: notes only; a callback: itself (rank 0 only)."""
    if not is_main:
        return Silent()
    if progress is True:
        return TextProgress()
    if progress is False:
        return NotesOnly()
    return progress


def epoch_summary(tag: str, r: dict[str, Any], epochs: int) -> str:
    """One line: an epoch's training and evaluation figures."""
    rate = "" if r.get("firing_rate") is None else f" rate {r['firing_rate']:.3f}"
    gates = r.get("gates") or {}
    gate = "" if not gates else f" gate {sum(gates.values()) / len(gates):+.3f}"
    return (
        f"{tag} epoch {r['epoch']}/{epochs}: train loss {r['train_loss']:.4f} "
        f"acc {100 * r['train_acc']:.2f}% | eval loss {r['eval_loss']:.4f} "
        f"top1 {100 * r['eval_top1']:.2f}% top5 {100 * r['eval_top5']:.2f}%{rate}{gate} | "
        f"{r['images_per_s']:.1f} img/s"
    )
