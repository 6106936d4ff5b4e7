"""``cdr``: CDR (Wang et al., TOIS 2023), a temporal VAE with a sparse cluster-level causal graph
and an invariance penalty across chronological environments (docs/methods/cdr.md).

Per batch of users (the official ``main.py::train``): each user's training history is cut into
T chronological slices (``chronological_slices``) and gathered as multi-hot [T, B, I] inputs
from a sparse index (never a dense users x items matrix). The chain runs over the slices
(``CDRNetwork.rollout``); per slice, l_t = multinomial NLL + beta * KL(q(a_t) || N(0, I)).
The loss is mean_t l_t + lambda2 * sparsity(W_CK, W_CD) + lambda3 * sum_t ||g_t - mean g||^2
(g_t = d l_t / d the first decoder weight, with create_graph) + regs * L2(MLP weights); the
Trainer clips the gradient norm at ``grad_clip`` and steps Adam. Scores are the last slice's
logits after rolling the chain over the history cut into T + add_T slices.

Without timestamps (every shipped dataset) there is no order to cut: T = 1, add_T is not
applied, the invariance penalty is exactly 0, and ``describe()`` and a warning say so.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from oodrec.data.csr import CSR
from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, Scorer
from oodrec.methods.common import PaddedRows, fixed_multi_hot, user_batches
from oodrec.models.cdr import (
    CDRNetwork,
    chronological_slices,
    gaussian_kl,
    gradient_variance_penalty,
    kl_weight,
    multinomial_nll,
    normal_cdf_penalty,
)
from oodrec.seeding import make_generator

logger = logging.getLogger(__name__)

NO_TIME = "T=1: the dataset has no timestamps; file order is not used as time"


@dataclass(frozen=True)
class CDROptions:
    """CDR hyperparameters; defaults are the official README / ``hyper-parameter.txt`` line for
    Yelp and the ``main.py`` parser defaults (docs/methods/cdr.md)."""

    num_envs: int = 3
    """T: chronological environments (per-user time slices) in training. Datasets without
    timestamps use T = 1."""
    add_envs: int = 2
    """add_T: extra slices at inference; the history is cut into T + add_T slices and the
    chain's last prediction ranks the items. Not applied without timestamps."""
    encoder_dims: tuple[int, ...] = (800,)
    """Hidden widths of the encoder q(a_t | x_t) (official ``mlp_dims``)."""
    transition_dims: tuple[int, ...] = ()
    """Hidden widths of the transition MLP p1 ([a_t; z_{t-1}] -> z_t)."""
    decoder_dims: tuple[int, ...] = ()
    """Hidden widths of the decoder MLP p2 (K -> items, per cluster)."""
    a_dim: int = 400
    """Size of the environment-specific user state a_t."""
    z_dim: int = 400
    """Size K of the preference state z_t."""
    num_clusters: int = 2
    """C: clusters of the causal graph (rows of W_CK and W_CD)."""
    tau: float = 0.5
    """Temperature of the softmax over clusters (also divides the logits)."""
    sigma: float = 0.1
    """Scale of the training noise on W_CK / W_CD and of the sparsity term Phi(W / sigma)."""
    w_sigma: float = 0.5
    """W_CK and W_CD start as clamp(N(0.5, w_sigma^2), 0, 1)."""
    kl_cap: float = 0.5
    """lambda1: largest KL weight beta."""
    anneal_steps: int = 0
    """beta = min(kl_cap, step / anneal_steps) after ``step`` optimiser steps; 0 (official):
    beta = kl_cap throughout."""
    sparsity_weight: float = 1.0
    """lambda2: weight of the sparsity term sum Phi(W_CK / sigma) + sum Phi(W_CD / sigma)."""
    invariance_weight: float = 1e-4
    """lambda3: weight of the gradient-variance penalty across environments."""
    regs: float = 0.0
    """Weight of (1/2) sum ||W||^2 over the MLP weights."""
    batch_norm: bool = True
    """BatchNorm on a_t (official ``bn`` 1)."""
    dropout: float = 0.6
    """Dropout on the normalised encoder input while training."""
    std: float = 1.0
    """Scale of the reparameterisation noise while training."""
    weight_decay: float = 0.0
    """Adam weight decay (official ``wd`` 0)."""
    grad_clip: float | None = 100.0
    """The Trainer clips the gradient norm to this before each step (None: never). The
    learning rate, batch size, epochs and evaluation cadence are ``train.*`` settings; CDR
    implies the official lr 1e-4, batch 500, 500 epochs, evaluation every 10, no early stop."""

    def __post_init__(self) -> None:
        dims = (*self.encoder_dims, *self.transition_dims, *self.decoder_dims)
        sizes = (self.num_envs, self.a_dim, self.z_dim, self.num_clusters)
        if any(d < 1 for d in (*dims, *sizes)) or self.add_envs < 0 or self.anneal_steps < 0:
            raise ConfigError(
                f"model.num_envs, a_dim, z_dim, num_clusters and every hidden width must be >= 1, "
                f"add_envs and anneal_steps >= 0; got num_envs={self.num_envs}, "
                f"add_envs={self.add_envs}, a_dim={self.a_dim}, z_dim={self.z_dim}, "
                f"num_clusters={self.num_clusters}, widths {dims}, anneal_steps={self.anneal_steps}"
            )
        if self.tau <= 0 or self.sigma <= 0 or self.w_sigma < 0 or self.std < 0:
            raise ConfigError(
                f"model.tau and model.sigma must be > 0, w_sigma and std >= 0; got "
                f"tau={self.tau}, sigma={self.sigma}, w_sigma={self.w_sigma}, std={self.std}"
            )
        if not 0 <= self.dropout < 1 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise ConfigError(
                f"model.dropout must be in [0, 1) and model.grad_clip > 0 or None; got "
                f"{self.dropout}, {self.grad_clip}"
            )


