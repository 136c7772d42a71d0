"""hybridize: turn pretrained image classifiers into hybrid ANN-SNN models.

The public API lives here; everything else is an implementation detail. Heavy submodules are
imported lazily so that ``import hybridize`` and ``hybridize --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hybridize.errors import HybridizeError

__version__ = "0.1.0"

# public name -> "module:attribute", resolved on first use
_LAZY = {
    "convert": "hybridize.io:convert",
    "plan": "hybridize.conversion:plan",
    "default_example": "hybridize.conversion:default_example",
    "load_recipe": "hybridize.recipe:load_recipe",
    "list_recipes": "hybridize.recipe:list_builtin_recipes",
    "Recipe": "hybridize.recipe:Recipe",
    "create_model": "hybridize.models:create",
    "save": "hybridize.io:save",
    "load": "hybridize.io:load",
    "trusting_code": "hybridize._trust:trusting_code",
    "finetune": "hybridize.train:finetune",
    "FinetuneConfig": "hybridize.train:FinetuneConfig",
    "run_demo": "hybridize.train.demo:run_demo",
    "evaluate": "hybridize.train:evaluate",
    "export_onnx": "hybridize.export:export_onnx",
    "export_pt2": "hybridize.export:export_pt2",
    "export_nir": "hybridize.export.nir_export:export_nir",
    "inspect": "hybridize.metrics:inspect",
    "save_plots": "hybridize.metrics:save_plots",
    "render_graph": "hybridize.metrics:render_graph",
    "check_graph_path": "hybridize.metrics.graph:check_graph_path",
}

# public subpackages, imported on first use: ``hybridize.models.create(...)`` builds a model
# that checkpoints can rebuild
_LAZY_MODULES = {"models": "hybridize.models"}

__all__ = ["HybridizeError", "__version__", *_LAZY, *_LAZY_MODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        module = import_module(_LAZY_MODULES[name])
        globals()[name] = module
        return module
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'hybridize' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(import_module(module_name), attr)
    globals()[name] = value
    return value
