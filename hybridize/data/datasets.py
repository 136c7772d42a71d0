"""Data sets by name: fashion-mnist and mnist (IDX), cifar10/100 (torchvision), imagefolder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from hybridize._util import first_line, network_timeout
from hybridize.data.idx import read_idx
from hybridize.errors import DataError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
DATA_CACHE = Path.home() / ".cache" / "hybridize" / "data"  # downloads without --data-root
NAMES = ("fashion-mnist", "mnist", "cifar10", "cifar100", "imagefolder:PATH")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "eval": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# torchvision's folder name under ROOT for each IDX data set
_TV_FOLDER = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}


@dataclass
class DataInfo:
    """What the loop needs to know about a data set."""

    name: str
    num_classes: int
    channels: int
    native_size: int
    source: str


class TensorImages(Dataset):
    """Images held as a uint8 tensor [N, C, H, W] with integer labels."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None
    ) -> None:
        self.images, self.labels, self.transform = images, labels.long(), transform
        self.targets = self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


def _online() -> bool:
    return not (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HYBRIDIZE_OFFLINE"))


def _download(name: str, target: Path, fetch: Callable[[], object]) -> None:
    """Run ``fetch`` (a download into ``target``) with the network timeout; if it fails or is
    interrupted, remove the folders and files it created and raise a one-line
    :class:`DataError` (an interrupt is re-raised after the clean-up)."""
    created = None  # the outermost folder the download would create
    probe = target
    while not probe.exists():
        created, probe = probe, probe.parent
    before = set(target.iterdir()) if created is None and target.is_dir() else set()
    try:
        with network_timeout():
            fetch()
    except BaseException as exc:  # network failures have many types; Ctrl-C cleans up too
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        elif target.is_dir():
            for entry in set(target.iterdir()) - before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        if not isinstance(exc, Exception):
            raise
        raise DataError(
            f"downloading {name} into {target} failed ({type(exc).__name__}: "
            f"{first_line(exc)}); pass --data-root DIR holding the data set"
        ) from None


def _find_idx_dir(name: str, root: Path | None) -> Path | None:
    """First folder holding the four IDX files (``.gz`` or plain)."""
    candidates: list[Path] = []
    where = root if root is not None else DATA_CACHE  # the cache: earlier downloads
    candidates += [where, where / _TV_FOLDER[name] / "raw", where / name]
    if name == "fashion-mnist" and root is None:  # a --data-root given is the only place
        candidates.append(DEBIAN_FASHION)
    for folder in candidates:
        if all(_idx_path(folder, f) is not None for pair in _IDX_FILES.values() for f in pair):
            return folder
    return None


def _idx_path(folder: Path, stem: str) -> Path | None:
    for suffix in (".gz", ""):
        p = folder / (stem + suffix)
        if p.is_file():
            return p
    return None


def _load_idx_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    img_stem, lbl_stem = _IDX_FILES[split]
    img_path, lbl_path = _idx_path(folder, img_stem), _idx_path(folder, lbl_stem)
    assert img_path is not None and lbl_path is not None  # the folder was found with both
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"IDX files in {folder} have shapes {tuple(images.shape)} and {tuple(labels.shape)}; "
            "expected [N, H, W] images and [N] labels"
        )
    return images.unsqueeze(1), labels


