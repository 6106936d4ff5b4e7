"""``diffrec``: DiffRec (Wang et al., SIGIR 2023), a diffusion model over interaction vectors.

Per batch of users (docs/methods/diffrec.md): the binary training history x0 [B, I] is gathered from
a sparse index (never a dense users x items matrix), a step t is drawn by importance sampling, x_t
is the forward-noised history, an MLP predicts x0, and the loss is the SNR-difference weighted MSE
divided by the step's sampling probability. Scores are the posterior-mean reverse chain run from the
clean history (``sampling_steps`` = 0) through all T steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from oodrec.data.csr import CSR
from oodrec.diffusion.process import q_sample, reverse_chain
from oodrec.diffusion.schedule import make_schedule
from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, Scorer
from oodrec.methods.common import PaddedRows, fixed_multi_hot, user_batches
from oodrec.models.diffrec import DiffRecDNN, importance_probs, update_loss_history
from oodrec.ranges import ranged
from oodrec.seeding import make_generator

OFFICIAL_LR, OFFICIAL_BATCH = 1e-5, 400  # yelp_clean checkpoint (docs/methods/diffrec.md)


@dataclass(frozen=True)
class DiffRecOptions:
    """DiffRec hyperparameters; defaults are the official ``yelp_clean`` checkpoint's."""

    dims: tuple[int, ...] = (1000,)
    """Hidden widths of the MLP (``[200, 600]`` for ml-1m)."""
    emb_size: int = 10
    """Width of the sinusoidal time embedding (passed through a Linear layer)."""
    norm: bool = False
    """L2-normalise the noised input before dropout."""
    dropout: float = 0.5
    """Dropout on the noised input while training."""
    steps: int = 5
    """Diffusion steps T."""
    noise_schedule: Literal["linear", "linear-var"] = "linear-var"
    """Beta schedule (DiffRec's ``linear-var`` reads the linspace as 1 - alpha_bar)."""
    noise_scale: float = ranged(0.01, ge=0)
    """Scale of the schedule's endpoints (0 disables noise)."""
    noise_min: float = ranged(0.001, ge=0)
    """Lower endpoint before scaling."""
    noise_max: float = ranged(0.01, ge=0)
    """Upper endpoint before scaling."""
    sampling_steps: int = 0
    """Inference starts from the history noised to step ``sampling_steps - 1`` (0: clean)."""
    sampling_noise: bool = False
    """Add posterior noise in the reverse chain at inference."""
    reweight: bool = True
    """SNR-difference loss weights w_t = SNR(t-1) - SNR(t), w_0 = 1 (False: w_t = 1)."""
    time_sampler: Literal["importance", "uniform"] = "importance"
    """Step sampling: ``importance`` (p_t ~ sqrt(E[L_t^2]) once every step has a full loss
    history, uniform before) or ``uniform``."""
    history_per_step: int = 10
    """Recorded losses per step for importance sampling."""
    uniform_prob: float = 0.001
    """Uniform mass mixed into the importance distribution."""
    weight_decay: float = 0.0
    """Adam weight decay. The learning rate, batch size and evaluation schedule are ``train.*``
    settings; DiffRec implies the official lr 1e-5, batch 400, evaluation every 5 epochs and
    patience 4 (20 epochs) unless they are set."""

    def __post_init__(self) -> None:
        if not self.dims or any(d < 1 for d in self.dims):
            raise ConfigError(f"model.dims must be positive widths, got {self.dims}")
        if self.steps < 1 or not 0 <= self.sampling_steps <= self.steps:
            raise ConfigError(
                f"model.steps must be >= 1 and 0 <= model.sampling_steps <= steps, got "
                f"steps={self.steps}, sampling_steps={self.sampling_steps}"
            )
        if not 0 <= self.dropout < 1 or self.history_per_step < 1:
            raise ConfigError(
                f"model.dropout must be in [0, 1) and model.history_per_step >= 1, got "
                f"{self.dropout}, {self.history_per_step}"
            )


