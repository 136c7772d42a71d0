"""Max pooling becomes average pooling in a twin, with the same output geometry."""

import torch
from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
from torch import nn

from hybridize.conversion.activations import max_to_avg_pool


def test_same_padded_max_pool_gets_a_same_padded_average_twin():
    pool = MaxPool2dSame(3, stride=2)
    twin = max_to_avg_pool(pool)
    assert isinstance(twin, AvgPool2dSame)
    x = torch.arange(81.0).reshape(1, 1, 9, 9)
    assert twin(x).shape == pool(x).shape == (1, 1, 5, 5)
    # top-left window: "same" padding adds one row and column of zeros (timm pads explicitly,
    # so they count): (0 + 1 + 9 + 10) / 9
    assert abs(twin(x)[0, 0, 0, 0].item() - 20 / 9) < 1e-6


def test_plain_max_pool_twin_keeps_the_shape():
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    twin = max_to_avg_pool(pool)
    assert isinstance(twin, nn.AvgPool2d)
    x = torch.rand(1, 2, 9, 9)
    assert twin(x).shape == pool(x).shape
