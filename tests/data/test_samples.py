"""Real sample images: shape, range, channel handling."""

from __future__ import annotations

import pytest

from hybridize.data.samples import sample_dir, sample_images

pytestmark = pytest.mark.skipif(sample_dir() is None, reason="foolbox sample images not installed")


def test_rgb_and_gray_samples():
    images, source = sample_images(3, (20, 24), limit=5)
    assert images.shape == (5, 3, 20, 24) and "imagenet" in source
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05
    gray, source = sample_images(1, (28, 28), limit=3)
    assert gray.shape == (3, 1, 28, 28) and "fashionMNIST" in source
    four, _ = sample_images(4, (8, 8), limit=2)
    assert four.shape == (2, 4, 8, 8)
