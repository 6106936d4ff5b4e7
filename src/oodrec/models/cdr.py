"""Network and loss pieces of CDR (Wang et al., TOIS 2023), docs/methods/cdr.md.

Notation: T environments (chronological slices of each user's history), I items, a / K latent
sizes of the user state a_t and the preference state z_t, C clusters of the causal graph.

- ``chronological_slices``: each training pair's environment (per-user equal-count chunks in
  time order, the last chunk taking the remainder);
- ``CDRNetwork``: encoder q(a_t | x_t), transition q(z_t | a_t, sg(z_{t-1})) and the decoder
  through the sparse cluster-level graph (W_CK, W_CD), rolled over the slices;
- ``multinomial_nll``, ``gaussian_kl``, ``kl_weight``: the per-environment ELBO and its
  annealed KL weight;
- ``gradient_variance_penalty``: sum_t ||g_t - mean_t g_t||^2 of per-environment gradients;
- ``normal_cdf_penalty``: the sparsity term sum Phi(W / sigma).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from oodrec.diffusion.denoiser import _xavier_normal_, keep_mask


def chronological_slices(
    users: torch.Tensor,
    items: torch.Tensor,
    timestamps: torch.Tensor | None,
    num_slices: int,
    num_users: int,
) -> torch.Tensor:
    """Environment of every training pair: each user's history, in time order, cut into
    ``num_slices`` chunks of ``n // num_slices`` pairs, the last chunk taking the remainder
    (so a user with fewer pairs than slices has them all in the last one), as the official
    ``gen_env_tr``.

    Time ties are broken by item id, never by file order. Without timestamps only one slice
    exists (file order is not time).

    Args:
        users, items: the training pairs.
        timestamps: their times, or None.
        num_slices: S >= 1.
        num_users: U.

    Returns:
        The slice of each pair, in ``[0, S)``.

    Shapes:
        users, items, timestamps: [N] -> [N] long.
    """
    if timestamps is None:
        if num_slices != 1:
            raise ValueError(f"{num_slices} chronological slices need timestamps; got none")
        return torch.zeros_like(users)
    # lexicographic (user, time, item) order from stable sorts, least significant key first
    order = torch.sort(items, stable=True).indices
    order = order[torch.sort(timestamps[order], stable=True).indices]
    order = order[torch.sort(users[order], stable=True).indices]
    counts = torch.bincount(users, minlength=num_users)  # [U]
    starts = counts.cumsum(0) - counts
    u = users[order]
    rank = torch.arange(users.numel(), device=users.device) - starts[u]  # position in history
    chunk = counts[u] // num_slices
    last = torch.full_like(rank, num_slices - 1)
    sl = torch.where(chunk > 0, torch.minimum(rank // chunk.clamp_min(1), last), last)
    out = torch.empty_like(users)
    out[order] = sl
    return out


class SliceOutput(NamedTuple):
    """One environment's pass. Shapes: logits [B, I]; mu, logvar [B, a]; z [B, K]."""

    logits: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor


def _mlp(dims: Sequence[int], gen: torch.Generator | None) -> nn.ModuleList:
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    for layer in layers:  # the official init: N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2)
        _xavier_normal_(layer, gen)
    return layers


