"""Recipes: which regions of a model get a spiking twin, and with which settings.

A recipe is YAML (or a dict) validated into a :class:`Recipe`; built-in recipes ship in the
``hybridize.builtin_recipes`` package and resolve by name. See docs/recipes.md.
"""

from __future__ import annotations

from hybridize.recipe.loader import (
    builtin_recipe_path,
    builtin_recipe_text,
    list_builtin_recipes,
    load_recipe,
    parse_recipe,
)
from hybridize.recipe.messages import (
    closest_names,
    unmatched_target_error,
    unmatched_target_message,
)
from hybridize.recipe.schema import (
    AUTO_KINDS,
    BLOCK_FIELDS,
    BlockSettings,
    DecoderSettings,
    EncoderSettings,
    NeuronSettings,
    Recipe,
    Segment,
    Selector,
    Target,
    TraceSettings,
    merge_settings,
)

__all__ = [
    "AUTO_KINDS",
    "BLOCK_FIELDS",
    "BlockSettings",
    "DecoderSettings",
    "EncoderSettings",
    "NeuronSettings",
    "Recipe",
    "Segment",
    "Selector",
    "Target",
    "TraceSettings",
    "builtin_recipe_path",
    "builtin_recipe_text",
    "closest_names",
    "list_builtin_recipes",
    "load_recipe",
    "merge_settings",
    "parse_recipe",
    "unmatched_target_error",
    "unmatched_target_message",
]
