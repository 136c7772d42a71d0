"""The training progress of ``finetune`` and ``demo``: a rich bar per epoch and a summary line
(implements :class:`hybridize.train.ProgressCallback`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """Use as a context manager around ``hybridize.finetune(..., progress=this)``."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def note(self, text: str) -> None:
        self.bar.console.print(text, highlight=False, soft_wrap=True)

    def epoch_start(self, description: str, steps: int) -> None:
        self.task = self.bar.add_task(description, total=steps, info="")

    def step(self, loss: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=1, info=f"loss {loss:.3f}")

    def epoch_end(self, record: dict[str, Any], summary: str) -> None:
        self.bar.console.print(summary, highlight=False)
