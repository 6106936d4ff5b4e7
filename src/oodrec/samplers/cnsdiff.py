"""CNSDiff: causal negative sampling via diffusion (Zhao et al.), in three modes.

Per batch (specs 1.3): generate candidate negatives from the positive item embedding at the
hardness levels t0 + k*s <= T (Eq. 14) in one batched reverse chain; keep the candidate with the
largest inner product with the user (Eq. 19); mix it with a uniform random negative by a
per-row ratio m ~ Beta(a, b) whose parameters move linearly over training (Eq. 20 as the code
does it, D7); add the alignment loss (Eq. 21, code form D8) and the diffusion loss with a causal
regulariser (Eq. 18) through ``aux_loss`` (Eq. 22).

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
causal          yes, own Adam  start level  variational 1.6  no                    squared
=============== ============== ============ ================ ===================== ========
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

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
from oodrec.seeding import beta_sample, make_generator

Mode = Literal["code_faithful", "paper", "causal"]

# Beta schedule endpoints (initial a, b -> final a, b) per dataset, paper Table 5 / specs 1.4.
BETA_PRESETS = {
    "food": (2.0, 8.0, 9.0, 1.0),
    "kuairec": (2.0, 8.0, 9.0, 1.0),
    "yelp2018": (1.0, 9.0, 9.0, 1.0),
}
CODE_BETA = (1.0, 9.0, 9.0, 1.0)

MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "code_faithful": dict(
        train_denoiser=False,
        denoise_from="T",
        causal_mode="code_kl",
        sampling_dropout=True,
        diffusion_grad_to_backbone=True,
        denoiser_lr=0.01,
    ),
    "paper": dict(
        train_denoiser=True,
        denoise_from="start",
        causal_mode="code_kl",
        sampling_dropout=False,
        diffusion_grad_to_backbone=True,
        denoiser_lr=0.01,
    ),
    "causal": dict(
        train_denoiser=True,
        denoise_from="start",
        causal_mode="variational",
        sampling_dropout=False,
        diffusion_grad_to_backbone=False,
        denoiser_lr=1e-3,
    ),
}


@dataclass(frozen=True)
class CNSDiffOptions:
    """CNSDiff hyperparameters (defaults: the published code, specs 1.4); None = mode default."""

    mode: Mode = "causal"
    """code_faithful | paper | causal (see the module docstring). Default: causal, the mode with
    the best validation NDCG@20 on most shipped datasets (README, "Results")."""
    steps: int = 20
    """Diffusion steps T. T also sets the number of candidates (Eq. 14: levels
    ``sample_start + k * stride <= T``), and with ``denoise_from="T"`` each candidate passes
    through all T reverse steps, so generation grows as T**2 / stride: T = 100 gives 23
    candidates of 100 steps each, 38 times the denoiser work of T = 20 (3 of 20)."""
    noise_schedule: Literal["linear-var", "linear"] = "linear-var"
    """Noise schedule kind."""
    noise_scale: float = 0.1
    """Schedule scale."""
    noise_min: float = 1e-4
    """Schedule minimum."""
    noise_max: float = 0.02
    """Schedule maximum."""
    sample_start: int = 10
    """t0 of Eq. 14: the first hardness level."""
    stride: int = 4
    """s of Eq. 14: levels t0, t0+s, ... <= T (default {10, 14, 18})."""
    sampling_noise: bool = False
    """Add posterior noise in the reverse chain (the code uses the posterior mean)."""
    denoise_from: Literal["T", "start"] | None = None
    """T: every candidate runs the full chain (D2, code); start: from its own level (paper)."""
    train_denoiser: bool | None = None
    """Train the denoiser with its own optimiser (the code never does, D1)."""
    denoiser_lr: float | None = None
    """Learning rate of the denoiser's Adam (0.01 paper, 1e-3 causal)."""
    sampling_dropout: bool | None = None
    """Keep the denoiser's input dropout active while sampling (D13)."""
    diffusion_grad_to_backbone: bool | None = None
    """Let the diffusion loss's gradient reach the item embeddings (code: yes)."""
    hidden: int = 64
    """Denoiser hidden width."""
    time_dim: int = 64
    """Denoiser time-embedding width."""
    dropout: float = 0.5
    """Denoiser input dropout."""
    diffusion_loss_weight: float = 1e-6
    """lambda_2: weight of the diffusion loss on the backbone."""
    causal_weight: float = 0.1
    """lambda_1: weight of the causal term inside the diffusion loss."""
    cl_weight: float = 0.3
    """lambda_3: weight of the alignment (contrastive) loss."""
    temperature: float = 2.0
    """tau of the alignment loss."""
    positive_noise: float = 0.01
    """Std of the noise that makes the alignment positive."""
    initial_alpha: float | None = None
    """Beta(a, b) mix schedule, initial a (None: dataset preset, else 1)."""
    initial_beta: float | None = None
    """Initial b (None: dataset preset, else 9)."""
    final_alpha: float | None = None
    """Final a (None: dataset preset, else 9)."""
    final_beta: float | None = None
    """Final b (None: dataset preset, else 1)."""
    min_mix_ratio: float = 0.0
    """Floor m_min of the applied mix weight: m <- clip((m_max - m_min) m + m_min, 0, 1)."""
    max_mix_ratio: float = 1.0
    """Ceiling m_max of the applied mix weight (1: the code and the paper). Below 1 the mixed
    negative keeps at least 1 - m_max of the random one even when the schedule has reached its
    final (a, b): on Yelp2018 every tuned curriculum run peaked on val once the mean applied
    weight reached 0.56-0.66 and degraded after it (results/tune_ood)."""
    curriculum_epochs: int | None = None
    """Horizon H of the Beta(a, b) schedule, in epochs: rho = min(epoch / H, 1), and the final
    (a, b) hold from epoch H on. None: H = train.epochs (the code and the paper; rho then never
    reaches 1, specs 1.9). Set it below train.epochs when early stopping ends runs long before
    train.epochs, or the generated negative never gets much weight (E[m] = a / (a + b))."""
    rescale: Literal["none", "positive", "items"] = "none"
    """Rescale every generated candidate to an L2 norm taken from the embedding space, before
    the hardest is chosen (so hardness, Eq. 19, is measured at the new scale): "positive": the
    norm of its own positive item's embedding; "items": the mean norm of the whole propagated
    item table of the current batch; "none": the denoiser's own scale (the code, D3). The scale
    factor is detached (the generated negative stays a constant, specs 1.9); a zero candidate
    stays zero. The alignment loss is cosine-based, so only its choice of candidate changes."""
    negatives_per_positive: int = 1
    """K: keep the K hardest generated candidates (largest inner product with the user) per
    positive; each is mixed with its own uniform random negative and its own m ~ Beta(a, b)
    and gives its own BPR term; the K terms are averaged (weights 1/K), so the loss scale does
    not grow with K. The alignment loss uses the hardest (k = 0) and its random negative. The
    L2 term covers all K random negatives. K must not exceed the number of candidates (the
    levels sample_start, sample_start + stride, ... <= steps; 3 by default)."""
    score_diagnostics: bool = True
    """Also log per epoch the mean inner product of the user with the mixed negative
    (cnsdiff_mixed_score), the random negative (cnsdiff_random_score) and the chosen generated
    candidate (cnsdiff_generated_score) over the training batches: mixed above random means the
    mix made the negative harder. The mean mix weight m applied is always logged (cnsdiff_mix).
    Changes no training value; off by default only so that default runs log the same keys as
    before."""
    mixup: bool = True
    """Ablation switch: False uses the generated negative directly (w/o Mixup)."""
    align: bool = True
    """Ablation switch: False drops the alignment loss (w/o Align)."""
    causal: bool = True
    """Ablation switch: False drops the causal term (w/o Causal)."""
    causal_mode: Literal["code_kl", "variational", "rex", "none"] | None = None
    """Causal regulariser: the code's KL, the variational bound of specs 1.6, or REx."""
    num_envs: int = 4
    """K environments (item-popularity buckets of equal interaction mass)."""
    prior: Literal["uniform", "empirical"] = "uniform"
    """Environment prior p0(e)."""
    env_supervision: float = 1.0
    """gamma: weight of the cross-entropy anchoring q_phi to the observed environment."""
    likelihood_scale: Literal["mean", "sum"] = "mean"
    """D_t(e) per dimension (mean, default) or summed (exact ELBO)."""
    generation: Literal["sample", "average"] = "sample"
    """Backdoor-adjusted generation: one e ~ p0 per chain, or average f over p0 each step."""

    def resolved(self, dataset: str) -> CNSDiffOptions:
        """Fill every ``None`` from the mode and the dataset presets; validate."""
        if self.mode not in MODE_DEFAULTS:
            raise ConfigError(
                f"sampler.mode must be one of {sorted(MODE_DEFAULTS)}, got {self.mode!r}"
            )
        fill = {k: v for k, v in MODE_DEFAULTS[self.mode].items() if getattr(self, k) is None}
        beta = BETA_PRESETS.get(dataset, CODE_BETA)
        for name, value in zip(
            ("initial_alpha", "initial_beta", "final_alpha", "final_beta"), beta
        ):
            if getattr(self, name) is None:
                fill[name] = value
        out = replace(self, **fill)
        if out.sample_start > out.steps or out.stride < 1:
            raise ConfigError(
                f"sampler.sample_start ({out.sample_start}) must be <= steps ({out.steps}) and "
                f"sampler.stride ({out.stride}) >= 1"
            )
        if min(out.initial_alpha, out.initial_beta, out.final_alpha, out.final_beta) <= 0:
            raise ConfigError("Beta schedule parameters must be > 0")
        if not 0.0 <= out.min_mix_ratio <= out.max_mix_ratio <= 1.0:
            raise ConfigError(
                f"sampler.min_mix_ratio ({out.min_mix_ratio}) and sampler.max_mix_ratio "
                f"({out.max_mix_ratio}) must satisfy 0 <= min_mix_ratio <= max_mix_ratio <= 1"
            )
        if out.curriculum_epochs is not None and out.curriculum_epochs < 1:
            raise ConfigError(
                f"sampler.curriculum_epochs must be >= 1 (or None for train.epochs), "
                f"got {out.curriculum_epochs}"
            )
        if out.rescale not in ("none", "positive", "items"):
            raise ConfigError(
                f"sampler.rescale must be one of ['none', 'positive', 'items'], got {out.rescale!r}"
            )
        levels = list(range(out.sample_start, out.steps + 1, out.stride))
        if not 1 <= out.negatives_per_positive <= len(levels):
            raise ConfigError(
                f"sampler.negatives_per_positive ({out.negatives_per_positive}) must be between 1 "
                f"and the number of generated candidates per positive ({len(levels)}: levels "
                f"{levels} from sample_start={out.sample_start}, stride={out.stride}, "
                f"steps={out.steps}); lower it, or add levels with a smaller sample_start or stride"
            )
        return out


