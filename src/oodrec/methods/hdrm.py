"""``hdrm``: stage 2 of HDRM (Yuan et al., WWW 2025; docs/methods/hdrm.md), conditional diffusion in
the tangent space of a pretrained hyperbolic LightGCN.

Train stage 1 first, then stage 2 on its run directory (same dataset, same seed or not)::

    oodrec train --dataset food --model hdrm_backbone --seed 1
    oodrec train --dataset food --model hdrm --seed 1 \\
        --set model.backbone_run=runs/food-hdrm_backbone-seed1

Stage 2 loads the stage-1 run's best checkpoint (``load_run``), refuses a run trained on other
data (dataset name, sizes, training-pair fingerprint) and records which run it used (path,
dataset, config fingerprint) in ``describe()``, hence in resolved.yaml and record.json.

Per batch of pairs (u, i), with the backbone's propagated tangent vectors (sum of layers 1..L):

1. t ~ U{0..T-1}; x^u_t, x^i_t = q(x_t | x_0) of u and i (``restrict``: directional noise
   eps' = sgn(x_0) |eps|, then mu + sigma eps' with the batch's mean and std of x_0);
2. u_hat = f^U(x^u_t, i, t), i_hat = f^I(x^i_t, u, t) (x0-predicting MLPs, condition clean);
3. u' = (1 - w) u + w u_hat, i' = (1 - w) i + w i_hat (w = ``blend``, 0.05);
4. recon = sum_b 1/2 (mean_d (u - u')^2 + mean_d (i - i')^2);
5. margin = sum_b max(0, d^2(exp_o u', exp_o i') - d^2(exp_o u', exp_o j) + 0.2), j a uniform
   non-positive (not diffused);
6. loss = (1 - alpha) margin + alpha recon (terms ``margin`` and ``recon``, already weighted).

The backbone is frozen by default (``freeze_backbone``; the released code sets
``requires_grad=False`` on it), so only the two denoisers learn (Adam, ``train.lr``); with
``freeze_backbone=false`` its embeddings also train (Riemannian SGD, ``backbone_lr``).

Scores: for every user, the mean of its training items' tangent vectors is noised to step T-1,
item-denoised for ``sampling_steps`` posterior-mean steps conditioned on the user, blended as
(1 - w) u + w result, mapped with exp_o and ranked by -d^2 to every item. The chain runs once
per evaluation for every user (noise drawn in user-id order), so a user's scores do not depend on
the split or batch asking for them.

``train.l2`` and ``model.init`` are not used. The checkpoint holds the backbone too, so a resumed
or re-evaluated run uses the backbone it trained with (the stage-1 run must still exist: it is
checked and loaded when the method is built).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from oodrec.diffusion.process import q_sample, reverse_chain
from oodrec.diffusion.schedule import DiffusionSchedule, betas_for, schedule_from_betas
from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, OptimizerChain, Representations, Scorer
from oodrec.methods.common import UserSampledPairs, training_positives
from oodrec.methods.hdrm_backbone import (
    Sampling,
    check_shared,
    epoch_batches,
    hyperbolic_score,
    margin_diagnostics,
    margin_loss,
    record_margin_stats,
)
from oodrec.methods.hdrm_stage1 import backbone_overrides, load_backbone
from oodrec.models.hdrm import Activation, ConditionalDenoiser
from oodrec.models.hyperbolic import pairwise_sqdist, sqdist
from oodrec.models.hyperbolic_optim import RiemannianSGD
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items
from oodrec.seeding import make_generator

SCORE_CHUNK = 8192
"""Users per reverse-chain block at scoring time."""
FIXED_FIRST_BETA = 1e-5
"""beta_0 of the official ``GaussianDiffusion(beta_fixed=True)``."""


@dataclass(frozen=True)
class HDRMOptions:
    """Stage-2 hyperparameters; defaults from the official train_yelp.py grid and parse.py. The
    denoisers' Adam learning rate is ``train.lr`` (official ``diff_lr`` 1e-3)."""

    backbone_run: str | None = None
    """Run directory of a finished ``hdrm_backbone`` run on the same data (stage 1)."""
    allow_untrained_backbone: bool = False
    """Without ``backbone_run``, start from a randomly initialised backbone (tests only)."""
    freeze_backbone: bool = True
    """Keep the backbone fixed (official); False also trains it (Riemannian SGD)."""
    alpha: float = 0.3
    """Loss mix (1 - alpha) margin + alpha recon."""
    margin: float = 0.2
    """Margin of the hinge on squared hyperbolic distances."""
    blend: float = 0.05
    """Weight w of the denoiser output in u' = (1 - w) u + w u_hat."""
    dims: tuple[int, ...] = (200, 1000)
    """Hidden widths of each denoiser (official ``[200, 1000]``)."""
    emb_size: int = 10
    """Width of the sinusoidal time embedding."""
    act: Activation = "relu"
    """Denoiser activation: relu, tanh or sigmoid."""
    dropout: float = 0.5
    """Dropout on the noised input while training."""
    norm: bool = False
    """L2-normalise the noised input."""
    steps: int = 30
    """Diffusion steps T."""
    noise_schedule: Literal["linear", "linear-var"] = "linear-var"
    """Beta schedule (see ``oodrec.diffusion.schedule``)."""
    noise_scale: float = 1e-4
    """Scale of the schedule's endpoints."""
    noise_min: float = 1e-4
    """Lower endpoint before scaling."""
    noise_max: float = 1e-2
    """Upper endpoint before scaling."""
    fix_first_beta: bool = True
    """beta_0 = 1e-5, as the official ``GaussianDiffusion(beta_fixed=True)``."""
    sampling_steps: int = 30
    """Reverse steps at inference, from step sampling_steps - 1 down to 0 (<= steps; the
    official script's int(1.25 * steps) = 37 runs past the schedule, so it is clamped to T)."""
    sampling_noise: bool = False
    """Add posterior noise in the reverse chain at inference."""
    restrict: bool = False
    """Directional noise: sgn(x_0) |eps|, rescaled by the batch's mean and std of x_0."""
    sampling: Sampling = "user"
    """Training pairs per epoch: ``user`` (LightGCN's original sampler, official) or ``pair``."""
    backbone_lr: float = 1e-5
    """Riemannian SGD learning rate of the backbone (official ``lr``; freeze_backbone=false)."""
    momentum: float = 0.95
    """Riemannian SGD momentum (freeze_backbone=false)."""
    weight_decay: float = 0.01
    """Riemannian SGD weight decay (freeze_backbone=false)."""

    def __post_init__(self) -> None:
        check_shared(self.margin, self.momentum, self.weight_decay, self.sampling)
        if not 0 <= self.alpha <= 1 or not 0 < self.blend <= 1:
            raise ConfigError(
                f"model.alpha must be in [0, 1] and model.blend in (0, 1]; got {self.alpha}, "
                f"{self.blend}"
            )
        if self.steps < 1 or not 0 <= self.sampling_steps <= self.steps:
            raise ConfigError(
                f"model.steps must be >= 1 and 0 <= model.sampling_steps <= model.steps, got "
                f"steps={self.steps}, sampling_steps={self.sampling_steps}"
            )
        if not self.dims or any(d < 1 for d in self.dims) or self.emb_size < 1:
            raise ConfigError(
                f"model.dims must be positive widths and model.emb_size >= 1; got {self.dims}, "
                f"{self.emb_size}"
            )
        if not 0 <= self.dropout < 1 or self.noise_scale <= 0 or self.backbone_lr <= 0:
            raise ConfigError(
                f"model.dropout must be in [0, 1), model.noise_scale and model.backbone_lr > 0; "
                f"got {self.dropout}, {self.noise_scale}, {self.backbone_lr}"
            )


