"""Data set lookup, subsets and transforms."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from hybridize.data import build_loaders, build_transform, input_spec, open_dataset, subset_indices
from hybridize.data.datasets import TensorImages
from hybridize.errors import DataError


def _write(path: Path, type_byte: int, arr: torch.Tensor) -> None:
    header = bytes([0, 0, type_byte, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.to(torch.uint8).numpy().tobytes())


def make_fake_mnist(root: Path, n_train: int = 40, n_test: int = 20, size: int = 6) -> Path:
    """IDX files in torchvision's layout ROOT/FashionMNIST/raw; image i is filled with i."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = torch.arange(n).view(n, 1, 1).expand(n, size, size)
        _write(raw / f"{prefix}-images-idx3-ubyte.gz", 0x08, imgs)
        _write(raw / f"{prefix}-labels-idx1-ubyte.gz", 0x08, torch.arange(n) % 10)
    return root


def test_fashion_mnist_from_data_root(tmp_path: Path) -> None:
    splits, info = open_dataset("fashion-mnist", make_fake_mnist(tmp_path))
    assert info.num_classes == 10 and info.channels == 1 and info.native_size == 6
    assert len(splits["train"]) == 40 and len(splits["eval"]) == 20
    x, y = splits["train"][13]
    assert x.shape == (1, 6, 6) and int(x[0, 0, 0]) == 13 and y == 3


def test_missing_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path)) as exc:
        open_dataset("mnist", tmp_path, download=False)
    assert "\n" not in str(exc.value) and "--data-root" in str(exc.value)
    with pytest.raises(DataError, match="val/"):
        (tmp_path / "train").mkdir()
        open_dataset(f"imagefolder:{tmp_path}")
    with pytest.raises(DataError, match="unknown data set"):
        open_dataset("imagenet-99")