class DiffRec(Method):
    """DiffRec: denoising diffusion over each user's interaction vector.

    Paper: Wenjie Wang et al., "Diffusion Recommender Model", SIGIR 2023 (official code
    YiyanXu/DiffRec). Defaults are the ``yelp_clean`` checkpoint's (lr 1e-5, batch 400, dims
    [1000], T = 5, noise scale 0.01 in [0.001, 0.01], reweighting, importance-sampled steps).
    """

    Options = DiffRecOptions
    paper = "Wang et al., Diffusion Recommender Model (DiffRec), SIGIR 2023"
    unscored_reason = (
        "DiffRec scores a user by denoising the user's whole interaction vector; it has no "
        "vector per user or item"
    )

    def __init__(self, ctx: MethodContext, options: DiffRecOptions | None) -> None:
        opts = options or DiffRecOptions()
        super().__init__(ctx, opts)
        data = ctx.data
        self.num_items = data.num_items
        self.history = CSR(data.users.cpu(), data.items.cpu(), data.num_users).to(ctx.device)
        self.users = torch.arange(data.num_users, device=ctx.device)
        self.sched = make_schedule(
            opts.noise_schedule, opts.steps, opts.noise_scale, opts.noise_min, opts.noise_max
        ).to(ctx.device)
        gen = make_generator(ctx.cfg.seed, "init")
        self.dnn = DiffRecDNN(
            data.num_items, opts.dims, opts.emb_size, opts.norm, opts.dropout, generator=gen
        )
        # sync-free mode: fixed-shape histories, step biases and loss-history updates
        self.padded = PaddedRows(self.history) if ctx.sync_free is not None else None
        if self.padded is not None:
            self.dnn.num_steps = opts.steps
        self.register_buffer("loss_history", torch.zeros(opts.steps, opts.history_per_step))
        self.register_buffer("loss_count", torch.zeros(opts.steps, dtype=torch.long))
        self._stats = {"importance": 0.0, "batches": 0.0}

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # The official main.py evaluates every 5 epochs and stops 20 epochs after the best one.
        return {
            "train.lr": OFFICIAL_LR,
            "train.batch_size": OFFICIAL_BATCH,
            "train.eval_every": 5,
            "train.patience": 4,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.ctx.cfg
        return {
            "main": torch.optim.Adam(
                self.parameters(), lr=cfg.train.lr, weight_decay=self.options.weight_decay
            )
        }

    def start_epoch(self, epoch: int) -> None:
        self._stats = {"importance": 0.0, "batches": 0.0}

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
        tcfg = self.ctx.cfg.train
        return user_batches(self.users, tcfg.batch_size, tcfg.drop_last, gen)

    def x0(self, users: torch.Tensor) -> torch.Tensor:
        """Binary training histories of ``users``, gathered from the sparse index. [B, I]."""
        if self.padded is not None:  # fixed shapes (sync-free mode)
            items = self.padded.batch(users)  # [B, L], -1 = padding
            return fixed_multi_hot(items, items >= 0, self.num_items)
        return self.history.dense(users, self.num_items).float()

    def sample_steps(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps t [n] and their sampling weights p_t * T [n] (uniform: ones)."""
        steps, device = self.sched.steps, self.users.device
        if self.padded is not None and self.options.time_sampler == "importance":
            return self._sample_steps_fixed(n, gen)
        importance = self.options.time_sampler == "importance"
        if importance and bool((self.loss_count == self.options.history_per_step).all()):
            probs = importance_probs(self.loss_history, self.options.uniform_prob)
            t = torch.multinomial(probs, n, replacement=True, generator=gen)
            return t, probs[t] * steps
        t = torch.randint(0, steps, (n,), generator=gen, device=device)
        return t, torch.ones(n, device=device)

    def _sample_steps_fixed(self, n: int, gen: torch.Generator):
        """``sample_steps`` without reading the device (sync-free mode): both draws are made
        and the full-history test picks one per batch on the device (another random stream
        than the exact mode's, the same distribution)."""
        steps, device = self.sched.steps, self.users.device
        full = (self.loss_count == self.options.history_per_step).all()
        probs = importance_probs(self.loss_history, self.options.uniform_prob)
        probs = torch.where(full, probs, torch.full_like(probs, 1.0 / steps))  # no NaN before
        t_imp = torch.multinomial(probs, n, replacement=True, generator=gen)
        t_uni = torch.randint(0, steps, (n,), generator=gen, device=device)
        t = torch.where(full, t_imp, t_uni)
        return t, torch.where(full, probs[t] * steps, torch.ones(n, device=device))

    def loss(
        self, batch: torch.Tensor, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        opts = self.options
        x0 = self.x0(batch)
        t, pt = self.sample_steps(batch.numel(), gen)
        if opts.noise_scale != 0.0:
            noise = torch.randn(x0.shape, generator=gen, device=x0.device)
            x_t = q_sample(self.sched, x0, t, noise)
        else:
            x_t = x0
        mse = (x0 - self.dnn(x_t, t, gen)).pow(2).mean(1)  # [B]
        weighted = self.sched.reweight[t] * mse if opts.reweight else mse
        if opts.time_sampler == "importance":
            with torch.no_grad():
                hist, count = update_loss_history(
                    self.loss_history, self.loss_count, t, weighted.detach()
                )
                self.loss_history.copy_(hist)
                self.loss_count.copy_(count)
        used = pt.ne(1.0).any()
        self._stats["importance"] += used.float() if self.padded is not None else float(used)
        self._stats["batches"] += 1
        return {"diffusion": (weighted / pt).mean()}

    def scorer(self) -> Scorer:
        opts = self.options
        sched, last = self.sched, self.sched.steps - 1
        gen = make_generator(self.ctx.cfg.seed, "diffusion", device=self.users.device)

        def step_x0(x: torch.Tensor, t: int, n: int) -> torch.Tensor:
            return self.dnn(x, torch.full((n,), t, dtype=torch.long, device=x.device))

        def score(users: torch.Tensor) -> torch.Tensor:
            x = self.x0(users)
            if opts.sampling_steps > 0:
                t = torch.full((x.shape[0],), opts.sampling_steps - 1, device=x.device)
                noise = torch.randn(x.shape, generator=gen, device=x.device)
                x = q_sample(sched, x, t, noise)
            if opts.noise_scale == 0.0:
                for t in range(last, -1, -1):
                    x = step_x0(x, t, x.shape[0])
                return x
            return reverse_chain(
                sched, x, last, step_x0, noise_gen=gen, sampling_noise=opts.sampling_noise
            )

        return score

    def diagnostics(self) -> dict[str, float]:
        n = max(self._stats.get("batches", 0.0), 1.0)
        return {"diffrec_importance_share": float(self._stats.get("importance", 0.0)) / n}
