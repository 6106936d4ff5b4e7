"""CNSDiff's options (``CNSDiffOptions``), the defaults each mode implies (``MODE_DEFAULTS``) and
the per-dataset Beta schedule presets. The modes are described in ``oodrec.samplers.cnsdiff``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from oodrec.errors import ConfigError
from oodrec.ranges import ranged

Mode = Literal["code_faithful", "paper", "causal"]

# Beta schedule endpoints (initial a, b -> final a, b) per dataset, paper Table 5 /
# docs/samplers/cnsdiff.md#options.
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
    """CNSDiff hyperparameters (defaults: the published code, docs/samplers/cnsdiff.md#options);
    None = mode default."""

    mode: Mode = "causal"
    """code_faithful | paper | causal (see ``oodrec.samplers.cnsdiff``). Default: causal, the
    mode with the best validation NDCG@20 on most shipped datasets (README, "Results")."""
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
    diffusion_loss_weight: float = ranged(1e-6, ge=0)
    """lambda_2: weight of the diffusion loss on the backbone."""
    causal_weight: float = ranged(0.1, ge=0)
    """lambda_1: weight of the causal term inside the diffusion loss."""
    cl_weight: float = ranged(0.3, ge=0)
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
    reaches 1, docs/samplers/cnsdiff.md#implementation-notes). Set it below train.epochs when early
    stopping ends runs long before train.epochs, or the generated negative never gets much weight
    (E[m] = a / (a + b))."""
    rescale: Literal["none", "positive", "items"] = "none"
    """Rescale every generated candidate to an L2 norm taken from the embedding space, before
    the hardest is chosen (so hardness, Eq. 19, is measured at the new scale): "positive": the
    norm of its own positive item's embedding; "items": the mean norm of the whole propagated
    item table of the current batch; "none": the denoiser's own scale (the code, D3). The scale
    factor is detached (the generated negative stays a constant,
    docs/samplers/cnsdiff.md#implementation-notes); a zero candidate stays zero. The alignment loss
    is cosine-based, so only its choice of candidate changes."""
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
    Changes no training value; off by default, so that default runs log only the mix weight
    among these."""
    mixup: bool = True
    """Ablation switch: False uses the generated negative directly (w/o Mixup)."""
    align: bool = True
    """Ablation switch: False drops the alignment loss (w/o Align)."""
    causal: bool = True
    """Ablation switch: False drops the causal term (w/o Causal)."""
    causal_mode: Literal["code_kl", "variational", "rex", "none"] | None = None
    """Causal regulariser: the code's KL, the variational bound of
    docs/samplers/cnsdiff.md#the-causal-regulariser, or REx."""
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


__all__ = ["BETA_PRESETS", "CODE_BETA", "MODE_DEFAULTS", "CNSDiffOptions", "Mode"]