def test_a_download_without_data_root_is_found_again_offline(tmp_path, monkeypatch) -> None:
    from hybridize.data import datasets

    monkeypatch.setattr(datasets, "DATA_CACHE", make_fake_mnist(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "DEBIAN_FASHION", tmp_path / "no-debian-package")
    splits, info = open_dataset("fashion-mnist", None, download=False)
    assert len(splits["train"]) == 40 and info.source == str(
        tmp_path / "cache" / "FashionMNIST" / "raw"
    )


def test_an_interrupted_download_leaves_nothing_and_has_a_timeout(tmp_path) -> None:
    import socket

    from hybridize._util import download_timeout
    from hybridize.data.datasets import _download

    target = tmp_path / "data"
    seen: list[float | None] = []

    def fetch() -> None:  # a download that writes half a file, then is interrupted
        seen.append(socket.getdefaulttimeout())
        (target / "FashionMNIST" / "raw").mkdir(parents=True)
        (target / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f")
        raise KeyboardInterrupt

    before = socket.getdefaulttimeout()
    with pytest.raises(KeyboardInterrupt):
        _download("fashion-mnist", target, fetch)
    assert seen == [download_timeout()] and socket.getdefaulttimeout() == before
    assert list(tmp_path.iterdir()) == []


def test_subset_is_seeded_and_class_balanced() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    ds = TensorImages(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels)
    a, b, c = subset_indices(ds, 30, 1), subset_indices(ds, 30, 1), subset_indices(ds, 30, 2)
    assert a == b and a != c and len(set(a)) == 30
    assert Counter(labels[a].tolist()) == {0: 10, 1: 10, 2: 10}
    assert subset_indices(ds, None, 0) is None and subset_indices(ds, 500, 0) is None


def test_eval_transform_normalises_and_expands_gray() -> None:
    spec = input_spec(None, img_size=8)
    spec = type(spec)(img_size=8, in_chans=3, mean=(0.5, 0.25, 0.0), std=(0.5, 0.5, 2.0))
    img = torch.full((1, 4, 4), 51, dtype=torch.uint8)  # 51/255 = 0.2
    out = build_transform(spec, train=False)(img)
    assert out.shape == (3, 8, 8)
    expected = torch.tensor([(0.2 - 0.5) / 0.5, (0.2 - 0.25) / 0.5, 0.2 / 2.0])
    torch.testing.assert_close(out[:, 3, 3], expected, atol=1e-5, rtol=0)


def test_paper_preset_keeps_unit_range_and_flips_only() -> None:
    spec = input_spec(nn.Conv2d(1, 2, 3), img_size=4, paper=True)
    assert spec.mean is None and spec.in_chans == 1
    img = torch.arange(16, dtype=torch.uint8).view(1, 4, 4) * 16
    tf = build_transform(spec, train=True, paper=True)
    key = lambda t: tuple(round(v, 5) for v in t.flatten().tolist())  # noqa: E731
    outs = {key(tf(img)) for _ in range(30)}
    plain = img.double() / 255
    allowed = {key(plain), key(plain.flip(-1))}
    assert outs == allowed  # both orientations seen, nothing else (no crop, no scaling)


def test_timm_config_drives_the_spec() -> None:
    import timm

    model = timm.create_model("tf_efficientnet_lite0", num_classes=3)
    spec = input_spec(model, img_size=32)
    cfg = model.pretrained_cfg  # (0.5, 0.5, 0.5) and bicubic, unlike the ImageNet defaults
    assert spec.img_size == 32 and spec.in_chans == 3
    assert spec.interpolation == cfg["interpolation"] == "bicubic"
    assert spec.mean == pytest.approx(cfg["mean"]) and spec.std == pytest.approx(cfg["std"])
    assert input_spec(model).img_size == cfg["input_size"][-1]


def test_loaders_shard_eval_without_padding(tmp_path: Path) -> None:
    root = make_fake_mnist(tmp_path, n_train=40, n_test=21)
    seen = []
    for rank in (0, 1):
        ld = build_loaders(
            "fashion-mnist", data_root=root, batch_size=4, img_size=6, workers=0,
            world_size=2, rank=rank, augment=False, paper=True,
        )  # fmt: skip
        seen += [int(v) for x, _ in ld.eval for v in x[:, 0, 0, 0] * 255 + 0.5]
        assert ld.train.batch_size == 4
    assert sorted(seen) == list(range(21))


def test_converted_model_keeps_its_timm_config() -> None:
    import hybridize

    model = hybridize.create_model("timm:test_efficientnet", num_classes=10)
    before = input_spec(model)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=torch.zeros(1, 3, 16, 16))
    assert input_spec(hybrid) == before
    assert before.img_size == model.pretrained_cfg["input_size"][-1]


def test_images_whose_channels_the_model_cannot_take(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / split / "a" / "x.png")
    two_channel = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(DataError, match="3-channel images and the model takes 2") as exc:
        build_loaders(f"imagefolder:{tmp_path}", two_channel, batch_size=1, img_size=8)
    assert "\n" not in str(exc.value)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3))  # RGB into one channel: averaged, accepted
    loaders = build_loaders(f"imagefolder:{tmp_path}", gray, batch_size=1, img_size=8, workers=0)
    assert next(iter(loaders.train))[0].shape == (1, 1, 8, 8)


def test_a_corrupt_gzip_body_is_a_data_error(tmp_path: Path) -> None:
    import gzip as gz

    from hybridize.data.idx import read_idx

    good = gz.compress(bytes([0, 0, 8, 1]) + (4).to_bytes(4, "big") + bytes(4))
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(good[:12] + bytes(b ^ 0xFF for b in good[12:-8]) + good[-8:])
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(path)


def test_a_data_root_given_is_the_only_place_looked_at(tmp_path, monkeypatch) -> None:
    """An empty --data-root must not fall back to the system copy: a typo in the path would
    silently train on other data."""
    monkeypatch.setenv("HYBRIDIZE_OFFLINE", "1")
    with pytest.raises(DataError, match=f"fashion-mnist not found \\(looked in {tmp_path}\\):"):
        open_dataset("fashion-mnist", str(tmp_path))


def test_an_imagefolder_that_does_not_exist_says_so(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(f"imagefolder:{tmp_path / 'nope'}", None)