class CDR(Method):
    """CDR: causal disentangled temporal VAE against user preference shifts.

    Paper: Wenjie Wang, Xinyu Lin, Liuhui Wang, Fuli Feng, Yunshan Ma, Tat-Seng Chua, "Causal
    Disentangled Recommendation against User Preference Shifts", ACM TOIS 2023 (official code
    Linxyhaha/CDR). Defaults are the official Yelp setting (lr 1e-4, batch 500, encoder [800],
    a = K = 400, C = 2, tau 0.5, T = 3, add_T = 2, lambda1..3 = 0.5, 1, 1e-4, dropout 0.6).

    Example::

        oodrec train --dataset food --model cdr --set model.num_envs=3
    """

    Options = CDROptions
    paper = (
        "Wang et al., Causal Disentangled Recommendation against User Preference Shifts (CDR), "
        "ACM TOIS 2023"
    )
    unscored_reason = (
        "CDR scores a user by running its temporal VAE over the user's whole history; it has "
        "no single vector per user"
    )

    def __init__(self, ctx: MethodContext, options: CDROptions | None) -> None:
        opts = options or CDROptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.num_items = data.num_items
        self.max_grad_norm = opts.grad_clip
        self.timed = data.timestamps is not None
        self.train_slices = opts.num_envs if self.timed else 1
        self.infer_slices = self.train_slices + (opts.add_envs if self.timed else 0)
        if not self.timed and (opts.num_envs > 1 or opts.add_envs > 0):
            logger.warning(
                "cdr: dataset %r has no timestamps, so CDR runs with one environment (T=1 "
                "instead of model.num_envs=%d, no add_T=%d slices at inference); the invariance "
                "penalty is 0. File order is not used as time.",
                data.name,
                opts.num_envs,
                opts.add_envs,
            )
        self.train_history = self._slice_index(self.train_slices)
        self.infer_history = (
            self.train_history
            if self.infer_slices == self.train_slices
            else self._slice_index(self.infer_slices)
        )
        self.users = torch.arange(data.num_users, device=ctx.device)
        # sync-free mode: fixed-shape history rows and a dense input product (no host reads)
        self.padded = PaddedRows(self.train_history) if ctx.sync_free is not None else None
        self.net = CDRNetwork(
            data.num_items,
            opts.encoder_dims,
            opts.transition_dims,
            opts.decoder_dims,
            opts.a_dim,
            opts.z_dim,
            opts.num_clusters,
            opts.tau,
            opts.sigma,
            opts.std,
            opts.dropout,
            opts.batch_norm,
            opts.w_sigma,
            generator=make_generator(ctx.cfg.seed, "init"),
        )
        self.net.dense_input = self.padded is not None
        # optimiser steps so far (the KL annealing clock); a buffer, so it resumes
        self.register_buffer("update_count", torch.zeros((), dtype=torch.long))

    def _slice_index(self, num_slices: int) -> CSR:
        """Sparse per-user index of ``slice * I + item`` codes (one CSR for every slice)."""
        d = self.ctx.data
        sl = chronological_slices(d.users, d.items, d.timestamps, num_slices, d.num_users)
        codes = sl * d.num_items + d.items
        return CSR(d.users.cpu(), codes.cpu(), d.num_users).to(self.ctx.device)

    def slice_inputs(self, users: torch.Tensor, history: CSR, num_slices: int) -> Iterator:
        """Multi-hot inputs of ``users``, one slice at a time (built lazily, so inference holds
        one [B, I] slice, not T + add_T of them).

        Shapes: users [B] -> yields num_slices tensors [B, I] float.
        """
        if self.padded is not None and history is self.train_history:
            yield from self._fixed_slice_inputs(users, num_slices)
            return
        rows, codes = history.gather(users)
        sl, items = codes // self.num_items, codes % self.num_items
        for s in range(num_slices):
            x = torch.zeros(users.numel(), self.num_items, device=users.device)
            keep = sl == s
            x[rows[keep], items[keep]] = 1.0
            yield x

    def _fixed_slice_inputs(self, users: torch.Tensor, num_slices: int) -> Iterator:
        """``slice_inputs`` of the training history at fixed shapes (sync-free mode): the same
        multi-hot rows (``fixed_multi_hot``: the padding and the other slices' entries go to a
        spare column).

        Shapes: users [B] -> yields num_slices tensors [B, I] float.
        """
        codes = self.padded.batch(users)  # [B, L], -1 = padding
        valid = codes >= 0
        sl, items = codes // self.num_items, codes % self.num_items
        for s in range(num_slices):
            yield fixed_multi_hot(items, valid & (sl == s), self.num_items)

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official main.py: Adam 1e-4, batch 500, 500 epochs, evaluated every 10 epochs, the
        # best kept without early stopping.
        return {
            "train.lr": 1e-4,
            "train.batch_size": 500,
            "train.epochs": 500,
            "train.eval_every": 10,
            "train.patience": 0,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        lr, wd = self.ctx.cfg.train.lr, self.options.weight_decay
        return {"main": torch.optim.Adam(self.parameters(), lr=lr, weight_decay=wd)}

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        tcfg = self.ctx.cfg.train
        # BatchNorm cannot train on one user: a last batch of one joins the previous batch
        merge = self.net.bn_a is not None
        return user_batches(self.users, tcfg.batch_size, tcfg.drop_last, gen, merge_single=merge)

    def loss(
        self, batch: torch.Tensor, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        opts = self.options
        xs = list(self.slice_inputs(batch, self.train_history, self.train_slices))  # T x [B, I]
        outs = list(self.net.rollout(xs, gen))
        if not opts.anneal_steps:
            beta: float | torch.Tensor = opts.kl_cap  # constant: no step count to read
        elif self.padded is not None:  # sync-free: the annealed weight stays on the device
            beta = (self.update_count.float() / opts.anneal_steps).clamp(max=opts.kl_cap)
        else:
            beta = kl_weight(int(self.update_count), opts.kl_cap, opts.anneal_steps)
        recon = [multinomial_nll(o.logits, x) for o, x in zip(outs, xs)]
        kl = [gaussian_kl(o.mu, o.logvar) for o in outs]
        per_env = [r + beta * k for r, k in zip(recon, kl)]  # l_t
        num_envs = len(xs)
        terms = {"recon": sum(recon) / num_envs, "kl": beta * sum(kl) / num_envs}
        if opts.invariance_weight:
            first = self.net.decoder[0].weight  # the official mlp_p2_layers.0.weight
            penalty = gradient_variance_penalty(per_env, first)
            terms["invariance"] = opts.invariance_weight * penalty
        sparsity = normal_cdf_penalty(self.net.w_ck, opts.sigma)
        terms["sparsity"] = opts.sparsity_weight * (
            sparsity + normal_cdf_penalty(self.net.w_cd, opts.sigma)
        )
        if opts.regs:
            terms["l2"] = opts.regs * self.net.weight_l2()
        return terms

    def after_step(self, phase: str) -> None:
        self.update_count += 1

    def scorer(self) -> Scorer:
        def score(users: torch.Tensor) -> torch.Tensor:
            slices = self.slice_inputs(users, self.infer_history, self.infer_slices)
            # keep only the last slice's output: earlier logits are not held in memory
            (last,) = deque(self.net.rollout(slices), maxlen=1)
            return last.logits  # [B, I], the chain's prediction after T + add_T slices

        return score

    def diagnostics(self) -> dict[str, float]:
        opts = self.options
        with torch.no_grad():
            w_cd = self.net.w_cd.clamp(0.0, 1.0)
        return {
            "cdr_kl_weight": kl_weight(int(self.update_count), opts.kl_cap, opts.anneal_steps),
            "cdr_w_cd_zero_share": float(w_cd.eq(0).float().mean()),
        }

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["environments"] = (
            f"T={self.train_slices}: chronological per-user slices of the training history "
            f"(time ties broken by item id)"
            if self.timed
            else NO_TIME
        )
        out["train_slices"] = self.train_slices
        out["inference_slices"] = self.infer_slices
        return out
