"""The user's own ids: translating between raw ids and the internal indices a run uses.

``oodrec prepare`` renumbers users and items to ``0..n-1`` and writes ``user_ids.txt`` and
``item_ids.txt`` into the dataset directory: line ``k`` holds the raw id (the original token,
exactly as read) of internal index ``k``. Where a directory has these files, every output
(``oodrec recommend``, ``oodrec export``, the Python API) names users and items by their raw
ids, and every input (``--users``, ``--candidates``) is read in raw ids. Directories without them
(the shipped datasets) use their integer ids as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oodrec.errors import DataValidationError

USER_IDS = "user_ids.txt"
ITEM_IDS = "item_ids.txt"


def _read_tokens(path: Path, expected: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if len(tokens) != expected:
        raise DataValidationError(
            f"{path}: {len(tokens)} id(s), but the dataset has {expected}; the id map does not "
            f"belong to this dataset (prepare it again with `oodrec prepare`)"
        )
    seen: dict[str, int] = {}
    for line, token in enumerate(tokens, 1):
        if token in seen:
            raise DataValidationError(
                f"{path}:{line}: id {token!r} repeats line {seen[token] + 1}; an id map lists "
                f"each raw id once"
            )
        seen[token] = line - 1
    return tokens


@dataclass
class Side:
    """The raw ids of one side (users or items).

    Attributes:
        kind: ``user`` or ``item`` (for messages).
        size: number of internal indices.
        tokens: raw id of each internal index, or None (the ids are the integers themselves).
    """

    kind: str
    size: int
    tokens: list[str] | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.tokens is not None:
            self._index = {t: i for i, t in enumerate(self.tokens)}

    def lookup(self, raw: str | int) -> int | None:
        """The internal index of raw id ``raw``, or None when the run does not know it."""
        if self.tokens is not None:
            return self._index.get(str(raw))
        try:
            value = int(str(raw).strip())
        except ValueError:
            return None
        return value if 0 <= value < self.size and str(raw).strip() == str(value) else None

    def to_internal(self, raws: Sequence[str | int]) -> tuple[np.ndarray, list[str]]:
        """Internal indices of ``raws`` (in order, unknown ones left out) and the unknown ids.

        Shapes:
            returns: ([n] int64, unknown ids as given).
        """
        found, unknown = [], []
        for raw in raws:
            idx = self.lookup(raw)
            if idx is None:
                unknown.append(str(raw))
            else:
                found.append(idx)
        return np.asarray(found, dtype=np.int64), unknown

    def to_raw(self, idx: np.ndarray) -> np.ndarray:
        """Raw ids of internal indices ``idx``: strings where a map exists, else the integers."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.tokens is None:
            return idx
        return np.asarray(self.tokens, dtype=object)[idx]

    @property
    def mapped(self) -> bool:
        return self.tokens is not None


@dataclass
class IdMaps:
    """Raw ids of a dataset's users and items (see the module docstring).

    Attributes:
        users, items: the two sides.
        source: the directory the maps came from (None: integer ids).
    """

    users: Side
    items: Side
    source: Path | None = None

    @property
    def mapped(self) -> bool:
        return self.users.mapped or self.items.mapped


def load_id_maps(folder: Path | None, num_users: int, num_items: int) -> IdMaps:
    """The id maps of the dataset in ``folder`` (integer ids where a file is absent).

    Raises:
        DataValidationError: a map whose length differs from the dataset's, a repeated id, or
            a file that is not UTF-8; the message names the file (and line).
    """
    sides = {}
    for kind, name, size in (("user", USER_IDS, num_users), ("item", ITEM_IDS, num_items)):
        path = folder / name if folder is not None else None
        tokens = _read_tokens(path, size) if path is not None and path.is_file() else None
        sides[kind] = Side(kind, size, tokens)
    mapped = any(s.tokens is not None for s in sides.values())
    return IdMaps(sides["user"], sides["item"], folder if mapped else None)


__all__ = ["ITEM_IDS", "USER_IDS", "IdMaps", "Side", "load_id_maps"]
