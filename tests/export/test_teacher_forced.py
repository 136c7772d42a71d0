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
    _, calls = tap.reference(x)
    assert calls == {"1": 1, "3": 1}
    logits, *forced = tap.teacher_forced(x, [given_1, given_3], calls)
    with torch.no_grad():
        assert torch.equal(forced[0], Step()(model[0](x)))  # its own input is x
        assert torch.equal(forced[1], Step()(model[2](given_1)))  # given layer 1's spikes
        assert torch.equal(logits, model[4](given_3))  # the head from layer 3's given spikes
    # nothing stays behind: a plain call is the model's own output again
    assert not model[1]._forward_hooks and not model[3]._forward_hooks
    with torch.no_grad():
        assert torch.equal(tap(x)[0], model(x))


class SharedActivation(nn.Module):
    """One Step module called twice on tensors of different shapes (as Res2Net shares its ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 5), nn.Linear(5, 3)
        self.step = Step()

    def forward(self, x):
        return self.step(self.second(self.step(self.first(x)))).sum(1)


def test_a_shared_layer_is_forced_at_its_last_call_only():
    torch.manual_seed(0)
    model = SharedActivation()
    tap = SpikeTap(model, [("step", model.step)])
    x = torch.randn(6, 4)
    (_, exported), calls = tap.reference(x)  # the tap exports the last call: shape [6, 3]
    assert exported.shape == (6, 3) and calls == {"step": 2}
    logits, forced = tap.teacher_forced(x, [torch.zeros(6, 3)], calls)
    with torch.no_grad():  # the first call ran free, the second is eager's own from it
        assert torch.equal(forced, Step()(model.second(Step()(model.first(x)))))
    assert torch.equal(logits, torch.zeros(6))  # the output is computed from the given zeros
    assert not model.step._forward_hooks
