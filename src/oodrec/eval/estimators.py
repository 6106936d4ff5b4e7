"""OOD-aware selection estimators, computed on val only.

Plain val metrics reward fitting the biased distribution the training data was drawn from. Two
estimators re-weight the same val ranking towards what a shifted test distribution rewards:

* **IPS** (``ips_recall@K``, ``ips_ndcg@K``): each val interaction ``(u, i)`` is weighted by
  ``w_i = min(((d_max + 1) / (d_i + 1)) ** gamma, clip)``, with ``d_i`` the item's training
  degree, i.e. ``1 / p(i) ** gamma`` for the add-one popularity ``p(i)``, rescaled so that the most
  popular item weighs 1, and clipped at ``clip``. Per user, the self-normalised estimate is

  - ``ips_recall@K(u) = sum_{i in T_u, rank_i <= K} w_i / sum_{i in T_u} w_i``;
  - ``ips_ndcg@K(u) = sum_{i in T_u, rank_i <= K} w_i / log2(rank_i + 1) / IDCG_w(u)``, with
    ``IDCG_w(u)`` the DCG of ``T_u`` ranked by decreasing weight (its ``min(K, |T_u|)`` heaviest).

  The reported value is the mean over val users, as for plain metrics. With ``gamma = 0`` both
  equal plain Recall@K and NDCG@K.
* **Popularity-stratified** (``strat_recall@K``, ``strat_ndcg@K``): items are cut into
  ``strata`` buckets of equal training-interaction mass (by increasing degree). For each bucket,
  Recall@K / NDCG@K are computed with only the bucket's val items as relevant, averaged over the
  users that have val items in the bucket; the estimate is the mean over non-empty buckets, so
  the rare items' bucket counts as much as the head's.

Only the val split is scored by these estimators: selection never touches the test sets.
"""

from __future__ import annotations

import torch

from oodrec.data.csr import CSR
from oodrec.eval.metrics import _discounts


def ips_weights(item_degree: torch.Tensor, gamma: float, clip: float) -> torch.Tensor:
    """Inverse-popularity weights ``min(((d_max + 1) / (d + 1)) ** gamma, clip)``.

    Shapes:
        item_degree: [I] -> [I] float64, in ``[1, clip]``.
    """
    d = item_degree.to(torch.float64)
    if d.numel() == 0:
        return d
    return ((d.max() + 1.0) / (d + 1.0)).pow(gamma).clamp(max=clip)


def equal_mass_buckets(item_degree: torch.Tensor, strata: int) -> torch.Tensor:
    """Bucket of every item: ``strata`` groups of (about) equal training-interaction mass.

    Items are sorted by increasing degree (stable, ties by id); an item falls in the bucket of
    the midpoint of its interaction mass, ``floor(G * (mass_before + d / 2) / total)``, so a
    head item heavier than a bucket is not pulled into the bucket below. Bucket 0 holds the
    least popular items (and every item without training interactions).

    Shapes:
        item_degree: [I] -> [I] long in ``[0, strata)``.
    """
    if strata < 1:
        raise ValueError(f"strata must be >= 1, got {strata}")
    d = item_degree.to(torch.float64)
    total = float(d.sum())
    order = torch.argsort(item_degree, stable=True)
    mid = torch.cumsum(d[order], 0) - d[order] / 2  # mass midpoint of each item, sorted
    sorted_bucket = torch.zeros_like(order)
    if total > 0:
        sorted_bucket = (mid * strata / total).floor().long().clamp_(0, strata - 1)
    out = torch.empty_like(order)
    out[order] = sorted_bucket
    return out


