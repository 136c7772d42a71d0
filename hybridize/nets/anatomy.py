"""Where a plain image classifier keeps its stem and head: the first conv, the last linear
layer and the class count, found the same way by the builders and the spec recogniser."""

from __future__ import annotations

from torch import nn


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``Conv2d`` in module order, with its qualified name."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last ``Linear`` in module order (the classifier head), with its qualified name."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def num_classes(model: nn.Module) -> int | None:
    """The model's own ``num_classes`` (timm), else its last linear layer's outputs."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    head = last_linear(model)
    return head[1].out_features if head else None
