"""Run tracking: optional, off by default (``track.kind``, ``oodrec train --track``).

A tracker mirrors a run into TensorBoard or MLflow as it trains; it never changes what the run
computes or writes. The Trainer sees the small :class:`Tracker` interface: ``start`` (the run's
config and the epochs it has already done), ``log_epoch`` (each row of ``epochs.jsonl`` as it is
written), ``finish`` (the record) and ``close``. The default does nothing.

* ``tensorboard``: event files in ``RUN_DIR/tensorboard/`` (``tensorboard --logdir RUNS``): one
  scalar per number of each ``epochs.jsonl`` row (loss terms, every split's metrics, the
  diagnostics, seconds) at step = epoch, stored in double precision, so they equal the file;
  then ``best_epoch`` and the selected epoch's metrics (``best/SPLIT/METRIC``); the config and the
  record as text. A resume rewrites the directory from ``epochs.jsonl``, so that each epoch is in
  it once whatever a kill interrupted.
* ``mlflow``: one MLflow run per oodrec run, in the experiment ``track.experiment`` (default
  :data:`DEFAULT_EXPERIMENT`; ``oodrec bench`` and ``oodrec tune`` name one per grid and per
  study), at the tracking URI ``track.uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's own
  local default. Parameters: the resolved config as dotted keys; metrics: the numbers of each
  row at step = epoch, their keys made MLflow-safe by :func:`mlflow_key` (``val/recall@20`` ->
  ``val/recall_at_20``); at the end ``best_epoch``, ``best/SPLIT/METRIC`` and the artifacts
  ``record.json``, ``config.yaml`` and ``epochs.jsonl``. The MLflow run's id is kept in
  ``RUN_DIR/tracking.json``: a resumed run continues the same MLflow run and logs only the
  epochs it does not have yet.

Failures (a full disk, an unreachable server, a deleted MLflow run) are logged as one warning
naming the backend and the error; tracking is then off for the rest of the run, and training
and the run directory go on as without it. A backend package that is not installed is refused
before training starts (:func:`check_tracking`). tensorboard and mlflow are imported only when a
run tracks with them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from typing import Any

from oodrec.config import ExperimentConfig, to_dict
from oodrec.errors import ConfigError
from oodrec.runs import RunDir, atomic_write_text
from oodrec.track import TrackConfig

logger = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"
"""``RUN_DIR/tracking.json``: the MLflow run the oodrec run is tracked in (its id and URI)."""
TENSORBOARD_DIR = "tensorboard"
"""``RUN_DIR/tensorboard/``: the TensorBoard event files of a run."""
DEFAULT_EXPERIMENT = "oodrec"
"""The MLflow experiment of a single ``oodrec train`` run without ``track.experiment``."""
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
"""MLflow's HTTP retries and timeout (seconds) while a run tracks, unless the environment sets
them: an unreachable server costs the run seconds, not MLflow's default minutes of retries."""

_PACKAGES = {"tensorboard": ("tensorboard", "TensorBoard"), "mlflow": ("mlflow", "MLflow")}
_MLFLOW_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


def check_tracking(track: TrackConfig) -> None:
    """Refuse a tracking backend whose package is not installed (before anything is written).

    Raises:
        ConfigError: one line naming the extra to install.
    """
    if track.kind == "none":
        return
    module, name = _PACKAGES[track.kind]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"--track {track.kind} needs {name}, which is not installed: "
            f'pip install "oodrec[{track.kind}]"'
        )


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The values of an ``epochs.jsonl`` row that a tracker logs at step ``row["epoch"]``: every
    number but the epoch (``improved`` as 1 or 0)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}


def mlflow_key(key: str) -> str:
    """The MLflow name of an ``epochs.jsonl`` key or config key: ``@`` becomes ``_at_``
    (``val/recall@20`` -> ``val/recall_at_20``), any other character MLflow refuses ``_``."""
    return _MLFLOW_UNSAFE.sub("_", key.replace("@", "_at_"))


