"""What a model source is asked to build: :class:`BuildRequest`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class BuildRequest:
    """The arguments of :func:`hybridize.models.create`, which documents them, as one value.

    ``name`` is the model name as given (``torchvision:resnet18``); the builder of a source
    registered with :func:`hybridize.models.register_model_source` gets the request with the
    name inside its source (``resnet18``). ``kwargs`` are the remaining constructor keyword
    arguments, read-only (a builder that consumes some copies them first).
    """

    name: str
    pretrained: bool = False
    weights: str | os.PathLike[str] | None = None
    num_classes: int | None = None
    in_chans: int | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a copy, so neither the caller nor a builder can change the other's keyword arguments
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
