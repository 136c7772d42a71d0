"""Training errors (one line: what, where, how to fix)."""

from __future__ import annotations

from hybridize.errors import HybridizeError


class TrainError(HybridizeError, ValueError):
    """A fine-tuning run that cannot start or continue as asked."""
