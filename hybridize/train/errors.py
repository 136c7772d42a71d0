"""Training errors (one line: what, where, how to fix); defined in hybridize.errors."""

from hybridize.errors import TrainError

__all__ = ["TrainError"]
