"""The Python API: train a run, load one, and get its recommendations in the user's own ids.

    import oodrec

    run = oodrec.train(dataset="synthetic", sampler="rns", seed=1, epochs=5)
    run.metrics["ood_test"]["recall@20"]
    table = run.recommend(["3", "17", "42"], k=10)   # a pyarrow.Table: user, rank, item, score
    table.to_pandas()                                # where pandas is installed

``oodrec.train`` resolves its settings exactly as ``oodrec train`` does
(``oodrec.experiment.assemble``) and writes the same run directory; ``oodrec.load_run`` opens any
run directory. A ``Run`` reads its record without torch and loads its checkpoint on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oodrec.errors import RunError


class Run:
    """A run directory, as a recommender.

    Args:
        path: the run directory.
        data_dir: where its dataset is (default: the run's ``data.data_dir``).
        device: score on this device (default: the run's ``train.device``).

    Attributes:
        path: the run directory.
    """

    def __init__(
        self, path: str | Path, data_dir: str | None = None, device: str | None = None
    ) -> None:
        from oodrec.runs import RunDir

        self.path = Path(path)
        self._rd = RunDir(self.path)
        self._rd.load_config()  # a directory that is no run fails here, naming it
        self._data_dir = data_dir
        self._device = device
        self._loaded: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = "finished" if self.finished else "unfinished"
        return f"Run({str(self.path)!r}, {state})"

    @property
    def config(self) -> Any:
        """The run's resolved ``ExperimentConfig``."""
        return self._rd.load_config()

    @property
    def finished(self) -> bool:
        """Whether the run has its ``record.json``."""
        return self._rd.is_finished()

    @property
    def record(self) -> dict[str, Any]:
        """The run's ``record.json``.

        Raises:
            RunError: the run has not finished.
        """
        if not self.finished:
            raise RunError(f"run {self.path} has not finished (no record.json)")
        return self._rd.read_record()

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Split -> metric -> value at the selected epoch (from the record)."""
        return self.record["metrics"]

    def loaded(self, checkpoint: str = "best") -> Any:
        """The run's method with a checkpoint loaded (``oodrec.train.reload.LoadedRun``),
        built once per checkpoint."""
        if checkpoint not in ("best", "last"):
            raise RunError(f"checkpoint must be best or last, got {checkpoint!r}")
        if checkpoint not in self._loaded:
            from oodrec.train.reload import load_run as _load

            other = next(iter(self._loaded.values()), None)
            self._loaded[checkpoint] = _load(
                self.path,
                data_dir=self._data_dir,
                device=self._device,
                dataset=other.dataset if other is not None else None,
                checkpoint=checkpoint,
            )
        return self._loaded[checkpoint]

    def recommend(
        self,
        users: Sequence[Any] | str | None = None,
        k: int = 20,
        exclude: str = "train",
        *,
        candidates: str | Path | None = None,
        on_unknown: str = "error",
        checkpoint: str = "best",
    ) -> Any:
        """Top-``k`` lists as a ``pyarrow.Table`` with columns ``user, rank, item, score``
        (raw ids where the dataset has id maps). ``table.to_pandas()`` gives a DataFrame where
        pandas is installed.

        Args:
            users: raw user ids (default: every user with training history).
            k: list length.
            exclude: ``train`` (default), ``seen`` (train + val) or ``none``.
            candidates: a ``user item`` file: rank only those items.
            on_unknown: ``error`` (default) or ``skip`` unknown ids.
            checkpoint: ``best`` (the selected epoch, default) or ``last``.
        """
        from oodrec.recommend import recommend

        _, table = recommend(
            self.loaded(checkpoint),
            None,
            users=users,
            k=k,
            exclude=exclude,
            candidates=candidates,
            on_unknown=on_unknown,
            checkpoint=checkpoint,
        )
        return table

    def scores(self, users: Sequence[Any], checkpoint: str = "best") -> Any:
        """Scores of ``users`` (raw ids) over every item, nothing masked: a float tensor
        [len(users), num_items] whose column k is the item ``self.item_ids()[k]``. They are the
        scores the run ranks by: popularity-adjusted where the run selected a gamma.

        Raises:
            ConfigError: an id the run does not know.
        """
        import torch

        from oodrec.recommend import _unknown_error, run_id_maps

        run = self.loaded(checkpoint)
        idx, unknown = run_id_maps(run).users.to_internal([str(u) for u in users])
        if unknown:
            raise _unknown_error("user", unknown, "users")
        device = torch.device(run.cfg.train.device)
        with torch.no_grad():
            return run.scorer()(torch.as_tensor(idx, device=device)).cpu()

    def item_ids(self) -> list[Any]:
        """Raw ids of the items, in the column order of :meth:`scores`."""
        import numpy as np

        from oodrec.recommend import run_id_maps

        run = self.loaded()
        return run_id_maps(run).items.to_raw(np.arange(run.dataset.num_items)).tolist()

    def evaluate(self, checkpoint: str = "best") -> dict[str, dict[str, float]]:
        """Full-ranking metrics of a checkpoint on every split the dataset has."""
        return {s: r.means for s, r in self.loaded(checkpoint).evaluate().items()}

    def export(self, out_dir: str | Path, checkpoint: str = "best") -> Any:
        """Write user and item vectors with their raw ids (``oodrec export``)."""
        from oodrec.recommend import export

        return export(self.loaded(checkpoint), out_dir)


def load_run(path: str | Path, data_dir: str | None = None, device: str | None = None) -> Run:
    """Open the run directory ``path`` (see :class:`Run`)."""
    return Run(path, data_dir=data_dir, device=device)


def load_dataset(name_or_dir: str, data_dir: str | None = None, **settings: Any) -> Any:
    """Load a dataset: a registered name (``food``, ``yelp2018``, ...), ``synthetic``, or a
    directory with split files (e.g. made by ``oodrec prepare``). ``settings`` are ``DataConfig``
    fields (``on_bad_lines="skip"``, ``verify_checksums=False``)."""
    from oodrec.config import DataConfig, from_dict
    from oodrec.data.dataset import load_dataset as _load

    data = {"dataset": str(name_or_dir), **settings}
    if data_dir is not None:
        data["data_dir"] = data_dir
    return _load(from_dict(DataConfig, data, prefix="data."))


def train(
    dataset: str | None = None,
    model: str | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    *,
    config: str | Path | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
    **settings: Any,
) -> Run:
    """Train one configuration into a run directory and return it as a :class:`Run`.

    Args:
        dataset: registered name, ``synthetic`` or a directory.
        model: method (default ``lightgcn``; see ``oodrec models``).
        sampler: negative sampler of ``lightgcn`` (see ``oodrec samplers``).
        seed: run seed.
        config: an experiment YAML to start from.
        epochs, lr, device, data_dir: as the CLI flags.
        out: parent directory of run directories (default ``runs``).
        name: run directory name.
        overwrite: replace an existing run directory.
        show_progress: a progress bar over epochs.
        **settings: any other setting by its dotted key, e.g.
            ``**{"train.batch_size": 1024, "model.num_layers": 3}``.

    Raises:
        OodrecError: an invalid setting (before anything is written), an existing run without
            ``overwrite``, or a failure while training.
    """
    from oodrec.config import ExperimentConfig, load_yaml
    from oodrec.experiment import assemble
    from oodrec.train.start import new_run

    flags = {
        "data.dataset": dataset,
        "data.data_dir": data_dir,
        "model.name": model,
        "sampler.name": sampler,
        "seed": seed,
        "train.epochs": epochs,
        "train.lr": lr,
        "train.device": device,
        "out_dir": None if out is None else str(out),
        "name": name,
    }
    given = [(k, v) for k, v in flags.items() if v is not None]
    given += list(settings.items())
    cfg = assemble(load_yaml(config) if config else ExperimentConfig(), given)
    rd, _ = new_run(cfg, overwrite=overwrite, show_progress=show_progress)
    return Run(rd.path, data_dir=data_dir)


__all__ = ["Run", "load_dataset", "load_run", "train"]
