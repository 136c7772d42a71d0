"""Checkpoints of models hybridize did not build: timm/torchvision models recognised from their
own config, any other module loaded back on a given base model."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

import hybridize
from hybridize.errors import CheckpointError, ModelError
from hybridize.nets.recognize import base_spec, first_difference, spec_of

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _timm(name: str = "test_resnet", **kwargs) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


def _cnn(channels: int = 8, classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    ).eval()


def _convert(base: nn.Module) -> nn.Module:
    hybrid = hybridize.convert(base, "has8", example_input=EXAMPLE)
    with torch.no_grad():  # non-trivial BN statistics: a wrong load shows in the outputs
        for name, buf in hybrid.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return hybrid.eval()


def _outputs(model: nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def cnn_ckpt(tmp_path_factory):
    """(hybrid, its checkpoint) of the plain CNN: saved without a spec."""
    hybrid = _convert(_cnn())
    return hybrid, hybridize.save(hybrid, tmp_path_factory.mktemp("cnn") / "cnn.safetensors")


def _one_line(info: pytest.ExceptionInfo) -> str:
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------
# timm and torchvision models: recognised, saved with a spec


def test_timm_create_model_round_trips_with_a_spec(tmp_path) -> None:
    base = _timm(num_classes=5, drop_rate=0.25)
    hybrid = _convert(base)
    path = hybridize.save(hybrid, tmp_path / "t.safetensors")

    spec = hybridize.io.read_metadata(path)["model"]
    assert spec == {
        "source": "timm",
        "name": "test_resnet",
        "kwargs": {"num_classes": 5, "in_chans": 3, "drop_rate": 0.25},
    }
    loaded = hybridize.load(path)  # no base model: rebuilt from the spec
    assert torch.equal(_outputs(loaded), _outputs(hybrid))
    on_base = hybridize.load(path, base_model=_timm(num_classes=5, drop_rate=0.25))
    assert torch.equal(_outputs(on_base), _outputs(hybrid))
    assert first_difference(base, hybridize.models.create_from_spec(spec)) is None


def test_timm_recovers_the_constructor_arguments_it_can_read_back() -> None:
    spec = spec_of(_timm("test_vit", in_chans=1, drop_path_rate=0.1, num_classes=0))
    assert spec["kwargs"] == {"num_classes": 0, "in_chans": 1, "drop_path_rate": 0.1}
    rebuilt = hybridize.models.create_from_spec(spec)
    assert (
        first_difference(_timm("test_vit", in_chans=1, drop_path_rate=0.1, num_classes=0), rebuilt)
        is None
    )


def test_timm_head_reset_is_a_spec_but_a_replaced_module_is_not() -> None:
    reset = _timm()
    reset.reset_classifier(7)
    assert spec_of(reset)["kwargs"]["num_classes"] == 7

    replaced = _timm()
    replaced.fc = nn.Sequential(nn.Linear(replaced.fc.in_features, 7))
    with pytest.raises(ModelError) as info:
        spec_of(replaced)
    assert "module fc" in _one_line(info) and "test_resnet" in str(info.value)

    other_act = _timm(act_layer="gelu")  # an argument that leaves no attribute to read back
    with pytest.raises(ModelError) as info:
        spec_of(other_act)
    assert "GELU" in _one_line(info)
    record = base_spec(other_act)
    assert record["base_model"] == "required" and "GELU" in record["reason"]


def test_torchvision_model_is_recognised_by_class_and_head() -> None:
    import torchvision

    model = torchvision.models.mobilenet_v3_small(num_classes=6)
    spec = spec_of(model)
    assert spec == {
        "source": "torchvision",
        "name": "mobilenet_v3_small",
        "kwargs": {"num_classes": 6, "in_chans": 3},
    }
    assert first_difference(model, hybridize.models.create_from_spec(spec)) is None
    # a sibling builder of the same class is told apart by its structure
    assert spec_of(torchvision.models.mobilenet_v3_large(num_classes=6))["name"] == (
        "mobilenet_v3_large"
    )


# ---------------------------------------------------------------------------------------------
# any other module: saved without a spec, loaded on a given base


def test_plain_cnn_round_trips_on_a_given_base(tmp_path, cnn_ckpt) -> None:
    hybrid, path = cnn_ckpt
    record = hybridize.io.read_metadata(path)["model"]
    assert record["base_model"] == "required"
    assert record["class"] == "torch.nn.modules.container.Sequential"

    fresh = _cnn(seed=123)  # other weights: the file's tensors replace them
    loaded = hybridize.load(path, base_model=fresh)
    assert torch.equal(_outputs(loaded), _outputs(hybrid))
    assert not torch.equal(_outputs(_convert(fresh)), _outputs(hybrid))
    # and the loaded hybrid saves again, still spec-less, with the same content
    again = hybridize.save(loaded, tmp_path / "again.safetensors")
    assert hybridize.io.read_metadata(again)["sha256"] == hybridize.io.read_metadata(path)["sha256"]


class _SharedBlock(nn.Module):
    def __init__(self, cpe: nn.Module) -> None:
        super().__init__()
        self.cpe = cpe  # shared with the model, as CoaT's serial blocks share cpe1..cpe4
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe(x)
        return x + self.act(self.conv(x))


class _SharedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.cpe = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU())
        self.blocks = nn.Sequential(_SharedBlock(self.cpe), _SharedBlock(self.cpe))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe(self.blocks(self.stem(x)))  # also called outside the blocks
        return self.head(x.mean((2, 3)))


def test_module_shared_between_blocks_round_trips(tmp_path) -> None:
    """A submodule reachable under two names (coat_small's failure: KeyError 'cpe2.proj')."""
    torch.manual_seed(0)
    hybrid = _convert(_SharedNet())
    assert [r.region.name for r in hybrid.conversion_plan.converted] == ["blocks.0", "blocks.1"]
    path = hybridize.save(hybrid, tmp_path / "shared.safetensors")
    loaded = hybridize.load(path, base_model=_SharedNet())
    assert torch.equal(_outputs(loaded), _outputs(hybrid))


def test_spec_less_checkpoint_without_base_says_base_model_required(cnn_ckpt) -> None:
    path = cnn_ckpt[1]
    with pytest.raises(CheckpointError) as info:
        hybridize.load(path)
    msg = _one_line(info)
    assert "base model required" in msg and "base_model=" in msg


@pytest.mark.parametrize(
    ("base", "needles"),
    [
        (
            lambda: _cnn(channels=6),
            ["other shape", "ann.0.weight is (8, 3, 3, 3) in the file, (6, 3, 3, 3) here"],
        ),
        (lambda: _cnn(classes=5), ["8.weight is (4, 8) in the file, (5, 8) here"]),
        (
            lambda: nn.Sequential(*_cnn(), nn.Identity(), nn.Linear(4, 2)),
            ["missing", "10.weight"],
        ),
    ],
    ids=["channels", "classes", "extra-layer"],
)
def test_mismatched_base_is_one_line(cnn_ckpt, base, needles) -> None:
    path = cnn_ckpt[1]
    with pytest.raises(CheckpointError) as info:
        hybridize.load(path, base_model=base())
    msg = _one_line(info)
    assert "given base_model" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_base_model_of_another_kind_is_one_line(cnn_ckpt) -> None:
    path = cnn_ckpt[1]
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 4))
    with pytest.raises(CheckpointError) as info:
        hybridize.load(path, base_model=mlp)
    assert "given base_model" in _one_line(info)
    for wrong in (torch.zeros(3), hybridize.load(path, base_model=_cnn())):
        with pytest.raises(CheckpointError) as info:
            hybridize.load(path, base_model=wrong)
        assert "base_model" in _one_line(info)


