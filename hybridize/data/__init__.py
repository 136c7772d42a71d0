"""Data sets and transforms: Fashion-MNIST/MNIST (IDX), CIFAR, ImageFolder; DataLoaders."""

from hybridize.data.datasets import DataInfo, TensorImages, open_dataset
from hybridize.data.idx import read_idx
from hybridize.data.loaders import (
    Loaders,
    build_loaders,
    default_workers,
    eval_loader,
    subset_indices,
)
from hybridize.data.presets import InputSpec, input_spec
from hybridize.data.transforms import build_transform

__all__ = [
    "DataInfo",
    "InputSpec",
    "Loaders",
    "TensorImages",
    "build_loaders",
    "build_transform",
    "default_workers",
    "eval_loader",
    "input_spec",
    "open_dataset",
    "read_idx",
    "subset_indices",
]
