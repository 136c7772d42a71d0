"""Fine-tuning and evaluation (single process or DDP under torchrun)."""

from hybridize.train.config import PRESETS, FinetuneConfig, resolve_config
from hybridize.train.errors import (
    ResumeMismatchError,
    RunInUseError,
    TrainError,
    TrainInterrupted,
)
from hybridize.train.evaluate import evaluate
from hybridize.train.loop import FinetuneResult, finetune
from hybridize.train.optim import param_groups, spiking_parameter_ids
from hybridize.train.progress import ProgressCallback, TextProgress
from hybridize.train.report import read_metrics

__all__ = [
    "PRESETS",
    "FinetuneConfig",
    "FinetuneResult",
    "ProgressCallback",
    "ResumeMismatchError",
    "RunInUseError",
    "TrainError",
    "TextProgress",
    "TrainInterrupted",
    "evaluate",
    "finetune",
    "param_groups",
    "read_metrics",
    "resolve_config",
    "spiking_parameter_ids",
]