def test_given_base_with_a_spec_upgrades_the_checkpoint(tmp_path) -> None:
    """A changed timm model saves spec-less (with a warning); loaded on a recognisable base
    it saves again with a spec."""
    changed = _timm()
    changed.fc = nn.Sequential(nn.Linear(changed.fc.in_features, 1000))
    hybrid = _convert(changed)
    with pytest.warns(UserWarning, match="without a model spec"):
        path = hybridize.save(hybrid, tmp_path / "changed.safetensors")
    assert hybridize.io.read_metadata(path)["model"]["base_model"] == "required"
    loaded = hybridize.load(path, base_model=changed)
    assert torch.equal(_outputs(loaded), _outputs(hybrid))

    plain = _cnn()
    plain_path = hybridize.save(_convert(plain), tmp_path / "p.safetensors")
    plain.hybridize_spec = {"source": "entrypoint", "name": "mypkg.nets:cnn", "kwargs": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resaved = hybridize.save(
            hybridize.load(plain_path, base_model=plain), tmp_path / "q.safetensors"
        )
    assert hybridize.io.read_metadata(resaved)["model"]["name"] == "mypkg.nets:cnn"


def test_hash_covers_the_base_model_record(tmp_path, cnn_ckpt) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = cnn_ckpt[1]
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    record = json.loads(meta["hybridize.model"])
    record["class"] = "somewhere.Else"
    meta["hybridize.model"] = json.dumps(record, sort_keys=True)
    tampered = tmp_path / "tampered.safetensors"
    save_file(load_file(str(path)), str(tampered), metadata=meta)
    with pytest.raises(CheckpointError) as info:
        hybridize.load(tampered, base_model=_cnn())
    assert "hash mismatch" in _one_line(info)


# ---------------------------------------------------------------------------------------------
# the CLI and the public API


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "{ckpt}", "--limit", "2"],
        ["inspect", "{ckpt}"],
        ["export", "{ckpt}", "--format", "pt2", "-o", "{tmp}/m.pt2"],
    ],
    ids=["evaluate", "inspect", "export"],
)
def test_cli_on_a_spec_less_checkpoint_is_one_line(capsys, tmp_path, cnn_ckpt, argv) -> None:
    from hybridize_cli.main import main_entry

    path = cnn_ckpt[1]
    args = [a.format(ckpt=path, tmp=tmp_path) for a in argv]
    code = main_entry(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "base model required" in lines[0] and "base_model=" in lines[0], lines[0]


def test_models_is_public() -> None:
    assert "models" in hybridize.__all__
    assert hybridize.create_model is hybridize.models.create
    assert callable(hybridize.models.spec_of)
