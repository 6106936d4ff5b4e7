"""CNSDiff: causal negative sampling via diffusion (Zhao et al.), in three modes.

Per batch (docs/samplers/cnsdiff.md#per-batch): generate candidate negatives from the positive item
embedding at the hardness levels t0 + k*s <= T (Eq. 14) in one batched reverse chain; keep the
candidate with the largest inner product with the user (Eq. 19); mix it with a uniform random
negative by a per-row ratio m ~ Beta(a, b) whose parameters move linearly over training (Eq. 20 as
the code does it, D7); add the alignment loss (Eq. 21, code form D8) and the diffusion loss with a
causal regulariser (Eq. 18) through ``aux_loss`` (Eq. 22).

Options beyond the code (defaults reproduce it exactly): ``curriculum_epochs`` sets the horizon of
the Beta schedule apart from ``train.epochs``; ``rescale`` moves the candidates to the scale of
the item embeddings before the hardest is chosen (D3); ``negatives_per_positive`` keeps the K
hardest candidates, each mixed with its own random negative, as K averaged BPR terms.

Modes (``mode``; every derived switch can still be set explicitly):

=============== ============== ============ ================ ===================== ========
mode            train denoiser denoise from causal term      dropout when sampling L2 form
=============== ============== ============ ================ ===================== ========
code_faithful   no (D1)        T (D2)       code KL (D5)     yes (D13)             selfrec
paper           yes, own Adam  start level  code KL          no                    squared
causal          yes, own Adam  start level  variational      no                    squared
=============== ============== ============ ================ ===================== ========

The D-numbers are the departures of the paper from its official code, each explained in
docs/samplers/cnsdiff.md; the variational causal term is in its "The causal regulariser".
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from oodrec.diffusion.denoiser import EnvPosterior, MLPDenoiser
from oodrec.diffusion.process import q_sample, reverse_chain
from oodrec.diffusion.schedule import make_schedule
from oodrec.errors import ConfigError
from oodrec.models.base import Embeddings
from oodrec.samplers.base import (
    Negatives,
    NegativeSampler,
    SamplerContext,
    TripletBatch,
    uniform_items,
)
from oodrec.samplers.cnsdiff_losses import (
    alignment_loss,
    code_diffusion_loss,
    grad_scale,
    rex_diffusion_loss,
    variational_diffusion_loss,
)
from oodrec.samplers.cnsdiff_options import CNSDiffOptions
from oodrec.seeding import beta_sample, derive_seed, make_generator


class CNSDiffSampler(NegativeSampler):
    """Causal Negative Sampling via Diffusion (CNSDiff).

    Paper: Zhao et al., "Causal Negative Sampling via Diffusion Model for Out-of-Distribution
    Recommendation". Code: user683/CNSDiff @ aca2aa1 (docs/samplers/cnsdiff.md).

    Shapes:
        sample: batch of B pairs -> Negatives(emb [B, D], ids None, reg_ego [B, D]); with
            K = ``negatives_per_positive`` > 1: emb and reg_ego [B, K, D], weights [K] = 1/K.
    """

    Options = CNSDiffOptions
    horizon_option = "curriculum_epochs"
    paper = "Zhao et al., Causal Negative Sampling via Diffusion Model for OOD Recommendation"

    def __init__(self, ctx: SamplerContext, options: CNSDiffOptions | None = None) -> None:
        super().__init__(ctx)
        opt = (options or CNSDiffOptions()).resolved(ctx.dataset)
        self.options = opt
        self.sched = make_schedule(
            opt.noise_schedule, opt.steps, opt.noise_scale, opt.noise_min, opt.noise_max
        ).to(ctx.device)
        self.levels = [k for k in range(opt.sample_start, opt.steps + 1, opt.stride)]
        # descending (the reverse chain's prefix rule); built once, moved with the sampler
        levels = torch.tensor(self.levels[::-1])
        self.register_buffer("levels_desc", levels, persistent=False)
        self._coefs = (self.sched.coef1.tolist(), self.sched.coef2.tolist())  # host copies
        variational = opt.causal_mode == "variational"
        gen = make_generator(ctx.seed, "diffusion")
        self.denoiser = MLPDenoiser(
            ctx.emb_dim,
            opt.hidden,
            opt.time_dim,
            opt.dropout,
            True,
            num_envs=opt.num_envs if variational else 0,
            generator=gen,
        )
        self.posterior = (
            EnvPosterior(ctx.emb_dim, opt.num_envs, generator=gen) if variational else None
        )
        if not opt.train_denoiser:
            self.requires_grad_(False)  # D1: the code never steps the denoiser
        deg = ctx.item_degree.float()
        self.register_buffer("item_env", popularity_envs(deg, opt.num_envs))
        # On the CPU: CUDA's weighted bincount has no deterministic kernel and warns under
        # deterministic mode (seen on an H200). Done once, over n_items values.
        mass = torch.bincount(self.item_env.cpu(), weights=deg.cpu(), minlength=opt.num_envs).to(
            deg.device
        )
        prior = (
            mass / mass.sum()
            if opt.prior == "empirical"
            else torch.full_like(mass, 1 / opt.num_envs)
        )
        self.register_buffer("prior", prior.float())
        self.epoch = 0
        self._last: tuple[torch.Tensor, ...] | None = None
        self._stats: dict[str, torch.Tensor] = {}
        self._count = 0
        self._host_rng = random.Random(derive_seed(ctx.seed, "host", 0))

    # ------------------------------------------------------------------ interface

    @classmethod
    def inert_options(cls, options: CNSDiffOptions, dataset: str) -> dict[str, str]:
        o = options.resolved(dataset)
        out: dict[str, str] = {}
        if not o.diffusion_grad_to_backbone:
            how = "" if options.diffusion_grad_to_backbone is False else f" in mode {o.mode!r}"
            out["diffusion_loss_weight"] = (
                f"the diffusion loss does not reach the backbone (diffusion_grad_to_backbone is "
                f"false{how}); set sampler.diffusion_grad_to_backbone=true to make lambda_2 count"
            )
        if not o.train_denoiser:
            out["denoiser_lr"] = "the denoiser is not trained (train_denoiser is false)"
        diffusion = o.train_denoiser or (o.diffusion_grad_to_backbone and o.diffusion_loss_weight)
        causal_term = o.causal and o.causal_mode != "none"
        causal_on = causal_term and bool(o.causal_weight)
        variational = ("env_supervision", "likelihood_scale")
        if not diffusion:
            # (not causal_mode: "variational" also conditions the generating denoiser on e)
            for k in ("causal_weight", *variational):
                out[k] = (
                    "no diffusion loss is computed (the denoiser is not trained, and none of "
                    "the loss reaches the backbone)"
                )
        elif not causal_term:
            out["causal_weight"] = "the causal term is off (causal is false or causal_mode is none)"
        if o.causal_mode != "variational":
            for k in (*variational, "prior", "generation"):
                out.setdefault(
                    k, f"only causal_mode 'variational' reads it (mode is {o.causal_mode!r})"
                )
        elif diffusion and not causal_on:
            for k in variational:
                out.setdefault(k, "the causal term is off (causal, causal_mode or causal_weight)")
        if o.causal_mode not in ("variational", "rex"):
            out.setdefault(
                "num_envs",
                f"only causal_mode 'variational' or 'rex' reads it (mode is {o.causal_mode!r})",
            )
        if not o.align:
            for k in ("cl_weight", "temperature", "positive_noise"):
                out[k] = "the alignment loss is off (align is false)"
        elif not o.cl_weight:
            for k in ("temperature", "positive_noise"):
                out[k] = "the alignment loss has weight 0 (cl_weight)"
        if not o.mixup:
            for k in (
                "initial_alpha",
                "initial_beta",
                "final_alpha",
                "final_beta",
                "min_mix_ratio",
                "max_mix_ratio",
                "curriculum_epochs",
            ):
                out[k] = "there is no mix schedule (mixup is false: the generated negative is used)"
        return out

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``code_faithful`` also uses the CNSDiff code's SELFRec L2 form (D10)."""
        return {"train.l2_form": "selfrec"} if options.get("mode") == "code_faithful" else {}

    def param_groups(self) -> list[dict[str, Any]]:
        if not self.options.train_denoiser:
            return []
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.options.denoiser_lr, "weight_decay": 0.0}]

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._stats, self._count = {}, 0
        self._host_rng = random.Random(derive_seed(self.ctx.seed, "host", epoch))

    def _host_seed(self) -> int | None:
        """The seed of a Beta draw in sync-free mode, from a host stream of the epoch (None:
        ``beta_sample`` reads it from the device generator, the exact mode's stream)."""
        if self.ctx.sync_free is None:
            return None
        return self._host_rng.getrandbits(62)

    def mix_params(self) -> tuple[float, float]:
        """Beta(a, b) of the current epoch: linear in rho = epoch / H, held at the final values
        from epoch H on. H = ``curriculum_epochs``, or the number of training epochs (then rho
        never reaches 1)."""
        o = self.options
        rho = self.epoch / (o.curriculum_epochs or self.ctx.num_epochs)
        if rho >= 1:
            return o.final_alpha, o.final_beta
        return (
            o.initial_alpha + (o.final_alpha - o.initial_alpha) * rho,
            o.initial_beta + (o.final_beta - o.initial_beta) * rho,
        )

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        o, n, k = self.options, len(batch), self.options.negatives_per_positive
        users = emb.users[batch.users]  # [B, D]
        pos = emb.items[batch.pos_items]  # [B, D]
        num = None if k == 1 else k  # K = 1 draws [B] exactly as the code does
        rand_ids = uniform_items(batch.users, self.ctx.num_items, gen, num, self.ctx.positives)
        rand = emb.items[rand_ids].view(n, k, -1)  # [B, K, D]
        with torch.no_grad():
            cands = self.generate(pos.detach(), batch.pos_items, gen)  # [C, B, D]
            cands = rescale_candidates(cands, o.rescale, pos.detach(), emb.items.detach())
            scores = torch.einsum("bd,cbd->cb", users.detach(), cands)  # [C, B]
            top = scores.argmax(0, keepdim=True) if k == 1 else scores.topk(k, dim=0).indices
            hard = cands[top, torch.arange(n, device=top.device)].transpose(0, 1)  # [B, K, D]
        if o.mixup:
            a, b = self.mix_params()
            m = beta_sample(a, b, n * k, gen, pos.device, self._host_seed()).view(n, k)
            span = o.max_mix_ratio - o.min_mix_ratio  # 1 - m_min by default
            m = (span * m + o.min_mix_ratio).clamp(0, 1)  # [B, K]
            neg = m.unsqueeze(-1) * hard + (1 - m).unsqueeze(-1) * rand  # [B, K, D]
        else:
            m = torch.ones(n, k, device=pos.device)
            neg = hard
        self._last = (pos, hard[:, 0], rand[:, 0])  # the alignment loss uses the hardest
        if torch.is_grad_enabled():
            self._track_batch(users.detach(), m, hard, rand.detach(), neg.detach(), top[0])
        if k == 1:
            return Negatives(emb=neg.squeeze(1), ids=None, reg_ego=emb.item_ego[rand_ids])
        weights = torch.full((k,), 1.0 / k, device=pos.device)  # the BPR sum becomes a mean
        return Negatives(emb=neg, ids=None, reg_ego=emb.item_ego[rand_ids], weights=weights)

    def aux_loss(
        self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if self._last is None:
            raise RuntimeError("CNSDiff.aux_loss called before sample()")
        pos, hard, rand = self._last
        self._last = None
        o = self.options
        terms: dict[str, torch.Tensor] = {}
        if o.align and o.cl_weight:
            terms["cl"] = o.cl_weight * alignment_loss(
                pos, hard, rand, o.temperature, o.positive_noise, gen
            )
        if o.train_denoiser:
            # The denoiser learns from the unweighted loss; the backbone sees lambda_2 of it.
            scale = o.diffusion_loss_weight if o.diffusion_grad_to_backbone else 0.0
            loss, info = self._diffusion_loss(grad_scale(pos, scale), batch, gen)
            terms["diffusion"] = loss
        elif o.diffusion_grad_to_backbone and o.diffusion_loss_weight:
            loss, info = self._diffusion_loss(pos, batch, gen)
            terms["diffusion"] = o.diffusion_loss_weight * loss
        else:
            info = {}
        self._track(**info)
        return terms

    def diagnostics(self) -> dict[str, float]:
        if not self._count:
            return {}
        out = {f"cnsdiff_{k}": float(v) / self._count for k, v in self._stats.items()}
        a, b = self.mix_params()
        out["cnsdiff_beta_a"], out["cnsdiff_beta_b"] = a, b
        return out

    # ------------------------------------------------------------------ internals

    def _track_batch(
        self,
        users: torch.Tensor,
        m: torch.Tensor,
        hard: torch.Tensor,
        rand: torch.Tensor,
        neg: torch.Tensor,
        level: torch.Tensor,
    ) -> None:
        """Per-batch statistics (detached), summed over the epoch by ``_track``.

        Shapes:
            users: [B, D]; m: [B, K]; hard, rand, neg: [B, K, D]; level: [B] (index of the
            hardest candidate).
        """
        stats = dict(
            mix=m.flatten().mean(),
            hard_norm=hard.flatten(0, 1).norm(dim=1).mean(),
            level=level.float().mean(),
        )
        if self.options.score_diagnostics:
            u = users.unsqueeze(1)  # [B, 1, D]
            stats.update(
                mixed_score=(u * neg).sum(-1).mean(),
                random_score=(u * rand).sum(-1).mean(),
                generated_score=(u * hard).sum(-1).mean(),
            )
        self._track(**stats)

    def _track(self, **values: torch.Tensor) -> None:
        if "mix" in values:
            self._count += 1
        for k, v in values.items():
            self._stats[k] = self._stats.get(k, 0.0) + v.detach()

    def _diffusion_loss(self, x0: torch.Tensor, batch: TripletBatch, gen: torch.Generator):
        o = self.options
        use_causal = o.causal and o.causal_mode != "none"
        dropout = self.training or o.sampling_dropout
        if o.causal_mode == "variational":
            return variational_diffusion_loss(
                self.sched,
                self.denoiser,
                self.posterior,
                x0,
                self.item_env[batch.pos_items],
                self.prior,
                gen,
                o.causal_weight,
                use_causal,
                o.env_supervision,
                o.likelihood_scale,
            )
        if o.causal_mode == "rex":
            return rex_diffusion_loss(
                self.sched,
                self.denoiser,
                x0,
                self.item_env[batch.pos_items],
                o.num_envs,
                gen,
                o.causal_weight,
                use_causal,
            )
        return code_diffusion_loss(
            self.sched, self.denoiser, x0, gen, o.causal_weight, use_causal, dropout
        )

    def generate(
        self, pos: torch.Tensor, pos_items: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """Candidates at every hardness level, in one batched reverse chain.

        Level k is noised with q(x_{k-1} | x_0 = pos) (level 0: no noise) and denoised from
        T-1 (``denoise_from="T"``) or from k-1 (``"start"``) down to 0.

        Shapes:
            pos: [B, D]; pos_items: [B] -> [C, B, D] with C = number of levels.
        """
        o = self.options
        b, d = pos.shape
        idx = (self.levels_desc - 1).repeat_interleave(b)  # [C*B], -1 = no noise
        x0 = pos.repeat(len(self.levels), 1)  # [C*B, D]
        noise = torch.randn(x0.shape, generator=gen, device=pos.device, dtype=pos.dtype)
        x = q_sample(self.sched, x0, idx.clamp_min(0), noise)
        x = torch.where((idx >= 0).unsqueeze(1), x, x0)
        start: torch.Tensor | int = self.sched.steps - 1 if o.denoise_from == "T" else idx
        # rows with start >= t, known on the host: no device read in the chain
        top = max(self.levels) - 1 if self.levels else -1
        counts = [b * sum(k - 1 >= t for k in self.levels) for t in range(top + 1)]
        env = None
        if self.denoiser.num_envs and o.generation == "sample":
            env = torch.multinomial(self.prior, x0.shape[0], replacement=True, generator=gen)
        dropout = bool(o.sampling_dropout)
        den, sched = self.denoiser, self.sched
        tb = den.time_bias(sched.steps)  # [T, H], once per chain
        c1, c2 = self._coefs

        def step_fn(xs: torch.Tensor, t: int, n: int) -> torch.Tensor:
            e = None if env is None else env[:n]
            return den.reverse_step(xs, t, c1[t], c2[t], e, gen, dropout, tb)

        def x0_fn(xs: torch.Tensor, t: int, n: int) -> torch.Tensor:
            k = self.prior.numel()
            envs = torch.arange(k, device=xs.device).repeat_interleave(n)
            out = den(xs.repeat(k, 1), t, envs, gen, dropout, tb)
            return torch.einsum("k,knd->nd", self.prior, out.view(k, n, -1))

        averaged = den.num_envs and env is None
        h = reverse_chain(
            sched,
            x,
            start,
            x0_fn if averaged else None,
            gen,
            o.sampling_noise,
            step_fn=None if averaged else step_fn,
            counts=None if isinstance(start, int) else counts,
        )
        return h.view(len(self.levels), b, d).flip(0)  # back to ascending level order


def rescale_candidates(
    cands: torch.Tensor, mode: str, pos: torch.Tensor, items: torch.Tensor
) -> torch.Tensor:
    """Generated candidates moved to an embedding-space norm (``CNSDiffOptions.rescale``).

    "positive": each candidate gets the L2 norm of its own positive; "items": the mean L2 norm
    of all item embeddings; "none": unchanged. The candidate's norm is clamped at 1e-12 before
    dividing (``F.normalize``), so a zero candidate stays zero. Call it without gradient (the
    generated negatives are constants).

    Shapes:
        cands: [C, B, D]; pos: [B, D]; items: [I, D] -> [C, B, D].
    """
    if mode == "none":
        return cands
    if mode == "positive":
        target = pos.norm(dim=-1, keepdim=True)  # [B, 1], broadcast over the C levels
    elif mode == "items":
        target = items.norm(dim=-1).mean()  # scalar
    else:
        raise ConfigError(f"sampler.rescale must be one of none, positive, items; got {mode!r}")
    return F.normalize(cands, dim=-1) * target


def popularity_envs(item_degree: torch.Tensor, num_envs: int) -> torch.Tensor:
    """Environment id per item: equal-interaction-mass buckets of training popularity.

    Items with equal degree share a bucket. Shapes: [I] float -> [I] long in 0..K-1.
    """
    order = torch.sort(item_degree).values
    cum = order.cumsum(0)
    total = cum[-1].clamp_min(1)
    qs = torch.arange(1, num_envs, device=item_degree.device, dtype=cum.dtype) * total / num_envs
    thresholds = order[torch.searchsorted(cum, qs).clamp_max(order.numel() - 1)]
    return torch.bucketize(item_degree, thresholds).clamp_max(num_envs - 1)
