"""Per-user item lists in CSR form: the one structure that training, evaluation and the
methods use to look up whose items are whose."""

from __future__ import annotations

import torch


class CSR:
    """Per-user item lists in CSR form (rows = users).

    Shapes:
        indptr: [U+1]; indices: [N] (item ids, grouped by user).
    """

    def __init__(self, users: torch.Tensor, items: torch.Tensor, num_users: int) -> None:
        width = int(items.max()) + 1 if items.numel() else 1
        order = torch.argsort(users * width + items)
        self.indices = items[order]
        counts = torch.bincount(users, minlength=num_users)
        self.indptr = torch.zeros(num_users + 1, dtype=torch.long, device=users.device)
        self.indptr[1:] = counts.cumsum(0)
        self.num_users = num_users
        self._keys: tuple[int, torch.Tensor] | None = None  # (num_cols, sorted pair keys)

    def to(self, device: torch.device | str) -> CSR:
        self.indices = self.indices.to(device)
        self.indptr = self.indptr.to(device)
        if self._keys is not None:
            self._keys = (self._keys[0], self._keys[1].to(device))
        return self

    def keys(self, num_cols: int) -> torch.Tensor:
        """Sorted keys ``user * num_cols + item`` of all entries, built once per ``num_cols``.

        Shapes:
            returns: [N] long, ascending.
        """
        if self._keys is None or self._keys[0] != num_cols:
            rows = torch.repeat_interleave(
                torch.arange(self.num_users, device=self.indptr.device), self.counts()
            )
            keys = rows * num_cols + self.indices.to(torch.long)
            self._keys = (num_cols, torch.sort(keys).values)
        return self._keys[1]

    def contains(self, rows: torch.Tensor, cols: torch.Tensor, num_cols: int) -> torch.Tensor:
        """Whether item ``cols[b, j]`` is an entry of user ``rows[b]``; O(B k log N).

        Shapes:
            rows: [B]; cols: [B, k] (ids in ``[0, num_cols)``) -> [B, k] bool.
        """
        keys = self.keys(num_cols)
        if keys.numel() == 0:
            return torch.zeros(cols.shape, dtype=torch.bool, device=cols.device)
        query = rows.to(torch.long).unsqueeze(1) * num_cols + cols  # [B, k]
        pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
        return keys[pos] == query

    def counts(self) -> torch.Tensor:
        """Items per user. Shape [U]."""
        return self.indptr[1:] - self.indptr[:-1]

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row positions and item ids of the entries of ``rows``.

        Shapes:
            rows: [B] -> (row_pos [M], items [M]) with row_pos indexing into ``rows``.
        """
        starts = self.indptr[rows]
        lens = self.indptr[rows + 1] - starts
        total = int(lens.sum())
        row_pos = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), lens)
        first = torch.repeat_interleave(starts - (lens.cumsum(0) - lens), lens)
        idx = first + torch.arange(total, device=rows.device)
        return row_pos, self.indices[idx]

    def dense(self, rows: torch.Tensor, num_cols: int) -> torch.Tensor:
        """Boolean indicator [B, num_cols] of the items of ``rows``."""
        out = torch.zeros(rows.numel(), num_cols, dtype=torch.bool, device=rows.device)
        r, c = self.gather(rows)
        out[r, c] = True
        return out


__all__ = ["CSR"]