def hdrm_schedule(o: HDRMOptions) -> DiffusionSchedule:
    """The options' beta schedule, with the official fixed beta_0 when ``fix_first_beta``."""
    betas = betas_for(o.noise_schedule, o.steps, o.noise_scale, o.noise_min, o.noise_max)
    if o.fix_first_beta:
        betas[0] = FIXED_FIRST_BETA
    return schedule_from_betas(betas)


def directional_noise(noise: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """HDRM's ``transform_noise``: mu + sigma * (sgn(x0) |noise|), with the column mean and
    (unbiased; 0 for a single row) std of x0. Shapes: [N, D] x2 -> [N, D]."""
    eps = torch.sign(x0) * noise.abs()
    sigma = x0.std(0) if x0.shape[0] > 1 else torch.zeros_like(x0[0])
    return x0.mean(0) + sigma * eps


def recon_loss(
    u: torch.Tensor, u_new: torch.Tensor, i: torch.Tensor, i_new: torch.Tensor
) -> torch.Tensor:
    """sum_b 1/2 (mean_d (u - u')^2 + mean_d (i - i')^2). Shapes: [B, D] x4 -> scalar."""
    return 0.5 * ((u - u_new).pow(2).mean(1) + (i - i_new).pow(2).mean(1)).sum()


class HDRM(Method):
    """HDRM stage 2: user / item denoisers on a frozen hyperbolic LightGCN (docs/methods/hdrm.md).

    Paper: Meng Yuan et al., "Hyperbolic Diffusion Recommender Model", WWW 2025 (official code
    yuanmeng-cpu/HDRM). Needs a finished ``hdrm_backbone`` run: ``model.backbone_run=RUN``.
    """

    Options = HDRMOptions
    paper = "Yuan et al., Hyperbolic Diffusion Recommender Model (HDRM), WWW 2025 - stage 2"

    def __init__(self, ctx: MethodContext, options: HDRMOptions | None) -> None:
        opts = options or HDRMOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.backbone, self.backbone_info = load_backbone(ctx, opts)
        self.c = float(self.backbone.c)
        if opts.freeze_backbone:
            self.backbone.requires_grad_(False)
        dim = ctx.cfg.model.emb_dim
        gen = make_generator(ctx.cfg.seed, "init", 1)
        self.user_dnn, self.item_dnn = (
            ConditionalDenoiser(
                dim, opts.dims, opts.emb_size, opts.act, opts.dropout, opts.norm, generator=gen
            )
            for _ in range(2)
        )
        self.sched = hdrm_schedule(opts).to(ctx.device)
        self.positives = training_positives(ctx)
        self.user_pairs = UserSampledPairs(data)
        self._frozen: tuple[torch.Tensor, torch.Tensor] | None = None
        self._stats: dict[str, torch.Tensor] = {}
        self.register_load_state_dict_post_hook(lambda module, keys: module._clear_cache())

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # train_yelp.py: diff_lr 1e-3, 3 layers, 20 epochs; parse.py: batch 20000; main.py:
        # validation every 5 epochs, 6 evaluations without improvement. The backbone's D and L
        # are those of the stage-1 run when it can be read.
        out: dict[str, Any] = {
            "train.lr": 1e-3,
            "train.batch_size": 20000,
            "model.num_layers": 3,
            "train.epochs": 20,
            "train.eval_every": 5,
            "train.patience": 6,
        }
        out.update(backbone_overrides(options.get("backbone_run")))
        return out

    def _clear_cache(self) -> None:
        self._frozen = None

    def tangent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's propagated tangent vectors (cached while it is frozen)."""
        if not self.options.freeze_backbone:
            return self.backbone.tangent()
        if self._frozen is None:
            with torch.no_grad():
                self._frozen = self.backbone.tangent()
        return self._frozen

    def optimizers(self) -> dict[str, Any]:
        o, lr = self.options, self.ctx.cfg.train.lr
        parts: dict[str, torch.optim.Optimizer] = {
            "user_dnn": torch.optim.Adam(self.user_dnn.parameters(), lr=lr),
            "item_dnn": torch.optim.Adam(self.item_dnn.parameters(), lr=lr),
        }
        if not o.freeze_backbone:
            parts["backbone"] = RiemannianSGD(
                [self.backbone.user_emb, self.backbone.item_emb],
                lr=o.backbone_lr,
                c=self.c,
                momentum=o.momentum,
                weight_decay=o.weight_decay,
            )
        return {"main": OptimizerChain(parts)}

    def start_epoch(self, epoch: int) -> None:
        self._stats = {}

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[TripletBatch]:
        return epoch_batches(self, self.user_pairs, self.options.sampling, gen)

    def noised(self, x0: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """q(x_t | x_0) with standard or (``restrict``) directional noise. Shapes: [N, D]."""
        noise = torch.randn(x0.shape, generator=gen, device=x0.device)
        if self.options.restrict:
            noise = directional_noise(noise, x0)
        return q_sample(self.sched, x0, t, noise)

    def loss(
        self, batch: TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        o, bb = self.options, self.backbone
        users, pos = batch.users, batch.pos_items
        user_t, item_t = self.tangent()
        u, i = user_t[users], item_t[pos]  # [B, D]
        t = torch.randint(0, o.steps, (users.numel(),), generator=gen, device=u.device)
        u_hat = self.user_dnn(self.noised(u, t, gen), i, t, gen)
        i_hat = self.item_dnn(self.noised(i, t, gen), u, t, gen)
        u_new = (1 - o.blend) * u + o.blend * u_hat
        i_new = (1 - o.blend) * i + o.blend * i_hat
        neg = uniform_items(users, self.ctx.data.num_items, gen, positives=self.positives)
        u_m = bb.to_manifold(u_new)
        d2_pos = sqdist(u_m, bb.to_manifold(i_new), self.c)
        d2_neg = sqdist(u_m, bb.to_manifold(item_t[neg]), self.c)
        record_margin_stats(self._stats, d2_pos, d2_neg, o.margin)
        return {
            "margin": (1 - o.alpha) * margin_loss(d2_pos, d2_neg, o.margin),
            "recon": o.alpha * recon_loss(u, u_new, i, i_new),
        }

    def history_means(self, item_t: torch.Tensor) -> torch.Tensor:
        """Mean training-item tangent vector of every user (zero without history). [U, D]."""
        data = self.ctx.data
        sums = torch.zeros(data.num_users, item_t.shape[1], device=item_t.device)
        sums.index_add_(0, data.users, item_t[data.items])
        return sums / data.user_degree().clamp_min(1).unsqueeze(1).to(sums)

    def user_vectors(self) -> torch.Tensor:
        """Every user's blended, denoised tangent vector (one pass over all users, in blocks,
        noise drawn in id order: scores do not depend on which users a split asks for). [U, D]."""
        o = self.options
        user_t, item_t = self.tangent()
        hist = self.history_means(item_t)
        gen = make_generator(self.ctx.cfg.seed, "diffusion", device=user_t.device)
        out = torch.empty_like(user_t)
        for start in range(0, user_t.shape[0], SCORE_CHUNK):
            cond = user_t[start : start + SCORE_CHUNK]
            x0 = hist[start : start + SCORE_CHUNK]
            last = torch.full((x0.shape[0],), o.steps - 1, device=x0.device)
            x = self.noised(x0, last, gen)

            def denoise(xs: torch.Tensor, t: int, n: int, cond=cond) -> torch.Tensor:
                return self.item_dnn(xs, cond[:n], t)

            x = reverse_chain(
                self.sched,
                x,
                o.sampling_steps - 1,
                denoise,
                noise_gen=gen,
                sampling_noise=o.sampling_noise,
            )
            out[start : start + SCORE_CHUNK] = (1 - o.blend) * cond + o.blend * x
        return out

    def scorer(self) -> Scorer:
        bb, c = self.backbone, self.c
        users_m = bb.to_manifold(self.user_vectors())
        items_m = bb.to_manifold(self.tangent()[1])
        return lambda users: -pairwise_sqdist(users_m[users], items_m, c)

    def representations(self) -> Representations:
        bb = self.backbone
        users_m = bb.to_manifold(self.user_vectors())
        items_m = bb.to_manifold(self.tangent()[1])
        return Representations(users_m, items_m, hyperbolic_score(self.c))

    def diagnostics(self) -> dict[str, float]:
        return margin_diagnostics(self._stats)

    def describe(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.options), "backbone": dict(self.backbone_info)}


__all__ = ["HDRM", "HDRMOptions", "directional_noise", "hdrm_schedule", "recon_loss"]
