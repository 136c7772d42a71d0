"""The torch.fx rewrite: trace, select (recipe -> regions), twin, splice.

Public entry points are :func:`convert` and :func:`plan`; the passes live in their own modules.
"""

from hybridize.conversion.api import HybridModule, Plan, convert, default_example, plan

__all__ = ["HybridModule", "Plan", "convert", "default_example", "plan"]
