"""Per-epoch reporting: metrics.jsonl, optional TensorBoard, and small JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hybridize._atomic import atomic_path
from hybridize._util import read_json_lines


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class MetricsWriter:
    """Writes one JSON object per epoch to ``metrics.jsonl`` (the whole file, atomically, each
    epoch: a kill or a full disk never leaves a cut line); mirrors scalars to TensorBoard when
    the ``tensorboard`` package is installed. Inactive when ``out`` is None."""

    def __init__(self, out: Path | None, active: bool = True) -> None:
        self.path = out / "metrics.jsonl" if (out is not None and active) else None
        self._records: list[dict[str, Any]] = []
        self._tb = None
        if out is not None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(out / "tensorboard"))
            except ImportError:  # optional extra not installed
                self._tb = None

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the file with exactly ``records`` (atomic): a new run starts it empty, a
        resume rewrites the epochs its training state records (no duplicate, none missing)."""
        if self.path is None:
            return
        text = "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in records)
        with atomic_path(self.path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self._records = list(records)  # what the file holds

    def write(self, record: dict[str, Any]) -> None:
        """Add one epoch's record."""
        if self.path is None:
            return
        self.rewrite([*self._records, record])
        if self._tb is not None:
            step = int(record.get("epoch", 0))
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
                elif isinstance(value, dict):
                    for sub, v in value.items():
                        if isinstance(v, (int, float)):
                            self._tb.add_scalar(f"{key}/{sub}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """The records of ``out/metrics.jsonl`` (empty when absent)."""
    path = Path(out) / "metrics.jsonl"
    return read_json_lines(path) if path.is_file() else []


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically (a reader sees the old file or the new)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
