"""The spiking regions of a converted model: what ``convert`` spliced in, found again by type."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hybridize._util import is_within
from hybridize.spiking import FusionBlock, SpikingBranch


@dataclass
class SpikingRegion:
    """A FusionBlock (mode ``parallel``), or a SpikingBranch that replaced its ANN (``replace``)."""

    name: str
    module: nn.Module
    mode: str  # "parallel" (FusionBlock) or "replace" (SpikingBranch alone)

    @property
    def branch(self) -> nn.Module:
        """The SpikingBranch: encoder, twin, decoder."""
        branch = self.module.branch if self.mode == "parallel" else self.module
        assert isinstance(branch, nn.Module)
        return branch

    @property
    def fusion(self) -> nn.Module | None:
        """The FusionBlock around the branch; None in replace mode."""
        return self.module if self.mode == "parallel" else None

    @property
    def time_steps(self) -> int | None:
        t = getattr(getattr(self.branch, "encoder", None), "time_steps", None)
        return int(t) if t is not None else None


# The name of a region that is the model itself (named_modules calls it "").
ROOT_REGION = "<model>"


def region_holds(region: str, module_name: str) -> bool:
    """Whether the module called ``module_name`` lies strictly inside the region ``region``."""
    return region == ROOT_REGION or is_within(module_name, region, strict=True)


def find_regions(model: nn.Module) -> list[SpikingRegion]:
    """Every FusionBlock, and every SpikingBranch that is not the branch of a FusionBlock, in
    module order; the model itself is named :data:`ROOT_REGION`."""
    regions: list[SpikingRegion] = []
    in_blocks: set[int] = set()
    for name, m in model.named_modules():  # a block comes before its own branch
        if isinstance(m, FusionBlock):
            regions.append(SpikingRegion(name or ROOT_REGION, m, "parallel"))
            in_blocks.add(id(m.branch))
        elif isinstance(m, SpikingBranch) and id(m) not in in_blocks:
            regions.append(SpikingRegion(name or ROOT_REGION, m, "replace"))
    return regions
