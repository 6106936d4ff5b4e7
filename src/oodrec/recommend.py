"""Recommendations out of a trained run: top-K lists and exported vectors, in the user's own ids.

The lists come from the run's own scorer (``Method.scorer``) with the evaluator's masking
(``oodrec.eval.ranking.mask_history``) and top-K (``top_items``), through the one reload path
(``oodrec.train.reload.load_run``): the lists of a run are the lists its metrics were computed
on. ``exclude="train"`` masks what val's evaluation masks (the training items); ``"seen"`` masks
what the test splits' evaluation masks (train and val items).

Users with no training history ("cold" users) are skipped and listed in the summary: every
method here scores a user from their training history (LightGCN's embedding of such a user is
never trained), so their lists would be noise.

Output files are written in user batches (no users x items matrix is ever held) to a temporary
file beside the target, renamed into place once complete: a failed or interrupted call leaves
no half-written file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oodrec.data.csr import CSR
from oodrec.data.idmap import IdMaps, load_id_maps
from oodrec.errors import ConfigError, DataValidationError
from oodrec.eval.ranking import mask_history, top_items
from oodrec.paths import check_out_dir, mkstemp_shared
from oodrec.runs import atomic_write_text

logger = logging.getLogger(__name__)

EXCLUDE = {"train": ("train",), "seen": ("train", "val"), "none": ()}
"""``--exclude`` choice -> the splits whose items are masked."""
FORMATS = (".csv", ".parquet", ".jsonl")
"""Output formats, chosen by the file's suffix."""
COLUMNS = ("user", "rank", "item", "score")


@dataclass
class RecommendSummary:
    """What a ``recommend`` call wrote.

    Attributes:
        path: the output file (None for an in-memory table).
        requested: users asked for (every user with ``all``).
        written: users with a list in the output.
        rows: rows written.
        unknown: ids the run does not know (skipped with ``on_unknown="skip"``).
        cold: known users without training history (skipped; see the module docstring).
        short: users whose list is shorter than ``k`` (fewer rankable items).
        bad_candidates: candidate lines skipped (unknown user or item).
        exclude, k, checkpoint, epoch: how the lists were made.
        seconds: wall time.
    """

    path: Path | None
    requested: int = 0
    written: int = 0
    rows: int = 0
    unknown: list[str] = field(default_factory=list)
    cold: list[str] = field(default_factory=list)
    short: int = 0
    bad_candidates: int = 0
    exclude: str = "train"
    k: int = 20
    checkpoint: str = "best"
    epoch: int = -1
    seconds: float = 0.0


def run_id_maps(run: Any) -> IdMaps:
    """The id maps of the run's dataset (integer ids where the dataset has none)."""
    from oodrec.data.dataset import dataset_folder

    ds = run.dataset
    return load_id_maps(dataset_folder(run.cfg.data), ds.num_users, ds.num_items)


