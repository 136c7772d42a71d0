"""Per-token norms in a twin (layer norm, RMS norm) stay per step, as in the ANN, but a token
that is silent at a step (its bit planes or spikes all 0, or all equal) passes its gradient
through unchanged in training, instead of times 1/sqrt(eps) (docs/conversion.md, "Per-sample
normalizations"). Before, CoaT's class token, silent in every step of the last stage's twins,
took coat_lite_small's largest gate-1 gradient to 1.8e5x its ANN's.
"""

import pytest
import torch
import torch.nn.functional as F
from gate_one import max_grad, max_grad_at_gate_one
from torch import nn

import hybridize
from hybridize.spiking.sample_norms import (
    LayerNormPerStep,
    RMSNormPerStep,
    layer_norm_per_step,
    rms_norm_per_step,
)

C = 6


def _tokens() -> torch.Tensor:
    """[T*N=4, L=5, C] float64 tokens; rows (0, 1) all 0, (2, 3) constant 0.75 (silent)."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, C, dtype=torch.float64)
    x[0, 1] = 0.0
    x[2, 3] = 0.75
    return x


def _layer_norm(x, weight, bias):
    return layer_norm_per_step(x, (C,), weight, bias, 1e-6)


def _rms_norm(x, weight, bias):
    return rms_norm_per_step(x, [C], weight, 1e-6)


@pytest.mark.parametrize(
    ("norm", "silent"),
    [(_layer_norm, [(0, 1), (2, 3)]), (_rms_norm, [(0, 1)])],  # RMS norm: only all-0 rows
    ids=["layer_norm", "rms_norm"],
)
@pytest.mark.parametrize("autocast", [False, True], ids=["fused", "under-autocast"])
def test_a_silent_token_passes_its_gradient_unchanged(norm, silent, autocast):
    # layer norm: torch's fused op with the rule in its backward, or (under autocast, which
    # float64 passes untouched) the rule composed around F.layer_norm; the same function
    x = _tokens().requires_grad_()
    weight, bias = torch.randn(C, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = norm(x, weight, bias)
    with torch.no_grad():  # eval and export: the ANN's op; training: the same values
        plain = norm(x, weight, bias)
    torch.testing.assert_close(y, plain)
    g = torch.randn_like(y)
    y.backward(g)
    for row in silent:  # the identity's gradient, times the norm's scale
        torch.testing.assert_close(x.grad[row], g[row] * weight)

    # every other token keeps the norm's own backward: finite differences on those tokens
    loud = torch.ones(x.shape[:2], dtype=torch.bool)
    for row in silent:
        loud[row] = False

    def on_loud(z: torch.Tensor) -> torch.Tensor:
        full = x.detach().clone()
        full[loud] = z
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return (norm(full, weight, bias) * g).sum()

    z = x.detach()[loud].clone().requires_grad_()
    torch.autograd.gradcheck(on_loud, (z,))
    (numeric,) = torch.autograd.grad(on_loud(z), z)
    torch.testing.assert_close(x.grad[loud], numeric)

    def of_affine(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # the norm's own
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return norm(x.detach(), w, b)

    torch.autograd.gradcheck(of_affine, (weight.requires_grad_(), bias.requires_grad_()))


def test_outside_training_the_ops_are_torchs():
    x, weight, bias = _tokens().float(), torch.randn(C), torch.randn(C)
    assert torch.equal(
        layer_norm_per_step(x, (C,), weight, bias, 1e-6), F.layer_norm(x, (C,), weight, bias, 1e-6)
    )
    assert torch.equal(rms_norm_per_step(x, [C], weight, 1e-6), F.rms_norm(x, [C], weight, 1e-6))


@pytest.mark.parametrize(
    ("norm", "twin_class"),
    [(nn.LayerNorm(C, eps=1e-6, bias=False), LayerNormPerStep), (nn.RMSNorm(C), RMSNormPerStep)],
)
def test_norm_modules_keep_their_parameters(norm, twin_class):
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    twin = twin_class.like(norm)
    assert twin.state_dict().keys() == norm.state_dict().keys()
    pairs = zip(twin.state_dict().values(), norm.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert twin.weight is not norm.weight
    x = _tokens().float()
    assert torch.equal(twin(x), norm(x))


def test_twins_rewrite_layer_norm_calls_and_modules():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(C)
            self.fc1, self.fc2 = nn.Linear(C, C), nn.Linear(C, C)

        def forward(self, x):
            y = self.fc1(F.layer_norm(self.norm(x), (C,)))
            return x + self.fc2(F.gelu(F.rms_norm(y, (C,))))

    model = nn.Sequential(nn.Linear(C, C), Block(), nn.Linear(C, 3)).eval()
    recipe = {"defaults": {}, "targets": [{"select": {"name": "1"}}]}
    hybrid = hybridize.convert(model, recipe, example_input=torch.randn(2, 4, C))
    (row,) = hybrid.conversion_plan.converted
    assert row.twin_report.step_norms == [
        "norm: LayerNorm",
        "layer_norm: layer_norm",
        "rms_norm: rms_norm",
    ]
    assert row.twin_report.norms == []  # nothing takes statistics over the T steps
    twin = hybrid.get_submodule("1").twin
    assert isinstance(twin.get_submodule("norm"), LayerNormPerStep)
    targets = {n.target for n in twin.graph.nodes if n.op == "call_function"}
    assert {layer_norm_per_step, rms_norm_per_step} <= targets
    assert not {F.layer_norm, F.rms_norm} & targets


def test_coat_gate_one_backward_is_near_its_ann():
    # CoaT's class token is silent at every step in the last stage's twins; per-step layer
    # norms without the rule: 216x (128 px, this setup), coat_lite_small 1.8e5x at 224 px
    torch.manual_seed(0)
    model = hybridize.models.create("coat_lite_tiny", num_classes=10, img_size=128).eval()
    x, target = torch.randn(2, 3, 128, 128), torch.tensor([1, 2])
    ann_max = max_grad(model, x, target)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=x)
    rows = hybrid.conversion_plan.converted
    assert len(rows) == 8 and all(len(r.twin_report.step_norms) == 2 for r in rows)
    assert max_grad_at_gate_one(hybrid, x, target) <= 10 * ann_max
