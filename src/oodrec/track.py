"""The ``track`` section of an experiment config: run tracking (``--track``, docs/tracking.md).

Its own module so that ``oodrec.config`` stays short; the trackers themselves are in
``oodrec.train.tracking``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oodrec.errors import ConfigError

TRACK_KINDS = ("none", "tensorboard", "mlflow")


@dataclass(frozen=True)
class TrackConfig:
    """Run tracking: optional and off by default. It mirrors a run into TensorBoard or MLflow
    and never changes what the run computes, so grids do not compare it and a resume may change
    it."""

    kind: Literal["none", "tensorboard", "mlflow"] = "none"
    """``none``; ``tensorboard`` (event files in RUN_DIR/tensorboard/); ``mlflow`` (one MLflow run
    per run)."""
    uri: str | None = None
    """MLflow tracking URI; ``None``: ``$MLFLOW_TRACKING_URI``, else MLflow's local default."""
    experiment: str | None = None
    """MLflow experiment; ``None``: ``oodrec`` (``oodrec bench`` and ``oodrec tune`` set one per
    grid and per study)."""

    def __post_init__(self) -> None:
        if self.kind not in TRACK_KINDS:
            raise ConfigError(
                f"track.kind must be 'none', 'tensorboard' or 'mlflow', got {self.kind!r}"
            )


__all__ = ["TRACK_KINDS", "TrackConfig"]