def _run(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    """tanh between layers, none after the last."""
    for i, layer in enumerate(layers):
        h = layer(h)
        if i != len(layers) - 1:
            h = torch.tanh(h)
    return h


class CDRNetwork(nn.Module):
    """CDR's temporal VAE with the sparse cluster-level causal graph (docs/methods/cdr.md).

    Per slice t, with z_0 = 0:

    - a_t ~ q(a | x_t): L2-normalise x_t, dropout, tanh MLP -> (mu, logvar); reparameterise
      with noise scale ``std``; BatchNorm if ``batch_norm``;
    - z_t ~ q(z | a_t, sg(z_{t-1})): tanh MLP on the concatenation -> (mu_z, logvar_z);
    - W~ = softmax_C(clamp(W + sigma * eps, 0, 1) / tau) for W_CK [C, K] and W_CD [C, I]
      (eps only while training);
    - logits_t = sum_c MLP_p2(z_t * W~_CK[c]) * W~_CD[c] / tau.

    In eval mode the noise is off (a_t = mu, z_t = mu_z, no dropout, no W noise).

    Args:
        num_items: I.
        encoder_dims, transition_dims, decoder_dims: hidden widths of q, p1 and p2.
        a_dim, z_dim: latent sizes a and K.
        num_clusters: C.
        tau: softmax temperature of the graph weights.
        sigma: scale of the training noise on W_CK and W_CD.
        std: scale of the reparameterisation noise.
        dropout: input dropout of the encoder.
        batch_norm: BatchNorm on a_t.
        w_sigma: W_CK, W_CD start as clamp(N(0.5, w_sigma^2), 0, 1).
        generator: RNG for the initialisation.
    """

    def __init__(
        self,
        num_items: int,
        encoder_dims: Sequence[int],
        transition_dims: Sequence[int],
        decoder_dims: Sequence[int],
        a_dim: int,
        z_dim: int,
        num_clusters: int,
        tau: float,
        sigma: float,
        std: float,
        dropout: float,
        batch_norm: bool,
        w_sigma: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.a_dim, self.z_dim = a_dim, z_dim
        self.tau, self.sigma, self.std, self.p = tau, sigma, std, dropout
        self.encoder = _mlp([num_items, *encoder_dims, 2 * a_dim], generator)
        self.dense_input = False
        """Multiply the whole [B, I] input in ``encode`` (fixed shapes, for ``train.sync_free``)
        instead of its nonzero entries only (a sparse product, faster on the CPU)."""
        self.transition = _mlp([a_dim + z_dim, *transition_dims, 2 * z_dim], generator)
        self.decoder = _mlp([z_dim, *decoder_dims, num_items], generator)
        self.bn_a = nn.BatchNorm1d(a_dim) if batch_norm else None
        w_ck = torch.empty(num_clusters, z_dim).normal_(0.5, w_sigma, generator=generator)
        w_cd = torch.empty(num_clusters, num_items).normal_(0.5, w_sigma, generator=generator)
        self.w_ck = nn.Parameter(w_ck.clamp_(0.0, 1.0))
        self.w_cd = nn.Parameter(w_cd.clamp_(0.0, 1.0))

    def _sample(
        self, mu: torch.Tensor, logvar: torch.Tensor, gen: torch.Generator | None
    ) -> torch.Tensor:
        if not self.training:
            return mu
        eps = torch.randn(mu.shape, generator=gen, device=mu.device) * self.std
        return mu + eps * torch.exp(0.5 * logvar)

    def graph_weights(self, w: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """softmax over clusters of the clamped (noised while training) W. Shape [C, n]."""
        if self.training and self.sigma > 0:
            w = w + self.sigma * torch.randn(w.shape, generator=gen, device=w.device)
        return torch.softmax(w.clamp(0.0, 1.0) / self.tau, dim=0)

    def encode(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """The encoder on the L2-normalised (and, training, dropped-out) interaction vectors.

        The input layer multiplies only the nonzero entries (a sparse product): interaction
        vectors hold a fraction of a percent of the items, and a dense product would be the
        largest cost of an epoch. Dropout draws its mask for those entries only; a dropped
        zero is zero either way, so the distribution is that of dense inverted dropout.

        Shapes: x [B, I] -> [B, 2 a].
        """
        norm = x.norm(dim=1).clamp_min(1e-12)  # F.normalize's eps
        first = self.encoder[0]
        if self.dense_input:  # fixed shapes, no host read (train.sync_free; a GPU's choice)
            x = x / norm.unsqueeze(1)
            if self.training and self.p > 0:
                x = x * keep_mask(x.shape, self.p, gen, x.device)
            h = first(x)
            rest = self.encoder[1:]
            return _run(rest, torch.tanh(h)) if len(rest) else h
        rows, cols = torch.nonzero(x, as_tuple=True)
        vals = x[rows, cols] / norm[rows]
        if self.training and self.p > 0:
            vals = vals * keep_mask(vals.shape, self.p, gen, vals.device)
        sparse = torch.sparse_coo_tensor(  # nonzero() indices: valid, sorted and unique
            torch.stack([rows, cols]), vals, x.shape, check_invariants=False, is_coalesced=True
        )
        h = torch.sparse.mm(sparse, first.weight.T) + first.bias
        rest = self.encoder[1:]
        if len(rest):
            h = _run(rest, torch.tanh(h))
        return h

    def step(
        self, x: torch.Tensor, z_prev: torch.Tensor, gen: torch.Generator | None = None
    ) -> SliceOutput:
        """One slice. Shapes: x [B, I], z_prev [B, K] -> SliceOutput."""
        mu, logvar = self.encode(x, gen).split(self.a_dim, dim=1)  # [B, a] each
        a = self._sample(mu, logvar, gen)
        if self.bn_a is not None:
            a = self.bn_a(a)
        mu_z, logvar_z = _run(self.transition, torch.cat([a, z_prev], 1)).split(self.z_dim, 1)
        z = self._sample(mu_z, logvar_z, gen)  # [B, K]
        w_ck = self.graph_weights(self.w_ck, gen)  # [C, K]
        w_cd = self.graph_weights(self.w_cd, gen)  # [C, I]
        return SliceOutput(self.decode(z, w_ck, w_cd), mu, logvar, z)

    def decode(self, z: torch.Tensor, w_ck: torch.Tensor, w_cd: torch.Tensor) -> torch.Tensor:
        """logits = sum_c MLP_p2(z * W~_CK[c]) * W~_CD[c] / tau.

        With a one-layer p2 (the official default, p2 = []) the sum over clusters folds into
        the weight: sum_c ((z * w_ck[c]) W^T + b) * w_cd[c] = z (W^T * (w_ck^T w_cd)) + b * sum_c
        w_cd[c]. That is one [B, K] x [K, I] product instead of C of them and no [B, C, I]
        tensor (the decoder was half of a CDR step); ``decode_per_cluster`` is the literal form.

        Shapes: z [B, K], w_ck [C, K], w_cd [C, I] -> [B, I].
        """
        if len(self.decoder) != 1:
            return self.decode_per_cluster(z, w_ck, w_cd)
        layer = self.decoder[0]
        folded = layer.weight.T * (w_ck.T @ w_cd)  # [K, I]
        return torch.addmm(layer.bias * w_cd.sum(0), z, folded) / self.tau

    def decode_per_cluster(
        self, z: torch.Tensor, w_ck: torch.Tensor, w_cd: torch.Tensor
    ) -> torch.Tensor:
        """``decode`` as the official code computes it, cluster by cluster (any p2).

        Shapes: z [B, K], w_ck [C, K], w_cd [C, I] -> [B, I].
        """
        per_cluster = _run(self.decoder, z.unsqueeze(1) * w_ck)  # [B, C, I]
        return (per_cluster * w_cd).sum(1) / self.tau

    def rollout(
        self, slices: Iterable[torch.Tensor], gen: torch.Generator | None = None
    ) -> Iterator[SliceOutput]:
        """Run the chain over the slices in order (z_0 = 0; z_{t-1} enters detached).

        Shapes: each slice [B, I]; yields one SliceOutput per slice.
        """
        z_prev: torch.Tensor | None = None
        for x in slices:
            if z_prev is None:
                z_prev = x.new_zeros(x.shape[0], self.z_dim)
            out = self.step(x, z_prev, gen)
            z_prev = out.z.detach()
            yield out

    def weight_l2(self) -> torch.Tensor:
        """(1/2) sum of squared MLP weights (biases, BatchNorm and W excluded). Scalar."""
        layers = [*self.encoder, *self.transition, *self.decoder]
        return 0.5 * sum(layer.weight.pow(2).sum() for layer in layers)


def multinomial_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-(1/B) sum_b sum_i x_bi log softmax(logits_b)_i. A user with an empty slice adds 0 (the
    official mask on empty users changes nothing else) but still counts in B.

    Shapes: logits, x [B, I] -> scalar.
    """
    return -(F.log_softmax(logits, dim=1) * x).sum(1).mean()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over dimensions, averaged over the batch.

    Shapes: mu, logvar [B, a] -> scalar.
    """
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()


def kl_weight(step: int, cap: float, anneal_steps: int) -> float:
    """beta = min(cap, step / anneal_steps) after ``step`` optimiser steps; ``anneal_steps``
    0 gives the constant cap (the official default)."""
    if anneal_steps > 0:
        return min(cap, step / anneal_steps)
    return cap


def gradient_variance_penalty(losses: Sequence[torch.Tensor], param: torch.Tensor) -> torch.Tensor:
    """sum_t ||g_t - mean_t g_t||^2 with g_t = d losses[t] / d param, differentiable
    (create_graph=True; the backward of the total runs a double backward). One environment
    gives exactly 0 and no gradient computation.

    Shapes: losses: T scalars; param any shape -> scalar.
    """
    if len(losses) < 2:
        return param.new_zeros(())
    grads = torch.stack(
        [torch.autograd.grad(loss, param, create_graph=True)[0].reshape(-1) for loss in losses]
    )  # [T, P]
    return (grads - grads.mean(0)).pow(2).sum()


def normal_cdf_penalty(w: torch.Tensor, sigma: float) -> torch.Tensor:
    """sum Phi(w / sigma), Phi the standard normal CDF (the sparsity term). Scalar."""
    return (0.5 * (1.0 + torch.erf(w / (sigma * math.sqrt(2.0))))).sum()


__all__ = [
    "CDRNetwork",
    "SliceOutput",
    "chronological_slices",
    "gaussian_kl",
    "gradient_variance_penalty",
    "kl_weight",
    "multinomial_nll",
    "normal_cdf_penalty",
]