def parse_user_spec(spec: str | Sequence[Any] | None) -> list[str] | None:
    """``--users`` as raw ids: None for ``all``; a list for ``3,17,42``; the lines of a file.

    A string names a file when such a file exists, else it is a comma-separated list.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        return [str(u) for u in spec]
    if spec == "all":
        return None
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as exc:
            raise DataValidationError(
                f"--users {path}: not UTF-8 text (byte {exc.start})"
            ) from None
        ids = [line.strip() for line in lines if line.strip()]
        if not ids:
            raise ConfigError(f"--users {path}: the file lists no user id")
        return ids
    if path.is_dir():
        raise ConfigError(f"--users {spec}: is a directory; give a file with one id a line")
    ids = [u.strip() for u in spec.split(",") if u.strip()]
    if not ids:
        raise ConfigError(f"--users {spec!r}: no user id; use all, 3,17,42 or a file")
    return ids


def _unknown_error(kind: str, unknown: list[str], where: str) -> ConfigError:
    shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
    return ConfigError(
        f"{where}: {len(unknown)} {kind} id(s) the run does not know: {shown}; pass "
        f"--on-unknown skip to leave them out (they are counted)"
    )


def resolve_users(
    run: Any, maps: IdMaps, raw: list[str] | None, on_unknown: str = "error"
) -> tuple[torch.Tensor, list[str], list[str]]:
    """Internal indices of the users to list, the unknown ids and the cold users' raw ids.

    Raises:
        ConfigError: an unknown id with ``on_unknown="error"``.
    """
    train = run.dataset.train
    counts = torch.bincount(train.users, minlength=run.dataset.num_users)
    if raw is None:
        idx, unknown = np.arange(run.dataset.num_users), []
    else:
        idx, unknown = maps.users.to_internal(raw)
        if unknown and on_unknown == "error":
            raise _unknown_error("user", unknown, "--users")
    users = torch.as_tensor(idx, dtype=torch.long)
    cold_mask = counts[users] == 0
    cold = [str(x) for x in maps.users.to_raw(users[cold_mask].numpy()).tolist()]
    return users[~cold_mask], unknown, cold


def read_candidates(
    path: str | Path, run: Any, maps: IdMaps, on_unknown: str = "error"
) -> tuple[CSR, torch.Tensor, int]:
    """A ``user item`` file (one pair a line, whitespace or comma separated, extra columns
    ignored) as per-user candidate lists over internal ids, with the users it names.

    Returns:
        (candidates CSR, users [n] in file order of first appearance, skipped lines).

    Raises:
        DataValidationError: a missing file or a malformed line (named with its line number);
        ConfigError: an unknown user or item with ``on_unknown="error"``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataValidationError(f"--candidates {path}: no such file")
    users, items, unknown = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"--candidates {path}: not UTF-8 text (byte {exc.start})"
        ) from None
    for number, line in enumerate(lines, 1):
        parts = line.replace(",", " ").split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2:
            raise DataValidationError(
                f"{path}:{number}: expected 'user item', got {line.strip()!r}"
            )
        u, i = maps.users.lookup(parts[0]), maps.items.lookup(parts[1])
        if u is None or i is None:
            unknown.append(f"line {number}: " + (parts[0] if u is None else parts[1]))
            continue
        users.append(u)
        items.append(i)
    if unknown and on_unknown == "error":
        raise _unknown_error("user or item", unknown, f"--candidates {path}")
    if not users:
        raise DataValidationError(f"--candidates {path}: no user item pair the run knows")
    u = torch.as_tensor(users, dtype=torch.long)
    i = torch.as_tensor(items, dtype=torch.long)
    named = torch.unique(u)
    first = torch.full((run.dataset.num_users,), len(users), dtype=torch.long)
    first.scatter_reduce_(0, u, torch.arange(len(users)), reduce="amin")
    order = named[torch.argsort(first[named], stable=True)]  # in order of first appearance
    return CSR(u, i, run.dataset.num_users), order, len(unknown)