class ValEstimators:
    """Accumulates the IPS and stratified estimators over the evaluator's user batches.

    Per-user denominators (``sum w``, weighted ideal DCGs, per-bucket counts) are computed once,
    vectorised over all val entries.

    Args:
        truth: the val split's CSR.
        item_degree: training degree of every item. Shape [I].
        ks: cut-offs.
        gamma: IPS exponent; clip: largest weight; strata: number of equal-mass buckets.
    """

    def __init__(
        self,
        truth: CSR,
        item_degree: torch.Tensor,
        ks: tuple[int, ...],
        gamma: float,
        clip: float,
        strata: int,
    ) -> None:
        device = truth.indptr.device
        self.ks, self.strata = ks, strata
        self.weight = ips_weights(item_degree, gamma, clip).to(device)  # [I]
        self.bucket = equal_mass_buckets(item_degree, strata).to(device)  # [I]
        num_users = truth.num_users
        users = torch.arange(num_users, device=device)
        rows, items = truth.gather(users)  # [M]
        w = self.weight[items]
        self.w_sum = torch.zeros(num_users, dtype=torch.float64, device=device)
        self.w_sum.index_add_(0, rows, w)
        # weighted ideal DCG: each user's entries by decreasing weight, position within the user
        order = torch.argsort(-w, stable=True)
        order = order[torch.argsort(rows[order], stable=True)]
        pos = torch.arange(rows.numel(), device=device) - truth.indptr[rows[order]]
        k_max = max(ks)
        disc = _discounts(k_max, device)
        self.idcg_w: dict[int, torch.Tensor] = {}
        for k in ks:
            keep = pos < k
            vals = w[order][keep] * disc[pos[keep]]
            idcg = torch.zeros(num_users, dtype=torch.float64, device=device)
            self.idcg_w[k] = idcg.index_add_(0, rows[order][keep], vals)
        self.bucket_count = torch.zeros(num_users, strata, dtype=torch.long, device=device)
        self.bucket_count.index_put_(
            (rows, self.bucket[items]), torch.ones_like(rows), accumulate=True
        )
        self.idcg_table = torch.cat(
            [torch.zeros(1, dtype=torch.float64, device=device), disc.cumsum(0)]
        )
        self.disc = disc
        self.reset()

    def reset(self) -> None:
        """Forget the accumulated stratified sums (call before each evaluation)."""
        zeros = torch.zeros(self.strata, dtype=torch.float64, device=self.weight.device)
        self._strat = {f"strat_{m}@{k}": zeros.clone() for m in ("recall", "ndcg") for k in self.ks}
        self._strat_users = zeros.clone()

    def update(self, users: torch.Tensor, top: torch.Tensor, hits: torch.Tensor) -> dict:
        """Per-user IPS values of one batch; accumulates the stratified sums.

        Shapes:
            users: [n] (each with >= 1 val item); top: [n, k_max] item ids; hits: [n, k_max].
            returns: ``{"ips_recall@k": [n], "ips_ndcg@k": [n]}`` float64.
        """
        hit = hits.to(torch.float64)
        k_max = hit.shape[1]
        disc = self.disc[:k_max]
        wt = self.weight[top] * hit  # [n, k]
        out: dict[str, torch.Tensor] = {}
        for k in self.ks:
            kk = min(k, k_max)
            out[f"ips_recall@{k}"] = wt[:, :kk].sum(1) / self.w_sum[users]
            out[f"ips_ndcg@{k}"] = (wt[:, :kk] * disc[:kk]).sum(1) / self.idcg_w[k][users]
        g = torch.arange(self.strata, device=top.device)
        in_g = (self.bucket[top].unsqueeze(-1) == g) & hits.unsqueeze(-1)  # [n, k, G]
        in_g = in_g.to(torch.float64)
        count = self.bucket_count[users]  # [n, G]
        has = count > 0
        self._strat_users += has.sum(0).to(torch.float64)
        for k in self.ks:
            kk = min(k, k_max)
            n_hit = in_g[:, :kk].sum(1)  # [n, G]
            recall = torch.where(has, n_hit / count.clamp(min=1), 0.0)
            dcg = (in_g[:, :kk] * disc[:kk, None]).sum(1)
            idcg = self.idcg_table[count.clamp(max=kk)]
            ndcg = torch.where(has, dcg / idcg.clamp(min=1e-300), 0.0)
            self._strat[f"strat_recall@{k}"] += recall.sum(0)
            self._strat[f"strat_ndcg@{k}"] += ndcg.sum(0)
        return out

    def strat_means(self) -> dict[str, float]:
        """Mean over non-empty buckets of the per-bucket user means."""
        nonempty = self._strat_users > 0
        if not bool(nonempty.any()):
            return {k: 0.0 for k in self._strat}
        return {
            k: float((v[nonempty] / self._strat_users[nonempty]).mean())
            for k, v in self._strat.items()
        }


def describe_estimator(metric: str, ecfg: object) -> str | None:
    """Words for a selection metric that is an estimator (None for a plain metric)."""
    if metric.startswith("ips_"):
        return f"IPS-weighted {metric[4:]} (gamma={ecfg.ips_gamma:g}, clip={ecfg.ips_clip:g})"  # type: ignore[attr-defined]
    if metric.startswith("strat_"):
        return f"popularity-stratified {metric[6:]} ({ecfg.strata} equal-mass buckets)"  # type: ignore[attr-defined]
    return None
