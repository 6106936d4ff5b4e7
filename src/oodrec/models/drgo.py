"""Pieces of DRGO (Zhao et al., WWW 2025), our reconstruction (docs/methods/drgo.md).

Node ids: users ``0..U-1``, items ``U..U+I-1`` (N = U + I). Everything is vectorised torch:

- ``user_groups``: the DRO groups, k-means (``kmeans``) on a truncated SVD of the training
  matrix (``truncated_svd_rows``); a training pair belongs to its user's group;
- ``approx_betweenness``, ``nominal_nodes``: the nominal set P0, the nodes of highest
  (sampled-source) betweenness centrality of the training graph;
- ``sinkhorn_divergence``: a batched log-domain Sinkhorn divergence with epsilon scaling;
- ``group_means``, ``update_ema``, ``entropic_weights``, ``exponentiated_weights``: the group
  losses and the group-DRO weights;
- ``group_point_sets``: each group's batch users as a padded point set.
"""

from __future__ import annotations

import math
import warnings

import torch


def _binary_csr(rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int], dtype):
    vals = torch.ones(rows.numel(), dtype=dtype, device=rows.device)
    coo = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), vals, shape, check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        out = coo.to_sparse_csr()
    return out


def truncated_svd_rows(
    users: torch.Tensor,
    items: torch.Tensor,
    num_users: int,
    num_items: int,
    rank: int,
    gen: torch.Generator,
    power_iters: int = 4,
    oversample: int = 10,
) -> torch.Tensor:
    """Rows of U_r S_r for the binary U x I training matrix (scikit-learn ``TruncatedSVD``'s
    ``fit_transform``), by a randomized range finder with power iterations drawn from ``gen``.

    Shapes: users, items [E] -> [U, min(rank, U, I)].
    """
    rank = min(rank, num_users, num_items)
    a = _binary_csr(users, items, (num_users, num_items), torch.float64)
    at = _binary_csr(items, users, (num_items, num_users), torch.float64)
    q_cols = min(rank + oversample, num_users, num_items)
    omega = torch.randn(num_items, q_cols, generator=gen, device=users.device, dtype=torch.float64)
    q = torch.linalg.qr(a @ omega).Q  # [U, q]
    for _ in range(power_iters):
        q = torch.linalg.qr(a @ torch.linalg.qr(at @ q).Q).Q
    b = (at @ q).T  # [q, I] = Q^T A
    ub, s, _ = torch.linalg.svd(b, full_matrices=False)
    return ((q @ ub[:, :rank]) * s[:rank]).float()


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, iters: int = 100) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding drawn from ``gen``; an empty cluster keeps its
    centre. Stops early when the assignment no longer changes.

    Shapes: x [n, d] -> labels [n] long in ``0..k-1``.
    """
    n = x.shape[0]
    k = min(k, n)
    first = torch.randint(n, (1,), generator=gen, device=x.device)
    centres = x[first]
    for _ in range(1, k):  # k-means++: next centre with probability ~ squared distance
        d2 = torch.cdist(x, centres).pow(2).min(1).values
        probs = d2 if bool(d2.sum() > 0) else torch.ones_like(d2)
        nxt = torch.multinomial(probs, 1, generator=gen)
        centres = torch.cat([centres, x[nxt]])
    labels = torch.cdist(x, centres).argmin(1)
    for _ in range(iters):
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        new = torch.cdist(x, centres).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def user_groups(
    users: torch.Tensor,
    items: torch.Tensor,
    num_users: int,
    num_items: int,
    k: int,
    rank: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """DRO group of every user: k-means on the truncated-SVD rows of the training matrix.

    Shapes: users, items [E] -> [U] long.
    """
    return kmeans(truncated_svd_rows(users, items, num_users, num_items, rank, gen), k, gen)


def approx_betweenness(
    users: torch.Tensor,
    items: torch.Tensor,
    num_users: int,
    num_items: int,
    sources: torch.Tensor,
) -> torch.Tensor:
    """Betweenness centrality of every node of the undirected user-item graph, summed over the
    given BFS sources (Brandes' accumulation; networkx ``betweenness_centrality(k=...)`` up to a
    constant factor). All sources run at once: each BFS level is one sparse product.

    Shapes: users, items [E]; sources [k] node ids -> [N] float64 (sum over ordered pairs
    (s, t) with s a source, of the share of shortest s-t paths through the node).
    """
    n = num_users + num_items
    rows = torch.cat([users, items + num_users])
    cols = torch.cat([items + num_users, users])
    adj = _binary_csr(rows, cols, (n, n), torch.float64)
    k, dev = sources.numel(), users.device
    cols_k = torch.arange(k, device=dev)
    dist = torch.full((n, k), -1, dtype=torch.long, device=dev)
    dist[sources, cols_k] = 0
    sigma = torch.zeros(n, k, dtype=torch.float64, device=dev)
    sigma[sources, cols_k] = 1.0
    frontier, depth = sigma.clone(), 0
    while bool(frontier.any()):  # one iteration per BFS level
        reach = adj @ frontier  # paths into each node from the current level
        new = (reach > 0) & (dist < 0)
        depth += 1
        dist[new] = depth
        frontier = torch.where(new, reach, torch.zeros_like(reach))
        sigma += frontier
    delta = torch.zeros_like(sigma)
    for level in range(depth, 0, -1):
        coeff = torch.where(dist == level, (1.0 + delta) / sigma.clamp_min(1.0), 0.0)
        back = adj @ coeff
        delta += torch.where(dist == level - 1, sigma * back, 0.0)
    delta[sources, cols_k] = 0.0
    return delta.sum(1)


def nominal_nodes(centrality: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``ceil(fraction * N)`` nodes of highest centrality (ties: lower id first).

    Shapes: centrality [N] -> [m] long, by decreasing centrality.
    """
    m = max(1, math.ceil(fraction * centrality.numel()))
    order = torch.sort(centrality, descending=True, stable=True).indices
    return order[:m]


