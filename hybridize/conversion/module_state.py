"""Plain-attribute state of modules (caches) across copying and tracing.

Some zoo modules keep computed tensors in plain attributes: timm's EfficientFormer, LeViT,
EfficientViT (MSRA), TinyViT attention layers cache their bias table per device in eval mode.
Two things go wrong with such caches during a conversion, and both are handled here:

- after an eval forward the cache holds a tensor computed from a parameter (it has a grad_fn),
  which ``copy.deepcopy`` refuses to copy: :func:`copy_model` copies it detached;
- tracing in eval mode stores an fx Proxy in the cache, and a later trace of the same module
  reuses that Proxy, a node of the earlier graph ("referenced nonexistent value"):
  :func:`traced_state_restored` puts every plain attribute back as it was before tracing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_CONTAINERS = (dict, list, set)


def _public_attrs(module: nn.Module) -> dict[str, Any]:
    # nn.Module keeps parameters, buffers, submodules and hooks under "_" names
    return {k: v for k, v in vars(module).items() if not k.startswith("_")}


def _nested_tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _nested_tensors(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _nested_tensors(v)


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)``, except that computed tensors a module holds in a plain
    attribute (a cache built from its parameters) are copied detached."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for value in _public_attrs(m).values():
            for t in _nested_tensors(value):
                if t.grad_fn is not None:
                    memo[id(t)] = t.detach().clone()
    return copy.deepcopy(model, memo)


@contextmanager
def traced_state_restored(model: nn.Module) -> Iterator[None]:
    """Inside, trace ``model``; on leaving, every module's plain attributes are as they were
    before: values reassigned are put back, attributes added are removed, and dicts, lists and
    sets get their contents back in place."""
    saved = []
    for m in model.modules():
        attrs = _public_attrs(m)
        contents = {k: copy.copy(v) for k, v in attrs.items() if isinstance(v, _CONTAINERS)}
        saved.append((m, attrs, contents))
    try:
        yield
    finally:
        for m, attrs, contents in saved:
            for key in _public_attrs(m).keys() - attrs.keys():
                delattr(m, key)
            for key, value in attrs.items():
                if m.__dict__.get(key) is not value:
                    m.__dict__[key] = value
            for key, before in contents.items():
                container = attrs[key]
                container.clear()
                if isinstance(container, list):
                    container.extend(before)
                else:  # dict or set
                    container.update(before)
