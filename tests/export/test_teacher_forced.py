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


def test_a_shared_layer_is_tapped_and_forced_at_every_call():
    torch.manual_seed(0)
    model = SharedActivation()
    tap = SpikeTap(model, [("step", model.step)])
    x = torch.randn(6, 4)
    (_, first, second), calls = tap.reference(x)  # one tapped tensor per call, in call order
    assert (first.shape, second.shape) == ((6, 5), (6, 3)) and calls == {"step": 2}
    assert tap.output_names(calls) == ["step (call 1 of 2)", "step (call 2 of 2)"]
    given_first, given_second = torch.ones(6, 5), torch.zeros(6, 3)
    logits, forced_first, forced_second = tap.teacher_forced(x, [given_first, given_second], calls)
    with torch.no_grad():
        assert torch.equal(forced_first, Step()(model.first(x)))  # its own input is x
        assert torch.equal(forced_second, Step()(model.second(given_first)))  # given call 1
    assert torch.equal(logits, torch.zeros(6))  # the output is computed from call 2's zeros
    assert not model.step._forward_hooks


class SpikeDependentCalls(nn.Module):
    """Runs its step a second time only when the first one fired: control flow on spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.step = Step()

    def forward(self, x):
        s = self.step(self.fc(x))
        return self.step(s - 0.5) if bool(s.any()) else s


def test_control_flow_on_spikes_is_one_line():
    import pytest

    from hybridize.errors import ExportError

    torch.manual_seed(0)
    model = SpikeDependentCalls()
    with torch.no_grad():
        model.fc.bias.fill_(100.0)  # the first call fires on its own: the step runs twice
    tap = SpikeTap(model, [("step", model.step)])
    x = torch.rand(2, 4)
    _, calls = tap.reference(x)
    assert calls == {"step": 2}
    with pytest.raises(ExportError, match="ran 1 times given the exported spikes and 2 times"):
        tap.teacher_forced(x, [torch.zeros(2, 4), torch.zeros(2, 4)], calls)
    assert not model.step._forward_hooks