def group_means(
    losses: torch.Tensor, groups: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss of each group in the batch, and which groups are present (empty: mean 0).

    Shapes: losses [B], groups [B] long -> means [k], present [k] bool.
    """
    sums = torch.zeros(k, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
    counts = torch.zeros(k, dtype=torch.long, device=groups.device)
    counts.index_add_(0, groups, torch.ones_like(groups))  # bincount's counts, no size read
    return sums / counts.clamp_min(1).to(losses.dtype), counts > 0


def update_ema(
    ema: torch.Tensor, values: torch.Tensor, present: torch.Tensor, rate: float
) -> torch.Tensor:
    """(1 - rate) ema + rate value for the present groups; absent groups keep theirs.

    Shapes: all [k] -> [k].
    """
    return torch.where(present, (1.0 - rate) * ema + rate * values, ema)


def entropic_weights(adversary: torch.Tensor, present: torch.Tensor, beta: float) -> torch.Tensor:
    """argmax_w sum_g w_g a_g + beta H(w) over the simplex of the present groups:
    softmax(a / beta) on the present groups, 0 elsewhere.

    Shapes: adversary [k], present [k] bool -> [k].
    """
    logits = torch.where(present, adversary / beta, torch.full_like(adversary, -math.inf))
    return torch.softmax(logits, 0)


def exponentiated_weights(
    weights: torch.Tensor, adversary: torch.Tensor, step_size: float
) -> torch.Tensor:
    """One exponentiated-gradient step w <- w exp(eta a), renormalised to sum 1 (the released
    code's streaming group-DRO update).

    Shapes: weights, adversary [k] -> [k].
    """
    w = weights * torch.exp(step_size * adversary)
    return w / w.sum()


def group_point_sets(
    users: torch.Tensor, groups: torch.Tensor, k: int, cap: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's distinct batch users, at most ``cap`` of them (a uniform subset drawn from
    ``gen``), as a padded table.

    Shapes: users [B], groups [U] long -> ids [k, n] long (padding 0), mask [k, n] bool, with
    n = min(cap, largest group's count); a group without users has an all-False row.
    """
    uniq = torch.unique(users)
    uniq = uniq[torch.randperm(uniq.numel(), generator=gen, device=uniq.device)]
    g = groups[uniq]
    order = torch.sort(g, stable=True).indices
    uniq, g = uniq[order], g[order]
    counts = torch.bincount(g, minlength=k)
    rank = torch.arange(g.numel(), device=g.device) - (counts.cumsum(0) - counts)[g]
    keep = rank < cap
    width = max(1, min(cap, int(counts.max())))
    ids = torch.zeros(k, width, dtype=torch.long, device=users.device)
    mask = torch.zeros(k, width, dtype=torch.bool, device=users.device)
    ids[g[keep], rank[keep]] = uniq[keep]
    mask[g[keep], rank[keep]] = True
    return ids, mask


def group_point_sets_fixed(
    users: torch.Tensor,
    groups: torch.Tensor,
    k: int,
    cap: int,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``group_point_sets`` at a fixed width ``cap`` (``train.sync_free``): every user gets a
    random key, the batch's users sort first within their group by key, and the first ``cap``
    of each group are kept; no ``unique``, count or mask size is read on the host. Another
    random stream than ``group_point_sets``, the same distribution of subsets.

    Shapes: users [B], groups [U] long -> ids [k, cap] long (padding 0), mask [k, cap] bool.
    """
    num, dev = groups.numel(), groups.device
    present = torch.zeros(num, dtype=torch.bool, device=dev).index_fill_(0, users, True)
    key = torch.rand(num, generator=gen, device=dev)
    key = torch.where(present, key, torch.full_like(key, 2.0))  # absent users sort last
    order = torch.argsort(key)
    order = order[torch.argsort(groups[order], stable=True)]  # by group, then by key
    g = groups[order]
    per_group = torch.zeros(k, dtype=torch.long, device=dev).index_add_(
        0, groups, torch.ones_like(groups)
    )
    rank = torch.arange(num, device=dev) - (per_group.cumsum(0) - per_group)[g]
    keep = present[order] & (rank < cap)
    col = torch.where(keep, rank, torch.full_like(rank, cap))  # the rest: a spare column
    ids = torch.zeros(k, cap + 1, dtype=torch.long, device=dev).index_put_((g, col), order)
    mask = torch.zeros(k, cap + 1, dtype=torch.bool, device=dev).index_put_((g, col), keep)
    return ids[:, :cap], mask[:, :cap]


SYNC_FREE_EPS_STEPS = 24
"""Epsilon-scaling steps of ``sinkhorn_divergence(fixed=True)``: the schedule cannot depend on
the data's diameter (a host read), so it runs this many, each ``max(diameter^p scaling^(p j),
blur^p)`` (enough to anneal a diameter of blur / scaling^24 = 8e5 blur at scaling 0.5)."""


def _cost(x: torch.Tensor, y: torch.Tensor, p: int) -> torch.Tensor:
    """geomloss's ground cost: |x - y| for p = 1, |x - y|^2 / 2 for p = 2. [G, n, m]."""
    if p == 1:
        return torch.cdist(x, y)
    return torch.cdist(x, y).pow(2) / 2


def _entropic_ot(
    cost: torch.Tensor,
    a_log: torch.Tensor,
    b_log: torch.Tensor,
    eps_list: list[float] | list[torch.Tensor],
) -> torch.Tensor:
    """Dual value <a, f> + <b, g> of entropic OT after alternating log-domain updates along
    ``eps_list`` (the last update makes the b-marginal exact, so this is the dual objective).

    Shapes: cost [G, n, m], a_log [G, n], b_log [G, m] (-inf: padding) -> [G].
    """
    f = torch.zeros_like(a_log)
    g = torch.zeros_like(b_log)
    for eps in eps_list:
        f = -eps * torch.logsumexp(b_log.unsqueeze(1) + (g.unsqueeze(1) - cost) / eps, dim=2)
        g = -eps * torch.logsumexp(a_log.unsqueeze(2) + (f.unsqueeze(2) - cost) / eps, dim=1)
    a, b = a_log.exp(), b_log.exp()
    return (a * f).sum(1) + (b * g).sum(1)


def sinkhorn_divergence(
    x: torch.Tensor,
    x_mask: torch.Tensor,
    y: torch.Tensor,
    blur: float = 0.05,
    p: int = 1,
    scaling: float = 0.5,
    fixed: bool = False,
) -> torch.Tensor:
    """Debiased Sinkhorn divergence OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2 between each uniform
    point set x[g] (its masked rows) and the uniform point set y, with entropic blur
    eps = blur^p annealed from the data diameter by factors of ``scaling`` (as geomloss's
    ``SamplesLoss("sinkhorn", p, blur, scaling)``). Rows of x whose mask is all False give 0.

    With ``fixed`` (``train.sync_free``), the diameter stays on the device and the schedule has
    ``SYNC_FREE_EPS_STEPS`` steps (the later ones at blur^p when the diameter is small).

    Shapes: x [G, n, D], x_mask [G, n] bool, y [m, D] -> [G].
    """
    empty = ~x_mask.any(1)
    x_mask = x_mask | (empty.unsqueeze(1) & (torch.arange(x.shape[1], device=x.device) == 0))
    counts = x_mask.sum(1, keepdim=True).to(x.dtype)
    a_log = torch.where(x_mask, -counts.log(), torch.full_like(counts, -math.inf))
    b_log = torch.full((1, y.shape[0]), -math.log(y.shape[0]), dtype=y.dtype, device=y.device)
    if fixed:
        inside = x_mask.unsqueeze(2)
        top = torch.maximum(torch.where(inside, x, -math.inf).amax((0, 1)), y.amax(0))
        low = torch.minimum(torch.where(inside, x, math.inf).amin((0, 1)), y.amin(0))
        diam = (top - low).norm().clamp_min(blur)
        eps_list = [
            (diam * scaling**j).clamp_min(blur) ** p for j in range(SYNC_FREE_EPS_STEPS)
        ] + [blur**p]
    else:
        pts = torch.cat([x[x_mask], y])
        diameter = float((pts.max(0).values - pts.min(0).values).norm())
        eps_list = [max(diameter, blur) ** p]
        if diameter > blur:
            steps = torch.arange(p * math.log(diameter), p * math.log(blur), p * math.log(scaling))
            eps_list += [math.exp(float(e)) for e in steps]
        eps_list.append(blur**p)
    y1 = y.unsqueeze(0)
    ab = _entropic_ot(_cost(x, y1, p), a_log, b_log.expand(x.shape[0], -1), eps_list)
    aa = _entropic_ot(_cost(x, x, p), a_log, a_log, eps_list)
    bb = _entropic_ot(_cost(y1, y1, p), b_log, b_log, eps_list)
    out = ab - aa / 2 - bb / 2
    return torch.where(empty, torch.zeros_like(out), out)