def _idx_dataset(
    name: str, root: Path | None, download: bool
) -> tuple[dict[str, Dataset], DataInfo]:
    folder = _find_idx_dir(name, root)
    if folder is None and download and _online():
        import torchvision

        target = root or DATA_CACHE
        cls = (
            torchvision.datasets.FashionMNIST
            if name == "fashion-mnist"
            else torchvision.datasets.MNIST
        )

        def fetch() -> None:
            cls(str(target), train=True, download=True)
            cls(str(target), train=False, download=True)

        _download(name, target, fetch)
        folder = _find_idx_dir(name, target)
    if folder is None:
        looked = [str(root or DATA_CACHE)]
        if name == "fashion-mnist" and root is None:
            looked.append(str(DEBIAN_FASHION))
        hint = (
            "install it (apt-get install dataset-fashion-mnist) or pass --data-root DIR"
            if name == "fashion-mnist" and root is None
            else f"put the IDX files in {root} or drop --data-root"
            if root is not None
            else "pass --data-root DIR holding MNIST/raw/*-ubyte(.gz), or go online to download"
        )
        raise DataError(f"{name} not found (looked in {', '.join(looked)}): {hint}")
    splits = {s: TensorImages(*_load_idx_split(folder, s)) for s in _IDX_FILES}
    info = DataInfo(name, 10, 1, int(splits["train"].images.shape[-1]), str(folder))
    return dict[str, Dataset](splits), info


def _cifar_dataset(name: str, root: Path | None, download: bool) -> tuple[dict, DataInfo]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    where = root or DATA_CACHE
    folder = where / cls.base_folder
    if not folder.is_dir():
        if not (download and _online()):
            raise DataError(
                f"{name} not found under {where} (torchvision layout: {folder}); pass "
                "--data-root DIR holding it, or go online to download it"
            )
        _download(name, where, lambda: cls(str(where), train=True, download=True))
    try:
        splits = {
            "train": cls(str(where), train=True, download=False),
            "eval": cls(str(where), train=False, download=False),
        }
    except Exception as exc:
        raise DataError(
            f"{name} under {folder} is incomplete or corrupted ({first_line(exc)}); "
            "delete the folder and download it again"
        ) from None
    return splits, DataInfo(name, 10 if name == "cifar10" else 100, 3, 32, str(where))


def load_image(path: str) -> object:
    """An RGB PIL image; an unreadable or corrupt file is a :class:`DataError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise DataError(
            f"cannot read image {path} ({type(exc).__name__}: {first_line(exc)}); "
            "remove or replace the file"
        ) from None


def _imagefolder_dataset(path: str) -> tuple[dict, DataInfo]:
    from torchvision.datasets import ImageFolder

    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(
            f"imagefolder {root} does not exist; give a folder with train/CLASS/*.jpg and "
            "val/CLASS/*.jpg"
        )
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DataError(
            f"imagefolder {root} lacks {', '.join(s + '/' for s in missing)}: "
            "give a folder with train/CLASS/*.jpg and val/CLASS/*.jpg"
        )
    splits = {}
    for split, sub in (("train", "train"), ("eval", "val")):
        try:
            splits[split] = ImageFolder(str(root / sub), loader=load_image)
        except (FileNotFoundError, RuntimeError) as exc:  # no class folders / no image files
            raise DataError(
                f"imagefolder {root / sub} holds no images ({first_line(exc)}); "
                f"put images in {root / sub}/CLASS/*.jpg"
            ) from None
    if splits["train"].classes != splits["eval"].classes:
        raise DataError(
            f"imagefolder {root}: train/ and val/ have different class folders; make them match"
        )
    return splits, DataInfo(f"imagefolder:{root}", len(splits["train"].classes), 3, 256, str(root))


def open_dataset(
    name: str, root: str | Path | None = None, download: bool = True
) -> tuple[dict[str, Dataset], DataInfo]:
    """Raw (untransformed) train and eval splits of data set ``name``, and its facts.

    ``root`` is ``--data-root``; downloads happen only when allowed and online.
    """
    root = Path(root).expanduser() if root is not None else None
    key = name.lower()
    if key.startswith("imagefolder:"):
        return _imagefolder_dataset(name.split(":", 1)[1])
    if key in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _idx_dataset("fashion-mnist", root, download)
    if key == "mnist":
        return _idx_dataset("mnist", root, download)
    if key in ("cifar10", "cifar100"):
        return _cifar_dataset(key, root, download)
    raise DataError(f"unknown data set {name!r}: choose one of {', '.join(NAMES)}")