def flat_params(cfg: ExperimentConfig) -> dict[str, str]:
    """The resolved config as dotted keys with string values (``train.lr`` -> ``0.01``)."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            plain = isinstance(node, (list, dict))
            out[prefix[:-1]] = json.dumps(node) if plain else str(node)

    walk(to_dict(cfg), "")
    return out


def read_state(rd: RunDir) -> dict[str, Any]:
    """``RUN_DIR/tracking.json`` ({} when absent or unreadable)."""
    try:
        data = json.loads((rd.path / TRACKING_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Tracker:
    """What the Trainer calls; this base class tracks nothing (``track.kind=none``).

    ``status`` of :meth:`close` is ``FINISHED``, ``FAILED`` or ``KILLED`` (interrupted).
    """

    name = "none"

    def start(
        self, cfg: ExperimentConfig, rd: RunDir, history: Sequence[dict[str, Any]], resumed: bool
    ) -> None:
        """Begin (or, ``resumed``, continue) tracking; ``history``: the rows done so far."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        """One ``epochs.jsonl`` row, as it is written."""

    def finish(self, record: dict[str, Any], rd: RunDir) -> None:
        """The finished run's record (``record.json`` is written)."""

    def close(self, status: str = "FINISHED") -> None:
        """End tracking (after ``finish``, or when the run fails or is interrupted)."""