@torch.no_grad()
def topk_batches(
    run: Any,
    users: torch.Tensor,
    k: int,
    exclude: str = "train",
    candidates: CSR | None = None,
    batch_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Top-``k`` items of ``users``, a batch of users at a time (see the module docstring).

    Yields:
        (users [b], items [b, k'], scores [b, k']) with k' = min(k, I); an entry whose score is
        ``-inf`` is a masked or non-candidate filler, not a recommendation.
    """
    if exclude not in EXCLUDE:
        raise ConfigError(f"--exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
    device = torch.device(run.cfg.train.device)
    ds = run.dataset
    masks = [
        CSR(ds.splits[s].users, ds.splits[s].items, ds.num_users).to(device)
        for s in EXCLUDE[exclude]
    ]
    if candidates is not None:
        candidates = candidates.to(device)
    scorer = run.scorer()  # popularity-adjusted as the run's metrics were, where it was
    size = batch_size or run.cfg.eval.user_batch_size
    users = users.to(device)
    for start in range(0, users.numel(), size):
        u = users[start : start + size]
        scores = scorer(u)
        mask_history(scores, u, masks)
        if candidates is not None:
            restricted = torch.full_like(scores, -torch.inf)
            r, c = candidates.gather(u)
            restricted[r, c] = scores[r, c]
            scores = restricted
        top = top_items(scores, k)
        yield u, top, torch.gather(scores, 1, top)


def _batch_table(
    maps: IdMaps, users: torch.Tensor, top: torch.Tensor, vals: torch.Tensor
) -> tuple[Any, int, int]:
    """A pyarrow table of one batch's finite entries, its user count and short-list count."""
    import pyarrow as pa

    valid = torch.isfinite(vals)
    rank = torch.arange(1, top.shape[1] + 1).expand_as(top)
    u = users.unsqueeze(1).expand_as(top)[valid.to(users.device)].cpu().numpy()
    table = pa.table(
        {
            "user": maps.users.to_raw(u),
            "rank": rank[valid.cpu()].numpy().astype(np.int32),
            "item": maps.items.to_raw(top[valid].cpu().numpy()),
            "score": vals[valid].float().cpu().numpy(),
        }
    )
    per_user = valid.sum(1)
    return table, int((per_user > 0).sum()), int((per_user < top.shape[1]).sum())


class _AtomicWriter:
    """Writes tables to ``path`` (format by suffix) through a temporary file in its folder."""

    def __init__(self, path: Path, schema: Any) -> None:
        self.path = path
        fd, tmp = mkstemp_shared(path.parent, f".{path.name}.", ".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self.suffix = path.suffix.lower()
        self.schema = schema
        if self.suffix == ".parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self.tmp, schema)
        elif self.suffix == ".csv":
            import pyarrow.csv as pcsv

            self._writer = pcsv.CSVWriter(self.tmp, schema)
        else:
            self._writer = self.tmp.open("w", encoding="utf-8")

    def write(self, table: Any) -> None:
        if self.suffix == ".jsonl":
            # scores as their shortest float32 text (as the CSV writer prints them)
            cols = [table.column(c).to_pylist() for c in ("user", "rank", "item")]
            scores = table.column("score").to_numpy().astype(np.float32).astype(str)
            self._writer.write(
                "".join(
                    f'{{"user": {json.dumps(u, ensure_ascii=False)}, "rank": {r}, '
                    f'"item": {json.dumps(i, ensure_ascii=False)}, "score": {v}}}\n'
                    for u, r, i, v in zip(*cols, scores)
                )
            )
        else:
            self._writer.write_table(table.cast(self.schema))

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def check_output(out: str | Path) -> Path:
    """The output file ``out``, checked before any work: a known suffix, an existing folder,
    and not a directory.

    Raises:
        ConfigError: naming the path and what is wrong.
    """
    path = Path(out).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(
            f"--out {out}: unknown output format {path.suffix or '(no suffix)'!r}; use a file "
            f"ending in {', '.join(FORMATS)}"
        )
    if path.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"--out {out}: {path.parent} is a file, not a folder")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {path.parent} does not exist; create it first")
    return path


def schema_for(maps: IdMaps) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("user", pa.string() if maps.users.mapped else pa.int64()),
            ("rank", pa.int32()),
            ("item", pa.string() if maps.items.mapped else pa.int64()),
            ("score", pa.float32()),
        ]
    )


def recommend(
    run: Any,
    out: str | Path | None = None,
    *,
    users: str | Sequence[Any] | None = None,
    k: int = 20,
    exclude: str = "train",
    candidates: str | Path | None = None,
    on_unknown: str = "error",
    batch_size: int | None = None,
    checkpoint: str = "best",
) -> tuple[RecommendSummary, Any]:
    """Top-``k`` lists of ``run`` (a ``LoadedRun``), written to ``out`` or returned as a table.

    Args:
        run: the loaded run (``oodrec.train.reload.load_run``).
        out: output file (``.csv``, ``.parquet``, ``.jsonl``), or None for an in-memory table.
        users: raw user ids, a ``--users`` string, or None / ``all`` for every user.
        k: list length (>= 1).
        exclude: ``train`` (default), ``seen`` (train + val) or ``none``.
        candidates: a ``user item`` file: rank only these items, for these users.
        on_unknown: ``error`` or ``skip`` (count and leave out) unknown ids.
        batch_size: users per batch (default ``eval.user_batch_size``).
        checkpoint: the checkpoint ``run`` holds (for the summary).

    Returns:
        The summary, and the pyarrow table when ``out`` is None (else None).

    Raises:
        ConfigError: a bad setting or unknown id, before anything is written.
    """
    import pyarrow as pa

    t0 = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"--k must be an integer >= 1, got {k!r}")
    if on_unknown not in ("error", "skip"):
        raise ConfigError(f"--on-unknown must be error or skip, got {on_unknown!r}")
    if exclude not in EXCLUDE:
        raise ConfigError(f"--exclude must be one of {', '.join(EXCLUDE)}, got {exclude!r}")
    path = check_output(out) if out is not None else None
    maps = run_id_maps(run)
    summary = RecommendSummary(path, exclude=exclude, k=k, checkpoint=checkpoint, epoch=run.epoch)
    cand = None
    raw = parse_user_spec(users)
    if candidates is not None:
        cand, cand_users, summary.bad_candidates = read_candidates(
            candidates, run, maps, on_unknown
        )
        if raw is None:
            raw = [str(x) for x in maps.users.to_raw(cand_users.numpy()).tolist()]
    ids, summary.unknown, summary.cold = resolve_users(run, maps, raw, on_unknown)
    summary.requested = run.dataset.num_users if raw is None else len(raw)
    schema = schema_for(maps)
    writer = _AtomicWriter(path, schema) if path is not None else None
    tables = []
    try:
        for u, top, vals in topk_batches(run, ids, k, exclude, cand, batch_size):
            table, written, short = _batch_table(maps, u, top, vals)
            summary.written += written
            summary.short += short
            summary.rows += table.num_rows
            if writer is not None:
                writer.write(table)
            else:
                tables.append(table.cast(schema))
        if writer is not None:
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    summary.seconds = time.perf_counter() - t0
    result = None
    if writer is None:
        result = pa.concat_tables(tables) if tables else schema.empty_table()
    return summary, result


