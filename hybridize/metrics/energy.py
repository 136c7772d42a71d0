"""Energy per operation: documented constants (docs/inspect.md explains the sources).

All presets come from M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm CMOS at 0.9 V: fp32 add 0.9 pJ, fp32 mult 3.7 pJ, fp16 add 0.4 pJ, fp16 mult
1.1 pJ, int8 add 0.03 pJ, int8 mult 0.2 pJ. A MAC is one multiply plus one add; an AC (a spike
arriving at a synapse) is one add. Memory traffic is not included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from hybridize.errors import HybridizeError


@dataclass(frozen=True)
class EnergyModel:
    """Picojoules per multiply-accumulate and per accumulate."""

    name: str
    e_mac_pj: float
    e_ac_pj: float
    source: str = "Horowitz, ISSCC 2014 (45 nm, 0.9 V)"


PRESETS: Mapping[str, EnergyModel] = MappingProxyType(  # read-only
    {
        "45nm-fp32": EnergyModel("45nm-fp32", 4.6, 0.9),  # 3.7 + 0.9; 0.9
        "45nm-fp16": EnergyModel("45nm-fp16", 1.5, 0.4),  # 1.1 + 0.4; 0.4
        "45nm-int8": EnergyModel("45nm-int8", 0.23, 0.03),  # 0.2 + 0.03; 0.03
    }
)
ALIASES = {"45nm": "45nm-fp32", "fp32": "45nm-fp32", "fp16": "45nm-fp16", "int8": "45nm-int8"}


def energy_model(spec: str | EnergyModel) -> EnergyModel:
    """Resolve a preset name (``45nm``, ``fp32``, ``fp16``, ``int8``, or a full name)."""
    if isinstance(spec, EnergyModel):
        return spec
    key = ALIASES.get(spec, spec)
    if key not in PRESETS:
        choices = ", ".join([*ALIASES, *PRESETS])
        raise HybridizeError(
            f"unknown energy preset {spec!r}; choose one of: {choices}, or pass an EnergyModel"
        )
    return PRESETS[key]