class GuardedTracker(Tracker):
    """A backend whose first failure is one warning and turns it off; never raises (but
    ``KeyboardInterrupt``)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.name = backend.name
        self.error: BaseException | None = None
        """The failure that turned tracking off (None while it works)."""

    def _call(self, method: str, *args: Any) -> None:
        if self.error is not None:
            return
        try:
            getattr(self.backend, method)(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker must never stop training
            self.error = exc
            logger.warning(
                "run tracking (%s) failed and is off for the rest of this run; training goes "
                "on and the run directory is not affected: %s",
                self.name,
                _describe(exc),
            )
            try:
                self.backend.abandon()
            except Exception:  # noqa: BLE001 - already warned
                pass

    def start(self, cfg, rd, history, resumed) -> None:  # noqa: D102
        self._call("start", cfg, rd, history, resumed)

    def log_epoch(self, row) -> None:  # noqa: D102
        self._call("log_epoch", row)

    def finish(self, record, rd) -> None:  # noqa: D102
        self._call("finish", record, rd)

    def close(self, status: str = "FINISHED") -> None:  # noqa: D102
        self._call("close", status)


class TensorBoardTracker:
    """Event files in ``RUN_DIR/tensorboard/`` (``torch.utils.tensorboard.SummaryWriter``)."""

    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, cfg, rd, history, resumed) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        log_dir = rd.path / TENSORBOARD_DIR
        if log_dir.exists():
            # rewritten from epochs.jsonl: each epoch once, whatever a kill interrupted
            shutil.rmtree(log_dir)
        self.writer = SummaryWriter(str(log_dir))
        text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
        self.writer.add_text("config", f"```yaml\n{text}```", 0)
        for row in history:
            self._scalars(row)
        self.writer.flush()

    def _scalars(self, row: dict[str, Any]) -> None:
        for key, value in epoch_scalars(row).items():
            self.writer.add_scalar(
                key, value, int(row["epoch"]), new_style=True, double_precision=True
            )

    def log_epoch(self, row) -> None:
        self._scalars(row)
        self.writer.flush()

    def finish(self, record, rd) -> None:
        step = max(int(record["epochs_run"]) - 1, 0)
        final = {"best_epoch": float(record["best_epoch"])}
        for split, metrics in (record.get("metrics") or {}).items():
            final.update({f"best/{split}/{k}": float(v) for k, v in metrics.items()})
        for key, value in final.items():
            self.writer.add_scalar(key, value, step, new_style=True, double_precision=True)
        self.writer.add_text("record", f"```json\n{json.dumps(record, indent=2)}\n```", step)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abandon(self) -> None:
        self.close()


class MlflowTracker:
    """One MLflow run per oodrec run (``mlflow.tracking.MlflowClient``)."""

    name = "mlflow"

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.last = -1
        """The last epoch the MLflow run has: a replayed epoch (a resume from an earlier
        checkpoint) is not logged twice."""

    def start(self, cfg, rd, history, resumed) -> None:
        for var, value in MLFLOW_HTTP_DEFAULTS.items():
            os.environ.setdefault(var, value)
        import mlflow
        from mlflow.tracking import MlflowClient

        saved = read_state(rd).get("mlflow") or {}
        uri = (
            cfg.track.uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or saved.get("tracking_uri")
            or mlflow.get_tracking_uri()
        )
        client = MlflowClient(tracking_uri=uri)
        run_id = saved.get("run_id") if saved.get("tracking_uri") == uri else None
        if run_id:
            client.update_run(run_id, status="RUNNING")
            done = client.get_metric_history(run_id, mlflow_key("loss"))
            last = max((m.step for m in done), default=-1)
            have = set(client.get_run(run_id).data.params)
        else:
            if saved.get("run_id"):
                logger.warning(
                    "MLflow tracking URI %s is not the run's (%s): tracking it in a new MLflow run",
                    uri,
                    saved.get("tracking_uri"),
                )
            experiment = self._experiment(client, cfg.track.experiment or DEFAULT_EXPERIMENT)
            tags = {
                "oodrec.run_dir": str(rd.path.resolve()),
                "oodrec.dataset": cfg.data.dataset,
                "oodrec.method": cfg.method_label(),
                "oodrec.seed": str(cfg.seed),
            }
            run = client.create_run(experiment, run_name=cfg.run_name(), tags=tags)
            run_id, last, have = run.info.run_id, -1, set()
            state = {"tracking_uri": uri, "experiment_id": experiment, "run_id": run_id}
            atomic_write_text(rd.path / TRACKING_FILE, json.dumps({"mlflow": state}, indent=2))
        self.client, self.run_id, self.last = client, run_id, last
        self._params(
            {mlflow_key(k): v for k, v in flat_params(cfg).items() if mlflow_key(k) not in have}
        )
        for row in history:
            self.log_epoch(row)

    @staticmethod
    def _experiment(client: Any, name: str) -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:
            found = client.get_experiment_by_name(name)  # another worker created it meanwhile
            if found is None:
                raise
            return found.experiment_id

    def _params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_epoch(self, row) -> None:
        epoch = int(row["epoch"])
        if epoch <= self.last:
            return
        self._metrics(epoch_scalars(row), epoch)
        self.last = epoch

    def finish(self, record, rd) -> None:
        final = {"best_epoch": float(record["best_epoch"])}
        for split, metrics in (record.get("metrics") or {}).items():
            final.update({f"best/{split}/{k}": float(v) for k, v in metrics.items()})
        self._metrics(final, max(int(record["epochs_run"]) - 1, 0))
        for name in ("record.json", "config.yaml", "epochs.jsonl"):
            if (rd.path / name).is_file():
                self.client.log_artifact(self.run_id, str(rd.path / name))

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status)
            self.run_id = None

    def abandon(self) -> None:
        self.run_id = None  # a failing store: mark nothing more


BACKENDS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


def open_tracker(track: TrackConfig) -> Tracker:
    """The tracker of ``track.kind``: a no-op for ``none``, else the backend guarded so that its
    first failure warns once and turns it off."""
    if track.kind == "none":
        return Tracker()
    return GuardedTracker(BACKENDS[track.kind]())


__all__ = [
    "DEFAULT_EXPERIMENT",
    "TENSORBOARD_DIR",
    "TRACKING_FILE",
    "GuardedTracker",
    "MlflowTracker",
    "TensorBoardTracker",
    "Tracker",
    "check_tracking",
    "epoch_scalars",
    "flat_params",
    "mlflow_key",
    "open_tracker",
    "read_state",
]