@dataclass
class ExportSummary:
    """What ``export`` wrote: the folder, the files, the score rule or why there are no
    vectors."""

    out: Path
    files: list[str]
    score: str | None
    note: str


def export(run: Any, out_dir: str | Path) -> ExportSummary:
    """Write the run's user and item vectors (``Method.representations``) with their raw ids.

    Files: ``user_embeddings.npy`` [U, d] and ``item_embeddings.npy`` [I, d] (float32, row k =
    internal index k), ``user_ids.txt`` / ``item_ids.txt`` (row k's raw id), and
    ``export.json`` (run, method, checkpoint epoch, shapes and how scores follow from the rows).
    A method without such vectors writes the id files and ``export.json`` saying why.

    Raises:
        ConfigError: ``out_dir`` is a file.
    """
    out = Path(out_dir).expanduser()
    check_out_dir(out)
    maps = run_id_maps(run)
    with torch.no_grad():
        reps = run.method.representations()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, side, size in (
        ("user_ids.txt", maps.users, run.dataset.num_users),
        ("item_ids.txt", maps.items, run.dataset.num_items),
    ):
        text = "\n".join(str(x) for x in side.to_raw(np.arange(size)).tolist()) + "\n"
        atomic_write_text(out / name, text)
        files.append(name)
    info: dict[str, Any] = {
        "run": str(run.path),
        "method": run.cfg.method_label(),
        "checkpoint_epoch": run.epoch,
        "num_users": run.dataset.num_users,
        "num_items": run.dataset.num_items,
    }
    if reps is None:
        note = type(run.method).unscored_reason or "the method has no per-user vectors"
        info.update(score=None, note=f"no vectors exported: {note}")
    else:
        for name, tensor in (
            ("user_embeddings.npy", reps.users),
            ("item_embeddings.npy", reps.items),
        ):
            _save_npy(out / name, tensor.detach().float().cpu().numpy())
            files.append(name)
        info.update(
            score=reps.score,
            dim=int(reps.users.shape[1]),
            note=f"scores are the {reps.score} of a user row and an item row",
        )
        if run.gamma:
            # the run ranks by popularity-adjusted scores: the item offsets travel with them
            from oodrec.eval.evaluate import popularity_offsets

            offsets = run.gamma * popularity_offsets(run.dataset.item_degree())
            _save_npy(out / "item_offsets.npy", offsets.numpy().astype(np.float32))
            files.append("item_offsets.npy")
            info["gamma"] = run.gamma
            info["note"] += (
                f", minus item_offsets.npy (gamma={run.gamma:g} times log(1 + the item's "
                "training degree)), as the run ranks"
            )
    atomic_write_text(out / "export.json", json.dumps(info, indent=2) + "\n")
    files.append("export.json")
    return ExportSummary(out, files, info.get("score"), info["note"])


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file renamed into place (mode: 0666 less the umask)."""
    fd, tmp = mkstemp_shared(path.parent, f".{path.name}.", ".tmp")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


__all__ = [
    "EXCLUDE",
    "FORMATS",
    "ExportSummary",
    "RecommendSummary",
    "check_output",
    "export",
    "parse_user_spec",
    "read_candidates",
    "recommend",
    "resolve_users",
    "topk_batches",
]
