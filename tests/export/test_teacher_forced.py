"""SpikeTap.teacher_forced: each spiking layer computed from the given spikes upstream."""

from __future__ import annotations

import torch
from torch import nn

from hybridize.export.prepare import SpikeTap


class Step(nn.Module):
    def forward(self, x):
        return (x > 0).to(x.dtype)


def test_each_layer_sees_the_given_spikes_upstream():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), Step(), nn.Linear(5, 3), Step(), nn.Linear(3, 2))
    tap = SpikeTap(model, [("1", model[1]), ("3", model[3])])
    x = torch.randn(6, 4)
    given_1 = torch.ones(6, 5)  # not what layer 1 computes from x
    given_3 = torch.zeros(6, 3)
    forced = tap.teacher_forced(x, [given_1, given_3])
    with torch.no_grad():
        assert torch.equal(forced[0], Step()(model[0](x)))  # its own input is x
        assert torch.equal(forced[1], Step()(model[2](given_1)))  # given layer 1's spikes
    # nothing stays behind: a plain call is the model's own output again
    assert not model[1]._forward_hooks and not model[3]._forward_hooks
    with torch.no_grad():
        assert torch.equal(tap(x)[0], model(x))
