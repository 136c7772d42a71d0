"""User-facing errors.

A :class:`HybridizeError` is a mistake the user can fix (bad input, a missing file, an option
out of range). Its message is one line that says what went wrong, where, and how to fix it. The
CLI prints it without a traceback (unless ``--debug``) and exits non-zero. Programming errors
stay ordinary exceptions.
"""

from __future__ import annotations


class HybridizeError(Exception):
    """An error caused by user input; the message is one actionable line."""


class RecipeError(HybridizeError, ValueError):
    """A recipe that does not validate, or that selects nothing."""


class SpikingConfigError(HybridizeError, ValueError):
    """An invalid option of a spiking module (encoder, neuron, decoder, fusion block)."""


class ModelError(HybridizeError, ValueError):
    """A model name or constructor argument that cannot be built."""


class ConversionError(HybridizeError):
    """A model that cannot be traced or rewritten as asked."""


class CheckpointError(HybridizeError):
    """A checkpoint file that is missing, corrupted or not a hybridize checkpoint."""


class UntrustedCodeError(HybridizeError):
    """A file names code to run (an entry point, an import) that the user did not opt in to."""


class WeightsError(HybridizeError):
    """Pretrained weights that cannot be found or loaded."""


class DataError(HybridizeError):
    """A data set that cannot be found or read."""


class TrainError(HybridizeError, ValueError):
    """A fine-tuning run that cannot start or continue as asked."""


class ExportError(HybridizeError):
    """An export that failed or whose parity check did not pass."""


class OutputError(HybridizeError):
    """A file that cannot be written: a full disk, a read-only or forbidden folder."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def is_out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, or an allocator of torch failing: CUDA ("CUDA out of memory",
    torch.OutOfMemoryError) or the CPU ("DefaultCPUAllocator: can't allocate memory" / "not
    enough memory")."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("out of memory", "can't allocate memory", "not enough memory")
    )
