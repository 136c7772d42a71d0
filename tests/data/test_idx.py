"""IDX reader against hand-written files, and the installed Debian Fashion-MNIST."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import torch

from hybridize.data import read_idx
from hybridize.errors import DataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, type_byte: int, shape: tuple[int, ...], payload: bytes) -> Path:
    header = bytes([0, 0, type_byte, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + payload)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_uint8_images_read_back(tmp_path: Path, suffix: str) -> None:
    values = list(range(2 * 3 * 4))  # 24 bytes, row-major
    p = write_idx(tmp_path / f"img{suffix}", 0x08, (2, 3, 4), bytes(values))
    t = read_idx(p)
    assert t.shape == (2, 3, 4) and t.dtype == torch.uint8
    assert t[1, 2, 3].item() == 23 and t[0, 1, 0].item() == 4


def test_big_endian_int32(tmp_path: Path) -> None:
    vals = [1, -2, 70000]
    p = write_idx(tmp_path / "x", 0x0C, (3,), b"".join(struct.pack(">i", v) for v in vals))
    assert read_idx(p).tolist() == vals


def test_bad_magic_and_truncation_are_data_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    short = write_idx(tmp_path / "short", 0x08, (5,), bytes(3))
    with pytest.raises(DataError, match="expected 5"):
        read_idx(short)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_files() -> None:
    test_x = read_idx(DEBIAN / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(DEBIAN / "t10k-labels-idx1-ubyte.gz")
    train_y = read_idx(DEBIAN / "train-labels-idx1-ubyte.gz")
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == torch.uint8
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    # Fashion-MNIST is balanced: 6000 / 1000 of each of the 10 classes
    assert torch.bincount(train_y.long()).tolist() == [6000] * 10
    assert torch.bincount(test_y.long()).tolist() == [1000] * 10
