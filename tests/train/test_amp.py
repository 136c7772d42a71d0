"""Mixed precision options on the CPU."""

from __future__ import annotations

import pytest

from hybridize.train import TrainError, finetune

from .conftest import COMMON, make_data, make_hybrid


def test_bf16_autocast_trains_a_hybrid() -> None:
    r = finetune(make_hybrid(), make_data(), epochs=2, amp="bf16", **COMMON)
    first, last = r.history[0], r.history[-1]
    assert last["train_loss"] < first["train_loss"]  # it learns under bf16
    assert all(v != 0 for v in last["gates"].values())


def test_fp16_needs_cuda() -> None:
    with pytest.raises(TrainError, match="bf16"):
        finetune(make_hybrid(), make_data(), epochs=1, amp="fp16", **COMMON)
