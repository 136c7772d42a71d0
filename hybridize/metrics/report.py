"""The inspection report: per-region operation counts, firing rates, gates and energy."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybridize._atomic import atomic_path


@dataclass
class LayerStats:
    """One LIF layer: its measured firing rate (spikes / (neurons x steps x samples), summed
    over every call when the forward runs it more than once; None when it never ran)."""

    name: str
    region: str
    time_steps: int  # of its first call
    neurons: int  # per sample and step, of its first call
    spikes: int  # total over all calls, samples and steps
    rate: float | None


@dataclass
class RegionStats:
    """One spiking region (a FusionBlock, or a SpikingBranch alone in replace mode).

    Counts are per image. ``ann_macs`` is the dense MACs of the ANN branch (None in replace
    mode); ``twin_dense_macs`` what the twin costs on dense hardware (about T x the ANN);
    ``twin_acs`` the event-driven accumulates of twin ops with binary inputs and ``twin_macs``
    the MACs of twin ops with non-binary inputs. ``ann_equiv_macs`` is the ANN the region
    stands for: the ANN branch, or in replace mode the twin's dense MACs / T.
    """

    name: str
    mode: str
    time_steps: int | None
    params_ann: int
    params_twin: int
    ann_macs: float | None
    ann_equiv_macs: float
    twin_dense_macs: float
    twin_macs: float
    twin_acs: float
    gate: list[float] | None
    firing_rate: float | None
    energy_ann_pj: float  # the ANN this region replaces or augments
    energy_hybrid_pj: float  # ANN branch (if any) + twin


@dataclass
class Report:
    """Everything ``inspect`` measured; counts and energies are per image."""

    n_samples: int
    energy_preset: str
    e_mac_pj: float
    e_ac_pj: float
    regions: list[RegionStats] = field(default_factory=list)
    layers: list[LayerStats] = field(default_factory=list)
    outside_macs: float = 0.0  # ops outside every region (the plain ANN rest of the model)
    raster: dict | None = None  # {"region", "layers": [{"name", "neurons", "spikes" [T][K]}]}
    # what ran: "samples", "random" (uniform [0, 1], seed 0), a data set name, or "given";
    # counts per image hardly depend on it, firing rates and ACs do
    inputs: str = "given"

    @property
    def energy_ann_pj(self) -> float:
        """Energy per image of the plain ANN (outside ops + every region's ANN equivalent)."""
        return self.outside_macs * self.e_mac_pj + sum(r.energy_ann_pj for r in self.regions)

    @property
    def energy_hybrid_pj(self) -> float:
        """Energy per image of the hybrid (outside ops + every region's ANN branch and twin)."""
        return self.outside_macs * self.e_mac_pj + sum(r.energy_hybrid_pj for r in self.regions)

    def to_dict(self) -> dict:
        """A JSON-ready dict, with the two totals."""
        d = asdict(self)
        d["energy_ann_pj"] = self.energy_ann_pj
        d["energy_hybrid_pj"] = self.energy_hybrid_pj
        return d

    def save_json(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as JSON, atomically."""
        dest = Path(path)
        with atomic_path(dest) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
        return dest
