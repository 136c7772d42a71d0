"""Training errors (one line: what, where, how to fix).

``TrainError`` is defined in hybridize.errors; the subclasses here are the run-folder and resume
mistakes a caller may want to tell apart. ``TrainInterrupted`` is a ``KeyboardInterrupt`` (so the
CLI exits 130) whose message says what was kept and how to continue.
"""

from hybridize.errors import TrainError


class RunInUseError(TrainError):
    """Another live run holds the lock of the output folder."""


class ResumeMismatchError(TrainError):
    """``--resume`` asked for another model, data set or options than the run in ``--out``."""


class TrainInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; the end-of-epoch checkpoint was left as it was."""


__all__ = ["ResumeMismatchError", "RunInUseError", "TrainError", "TrainInterrupted"]
