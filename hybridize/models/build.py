"""``hybridize.models.create``: a model by name, and the hybrid of a HAS-8 reference name.

The builders live in :mod:`hybridize.nets` and never convert; this layer, above both
``nets`` and ``conversion``, converts a HAS-8 ANN with its reference recipe.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from hybridize.conversion import convert
from hybridize.errors import ModelError
from hybridize.nets import factory
from hybridize.nets.has8 import HAS8_MODELS, has8_recipe, recipe_compat
from hybridize.nets.request import BuildRequest


def create(
    name: str,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    in_chans: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name; ``model.hybridize_spec`` records how to rebuild it.

    ``weights=PATH`` loads a local state_dict (wins over ``pretrained``); ``pretrained=True``
    tries the offline resolvers, then the hub when reachable. ``num_classes`` different from
    the weights' head replaces the head; ``in_chans`` adapts the stem conv (timm's rule).
    ``hybrid=False`` asks for the plain network under any name. HAS-8 names take
    ``hybrid=True`` (their default: convert with the reference recipe),
    ``recipe="has8"`` (the base recipe whose defaults the reference recipe keeps) and
    ``compat`` (``"has8-released"``: the released code's layout; implied by a recipe whose
    encoder sets that compat).
    """
    hybrid = kwargs.get("hybrid", name in HAS8_MODELS)
    if name not in HAS8_MODELS:
        if hybrid:
            raise ModelError(
                f"{name} has no reference hybrid (only HAS-8 names do); build it with "
                "hybrid=False or without hybrid, then hybridize.convert(model, recipe)"
            )
        kwargs.pop("hybrid", None)
    if not hybrid:
        return factory.create(
            BuildRequest(name, pretrained, weights, num_classes, in_chans, kwargs)
        )
    factory.check_sizes(num_classes, in_chans)
    options = factory.has8_options(name, dict(kwargs))
    recipe = has8_recipe(name, options.recipe)
    # the released recipe implies the released layout
    compat = recipe_compat(recipe) if options.compat is None else options.compat
    ann_kwargs = {"hybrid": False, "compat": compat}
    ann = factory.create(BuildRequest(name, pretrained, weights, num_classes, in_chans, ann_kwargs))
    ann_spec = factory.recorded_spec(ann)
    chans = ann_spec["kwargs"]["in_chans"]
    # 32x32 is the smallest input the five VGG poolings accept; convert only traces with it.
    # The checkpoint spec (hybridize_meta["model"]) is the ANN's: the recipe makes the hybrid.
    model = convert(ann, recipe, example_input=torch.zeros(1, chans, 32, 32))
    hybrid_kwargs = {**ann_spec["kwargs"], "hybrid": True}
    if isinstance(options.recipe, str):
        hybrid_kwargs["recipe"] = options.recipe
    factory.record_spec(model, {**ann_spec, "kwargs": hybrid_kwargs})
    return model
