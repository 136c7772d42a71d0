"""Evaluation figures against hand computation."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from hybridize.train import evaluate, finetune

from .conftest import COMMON, make_hybrid


class Table(nn.Module):
    """Returns a fixed row of logits per sample; the input carries the row index."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def test_top1_top5_loss_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    ds = TensorDataset(torch.arange(10.0)[:, None], labels)
    ds.targets = labels
    r = evaluate(Table(logits.float()), (ds, ds), batch_size=3, workers=0, device="cpu")
    # float64 reference written out: rank of the true class among the 7 logits
    ranks = [(logits[i] > logits[i, labels[i]]).sum().item() for i in range(10)]
    nll = [torch.logsumexp(logits[i], 0) - logits[i, labels[i]] for i in range(10)]
    assert r["eval_samples"] == 10
    assert r["eval_top1"] == sum(k == 0 for k in ranks) / 10
    assert r["eval_top5"] == sum(k < 5 for k in ranks) / 10
    assert abs(r["eval_loss"] - float(sum(nll)) / 10) < 1e-5
    assert r["firing_rate"] is None and r["gates"] == {}


def test_firing_rate_and_gates_of_a_hybrid(data) -> None:
    model = finetune(make_hybrid(), data, epochs=1, **COMMON).model.eval()
    r = evaluate(model, data, batch_size=5, workers=0, device="cpu")
    x = data[1].tensors[0]
    branch = model[0].branch
    with torch.no_grad():  # the twin's LIF output, computed without hooks
        spikes = branch.twin(branch.encoder(x).flatten(0, 1))
    assert abs(r["firing_rate"] - spikes.mean().item()) < 1e-6
    assert r["gates"] == {"0": model[0].gate.item()}


def test_an_unknown_amp_mode_is_refused() -> None:
    import pytest

    from hybridize.train import TrainError

    ds = TensorDataset(torch.zeros(2, 1), torch.tensor([0, 1]))
    ds.targets = [0, 1]
    table = Table(torch.eye(2))
    for amp, message in (("fp32", "amp 'fp32': choose bf16|fp16|off"), ("fp16", "needs a CUDA")):
        with pytest.raises(TrainError, match=message):
            evaluate(table, (ds, ds), amp=amp, workers=0, device="cpu")
