"""Model names -> nn.Module, weight resolvers, and the HAS-8 reference ANNs."""

from hybridize.models.factory import (
    ModelError,
    adapt_head_and_stem,
    create,
    create_from_spec,
    register_model_source,
)
from hybridize.models.has8 import (
    HAS8_MODELS,
    BasicBlock,
    ConvBlock,
    Has8ResNet,
    Has8VGG,
    MLPHead,
    build_has8_ann,
    has8_recipe,
)
from hybridize.models.recognize import spec_of
from hybridize.models.weights import load_weights_file

__all__ = [
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
