"""Model names -> nn.Module (the public face of :mod:`hybridize.nets`), and the hybrids of the
HAS-8 reference names (:func:`create`, one layer above ``nets`` and ``conversion``)."""

from hybridize.models.build import create
from hybridize.nets.factory import (
    ModelError,
    adapt_head_and_stem,
    create_from_spec,
    register_model_source,
)
from hybridize.nets.has8 import (
    HAS8_MODELS,
    BasicBlock,
    ConvBlock,
    Has8ResNet,
    Has8VGG,
    MLPHead,
    build_has8_ann,
    has8_recipe,
)
from hybridize.nets.recognize import spec_of
from hybridize.nets.request import BuildRequest
from hybridize.nets.weights import load_weights_file

__all__ = [
    "BuildRequest",
    "HAS8_MODELS",
    "BasicBlock",
    "ConvBlock",
    "Has8ResNet",
    "Has8VGG",
    "MLPHead",
    "ModelError",
    "adapt_head_and_stem",
    "build_has8_ann",
    "create",
    "create_from_spec",
    "has8_recipe",
    "load_weights_file",
    "register_model_source",
    "spec_of",
]
