"""The unmatched-target message and the closest-name helper convert uses."""

from __future__ import annotations

import pytest

from hybridize.errors import RecipeError
from hybridize.recipe import closest_names, load_recipe, unmatched_target_error

RESNET_NAMES = (
    ["conv1", "bn1", "act1", "maxpool", "global_pool", "fc"]
    + [f"layer{i}" for i in range(1, 5)]
    + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    + [f"layer{i}.{j}.conv{k}" for i in range(1, 5) for j in range(2) for k in (1, 2)]
)


def test_closest_names_ignores_glob_characters():
    assert closest_names("layr4.*", RESNET_NAMES) == ["layer4", "layer4.0", "layer4.1"]
    assert closest_names("maxpol", RESNET_NAMES) == ["maxpool"]
    assert closest_names("zzzzzzzz", RESNET_NAMES) == []
    assert closest_names("layer4.?", RESNET_NAMES, limit=1) == ["layer4.0"]


def test_unmatched_name_target_message():
    r = load_recipe(
        {
            "name": "mine",
            "targets": [
                {"select": {"auto": "stem"}},
                {"select": {"auto": "blocks"}},
                {"select": {"name": "layr4.*"}},
            ],
        }
    )
    err = unmatched_target_error(r, 2, RESNET_NAMES)
    assert isinstance(err, RecipeError)
    assert str(err) == (
        "recipe 'mine': target 2 (name: 'layr4.*') matched nothing; closest names: layer4, "
        "layer4.0, layer4.1; fix the selector or set required: false on that target"
    )


def test_unmatched_segment_and_auto_targets():
    r = load_recipe(
        {
            "targets": [
                {"select": {"segment": {"start": "conv", "end": "maxpol"}}},
                {"select": {"auto": "head"}},
            ]
        }
    )
    message = str(unmatched_target_error(r, 0, RESNET_NAMES))
    assert "target 0 (segment: conv..maxpol) matched nothing; closest names: " in message
    assert "maxpool" in message and "conv1" in message
    message = str(unmatched_target_error(r, 1, RESNET_NAMES))
    assert message.startswith("recipe 'custom': target 1 (auto: head) matched nothing; fix")


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_limit_caps_the_list(limit):
    r = load_recipe({"targets": [{"select": {"name": ["layr4.*", "layr3.*"]}}]})
    message = str(unmatched_target_error(r, 0, RESNET_NAMES, limit=limit))
    listed = message.split("closest names: ")[1].split(";")[0].split(", ")
    assert len(listed) == limit
