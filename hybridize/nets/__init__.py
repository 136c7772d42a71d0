"""The networks hybridize starts from: model names -> plain ANNs (one builder per model source),
weight resolvers, the HAS-8 reference ANNs, and the spec of a model built elsewhere.

Nothing here converts: the public :mod:`hybridize.models` turns a HAS-8 name with
``hybrid=True`` into its hybrid, one layer up, so that this package and
:mod:`hybridize.conversion` never import each other.
"""

from hybridize.nets.request import BuildRequest

__all__ = ["BuildRequest"]