class CNSDiffSampler(NegativeSampler):
    """Causal Negative Sampling via Diffusion (CNSDiff).

    Paper: Zhao et al., "Causal Negative Sampling via Diffusion Model for Out-of-Distribution
    Recommendation". Code: user683/CNSDiff @ aca2aa1 (specs 1.11).

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
        self.opt = opt
        self.sched = make_schedule(
            opt.noise_schedule, opt.steps, opt.noise_scale, opt.noise_min, opt.noise_max
        ).to(ctx.device)
        self.levels = [k for k in range(opt.sample_start, opt.steps + 1, opt.stride)]
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
        mass = torch.bincount(
            self.item_env.cpu(), weights=deg.cpu(), minlength=opt.num_envs
        ).to(deg.device)
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

    @staticmethod
    def train_overrides(options: dict[str, Any]) -> dict[str, Any]:
        """``code_faithful`` also uses the CNSDiff code's SELFRec L2 form (D10)."""
        return {"train.l2_form": "selfrec"} if options.get("mode") == "code_faithful" else {}

    def param_groups(self) -> list[dict[str, Any]]:
        if not self.opt.train_denoiser:
            return []
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.opt.denoiser_lr, "weight_decay": 0.0}]

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._stats, self._count = {}, 0

    def mix_params(self) -> tuple[float, float]:
        """Beta(a, b) of the current epoch: linear in rho = epoch / H, held at the final values
        from epoch H on. H = ``curriculum_epochs``, or the number of training epochs (then rho
        never reaches 1)."""
        o = self.opt
        rho = self.epoch / (o.curriculum_epochs or self.ctx.num_epochs)
        if rho >= 1:
            return o.final_alpha, o.final_beta
        return (
            o.initial_alpha + (o.final_alpha - o.initial_alpha) * rho,
            o.initial_beta + (o.final_beta - o.initial_beta) * rho,
        )

    def sample(self, batch: TripletBatch, emb: Embeddings, gen: torch.Generator) -> Negatives:
        o, n, k = self.opt, len(batch), self.opt.negatives_per_positive
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
            m = beta_sample(a, b, n * k, gen, pos.device).view(n, k)
            span = o.max_mix_ratio - o.min_mix_ratio  # 1 - m_min by default, as before
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
        o = self.opt
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
        if self.opt.score_diagnostics:
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
        o = self.opt
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
        o = self.opt
        b, d = pos.shape
        levels = torch.tensor(self.levels[::-1], device=pos.device)  # descending: prefix rule
        idx = (levels - 1).repeat_interleave(b)  # [C*B], -1 = no noise
        x0 = pos.repeat(len(self.levels), 1)  # [C*B, D]
        noise = torch.randn(x0.shape, generator=gen, device=pos.device, dtype=pos.dtype)
        x = q_sample(self.sched, x0, idx.clamp_min(0), noise)
        x = torch.where((idx >= 0).unsqueeze(1), x, x0)
        start: torch.Tensor | int = self.sched.steps - 1 if o.denoise_from == "T" else idx
        env = None
        if self.denoiser.num_envs and o.generation == "sample":
            env = torch.multinomial(self.prior, x0.shape[0], replacement=True, generator=gen)
        dropout = bool(o.sampling_dropout)
        den, sched = self.denoiser, self.sched
        tb = den.time_bias(sched.steps)  # [T, H], once per chain
        c1, c2 = sched.coef1.tolist(), sched.coef2.tolist()

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
