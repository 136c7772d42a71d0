"""The shared helpers of hybridize._util, against hand-worked cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridize._util import (
    example_shape,
    first_line,
    fresh_attr,
    in_chans,
    is_within,
    param_count,
    record_outputs,
)


def test_first_line_keeps_the_first_nonblank_line_and_cuts_long_ones() -> None:
    assert first_line(RuntimeError("\n  bad shape  \nat frame 1\nat frame 2")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 50), limit=10) == "xxxxxxx..."
    assert first_line(ValueError("short"), limit=10) == "short"


def test_param_count_counts_shared_parameters_once() -> None:
    lin = nn.Linear(3, 4)  # 3*4 weights + 4 biases
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.Conv2d(2, 5, 3, bias=False))  # + 5*2*3*3
    assert param_count(model) == 16 + 90


def test_fresh_attr_skips_taken_names_in_both_styles() -> None:
    owner = nn.Module()
    owner.lif0 = nn.ReLU()
    owner.lif1 = nn.ReLU()
    owner.stem = nn.ReLU()
    assert fresh_attr(owner, "lif") == "lif2"
    assert fresh_attr(owner, "stem", bare=True) == "stem_1"
    assert fresh_attr(owner, "head", bare=True) == "head"
    assert fresh_attr(owner, "training", bare=True) == "training_1"  # plain attributes count too


@pytest.mark.parametrize(
    ("name", "outer", "within", "strictly"),
    [
        ("a.b", "a", True, True),
        ("a", "a", True, False),
        ("ab", "a", False, False),  # a prefix, not a child
        ("a", "a.b", False, False),
        ("layer1.0.conv", "layer1.0", True, True),
        ("layer1.10", "layer1.1", False, False),
    ],
)
def test_is_within_follows_dotted_names(name, outer, within, strictly) -> None:
    assert is_within(name, outer) is within
    assert is_within(name, outer, strict=True) is strictly


def test_record_outputs_sees_each_call_and_removes_its_hooks_on_error() -> None:
    relu, tanh = nn.ReLU(), nn.Tanh()
    model = nn.Sequential(relu, tanh)
    seen: list[tuple[str, torch.Tensor]] = []
    x = torch.tensor([-1.0, 2.0])
    with record_outputs([("r", relu), ("t", tanh)], lambda n, out: seen.append((n, out))):
        model(x)
    assert [n for n, _ in seen] == ["r", "t"]
    assert torch.equal(seen[0][1], torch.tensor([0.0, 2.0]))
    assert torch.equal(seen[1][1], torch.tanh(torch.tensor([0.0, 2.0])))
    recording = record_outputs([("r", relu)], lambda n, out: seen.append((n, out)))
    with pytest.raises(ZeroDivisionError), recording:
        raise ZeroDivisionError
    model(x)  # no hook is left behind, neither after the normal exit nor after the error
    assert len(seen) == 2 and not relu._forward_hooks and not tanh._forward_hooks


class _Timmish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3)
        self.pretrained_cfg = {"input_size": (3, 260, 260)}
        self.in_chans = 4  # adapted stem: the model's own record beats the config's 3


def test_in_chans_prefers_the_models_record_then_config_then_first_conv() -> None:
    assert in_chans(_Timmish()) == 4
    cfg_only = nn.Conv2d(5, 2, 1)
    cfg_only.pretrained_cfg = {"input_size": (6, 32, 32)}
    assert in_chans(cfg_only) == 6
    assert in_chans(nn.Sequential(nn.Linear(2, 2), nn.Conv2d(1, 3, 3))) == 1
    assert in_chans(nn.Linear(2, 2)) == 3


def test_example_shape_recorded_then_configured_then_default() -> None:
    assert example_shape(_Timmish()) == (1, 4, 260, 260)
    assert example_shape(_Timmish(), img_size=64) == (1, 4, 64, 64)
    assert example_shape(nn.Sequential(nn.Conv2d(1, 3, 3))) == (1, 1, 224, 224)
    hybrid = _Timmish()
    hybrid.hybridize_meta = {"example_shape": [8, 2, 16, 24]}  # batch is always 1
    assert example_shape(hybrid) == (1, 2, 16, 24)
    tokens = nn.Linear(4, 4)
    tokens.hybridize_meta = {"example_shape": [2, 7, 4]}
    assert example_shape(tokens, img_size=32) == (1, 7, 4)  # not an image: size unchanged
