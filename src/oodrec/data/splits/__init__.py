"""OOD split protocols. Each is a pure function ``(log, cfg, seed) -> SplitResult``.

``SPLITS_PROTOCOLS`` maps the protocol name to its function and ``SPLIT_CONFIGS`` to its config
class; names are resolved only at the CLI / config boundary.
"""

from __future__ import annotations

from collections.abc import Callable

from oodrec.data.splits.base import (
    PARTS,
    SplitConfig,
    SplitReport,
    SplitResult,
    check_split,
    iid_split,
)
from oodrec.data.splits.exposure import ExposureSplitConfig, exposure_split
from oodrec.data.splits.popularity import PopularitySplitConfig, popularity_split
from oodrec.data.splits.temporal import TemporalSplitConfig, temporal_split
from oodrec.errors import ConfigError

SPLITS_PROTOCOLS: dict[str, Callable[..., SplitResult]] = {
    "popularity": popularity_split,
    "temporal": temporal_split,
    "exposure": exposure_split,
}
SPLIT_CONFIGS: dict[str, type[SplitConfig]] = {
    "popularity": PopularitySplitConfig,
    "temporal": TemporalSplitConfig,
    "exposure": ExposureSplitConfig,
}


def get_protocol(name: str) -> tuple[Callable[..., SplitResult], type[SplitConfig]]:
    """The split function and config class registered under ``name``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    if name not in SPLITS_PROTOCOLS:
        valid = ", ".join(sorted(SPLITS_PROTOCOLS))
        raise ConfigError(f"unknown split protocol {name!r}; valid protocols: {valid}")
    return SPLITS_PROTOCOLS[name], SPLIT_CONFIGS[name]


__all__ = [
    "PARTS",
    "SPLITS_PROTOCOLS",
    "SPLIT_CONFIGS",
    "ExposureSplitConfig",
    "PopularitySplitConfig",
    "SplitConfig",
    "SplitReport",
    "SplitResult",
    "TemporalSplitConfig",
    "check_split",
    "exposure_split",
    "get_protocol",
    "iid_split",
    "popularity_split",
    "temporal_split",
]
