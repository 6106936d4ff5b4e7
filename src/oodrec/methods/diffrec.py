"""``diffrec``: DiffRec (Wang et al., SIGIR 2023), a diffusion model over interaction vectors.

Per batch of users (specs 11): the binary training history x0 [B, I] is gathered from a sparse
index (never a dense users x items matrix), a step t is drawn by importance sampling, x_t is the
forward-noised history, an MLP predicts x0, and the loss is the SNR-difference weighted MSE
divided by the step's sampling probability. Scores are the posterior-mean reverse chain run from
the clean history (``sampling_steps`` = 0) through all T steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from oodrec.data.csr import CSR
from oodrec.diffusion.denoiser import _xavier_normal_, dropout_with, timestep_embedding
from oodrec.diffusion.process import q_sample, reverse_chain
from oodrec.diffusion.schedule import make_schedule
from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, Scorer
from oodrec.seeding import make_generator

OFFICIAL_LR, OFFICIAL_BATCH = 1e-5, 400  # yelp_clean checkpoint (specs 11)


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
    noise_scale: float = 0.01
    """Scale of the schedule's endpoints (0 disables noise)."""
    noise_min: float = 0.001
    """Lower endpoint before scaling."""
    noise_max: float = 0.01
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


class DiffRecDNN(nn.Module):
    """DiffRec's denoiser: [dropout(x_t), Linear(temb(t))] -> tanh MLP -> |I| outputs.

    Layers run I + E -> dims[-1] -> ... -> dims[0] (tanh after each), then dims[0] -> ... ->
    dims[-1] -> I (tanh between, none at the end), as the official ``DNN`` with
    ``in_dims = [I] + dims[::-1]``. Weights N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2).
    The time part of the first layer is a per-step bias (no concatenation of a [B, I + E] input).

    Shapes:
        x [B, I], t [B] long -> [B, I].
    """

    def __init__(
        self,
        num_items: int,
        dims: tuple[int, ...],
        emb_size: int,
        norm: bool,
        dropout: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.emb_size, self.norm, self.p = emb_size, norm, dropout
        self.emb_layer = nn.Linear(emb_size, emb_size)
        in_dims = [num_items, *dims[::-1]]
        out_dims = [*dims, num_items]
        first = [in_dims[0] + emb_size, *in_dims[1:]]
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(first[:-1], first[1:]))
        self.out_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(out_dims[:-1], out_dims[1:])
        )
        for layer in (self.emb_layer, *self.in_layers, *self.out_layers):
            _xavier_normal_(layer, generator)

    def time_bias(self, t: torch.Tensor) -> torch.Tensor:
        """First-layer pre-activation contribution of the time embedding. Shape [N, H]."""
        first = self.in_layers[0]
        w_t = first.weight[:, first.in_features - self.emb_size :]
        return self.emb_layer(timestep_embedding(t, self.emb_size)) @ w_t.T + first.bias

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, gen: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.norm:
            x = torch.nn.functional.normalize(x, dim=-1)
        if self.training:
            x = dropout_with(x, self.p, gen)
        first = self.in_layers[0]
        w_x = first.weight[:, : first.in_features - self.emb_size]  # [H, I]
        steps, inverse = torch.unique(t, return_inverse=True)
        h = torch.addmm(self.time_bias(steps)[inverse], x, w_x.T)
        h = torch.tanh(h)
        for layer in self.in_layers[1:]:
            h = torch.tanh(layer(h))
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != len(self.out_layers) - 1:
                h = torch.tanh(h)
        return h


def update_loss_history(
    history: torch.Tensor, count: torch.Tensor, t: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append a batch's per-row losses to per-step FIFO histories, without a loop over rows.

    Equivalent to DiffRec's sequential update: for each row in order, if step t's history is
    full, shift it left and write the loss last; else write it at position ``count[t]`` and
    increment. So each step keeps the last H of (its old entries, its new losses in row order).

    Args:
        history: [T, H] recorded losses (row t: the first ``count[t]`` are valid).
        count: [T] long, valid entries per step.
        t: [B] long, the rows' steps.
        loss: [B], the rows' losses (detached).

    Returns:
        The new ``(history [T, H], count [T])``.
    """
    steps, width = history.shape
    order = torch.argsort(t, stable=True)
    ts, ls = t[order], loss[order].to(history.dtype)
    n_t = torch.bincount(t, minlength=steps)  # [T]
    group_start = n_t.cumsum(0) - n_t
    rank = torch.arange(ts.numel(), device=t.device) - group_start[ts]  # rank within step
    total = count + n_t
    drop = (total - width).clamp_min(0)  # oldest entries pushed out, per step
    new = torch.zeros_like(history)
    pos = torch.arange(width, device=t.device).unsqueeze(0)  # [1, H]
    old_pos = pos - drop.unsqueeze(1)  # [T, H]
    keep_old = (pos < count.unsqueeze(1)) & (old_pos >= 0)
    rows = torch.arange(steps, device=t.device).unsqueeze(1).expand(steps, width)
    new[rows[keep_old], old_pos[keep_old]] = history[keep_old]
    new_pos = count[ts] + rank - drop[ts]
    keep = new_pos >= 0
    new[ts[keep], new_pos[keep]] = ls[keep]
    return new, total.clamp_max(width)


def importance_probs(history: torch.Tensor, uniform_prob: float) -> torch.Tensor:
    """p_t proportional to sqrt(mean_h L_{t,h}^2), mixed with ``uniform_prob`` uniform mass.

    Shapes: history [T, H] -> [T] (sums to 1).
    """
    lt = history.pow(2).mean(-1).sqrt()
    p = lt / lt.sum()
    return p * (1.0 - uniform_prob) + uniform_prob / p.numel()


class DiffRec(Method):
    """DiffRec: denoising diffusion over each user's interaction vector.

    Paper: Wenjie Wang et al., "Diffusion Recommender Model", SIGIR 2023 (official code
    YiyanXu/DiffRec). Defaults are the ``yelp_clean`` checkpoint's (lr 1e-5, batch 400, dims
    [1000], T = 5, noise scale 0.01 in [0.001, 0.01], reweighting, importance-sampled steps).
    """

    Options = DiffRecOptions
    paper = "Wang et al., Diffusion Recommender Model (DiffRec), SIGIR 2023"

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
        n = self.users.numel()
        perm = torch.randperm(n, generator=gen, device=self.users.device)
        bs = tcfg.batch_size
        stop = n - n % bs if tcfg.drop_last and n >= bs else n
        for start in range(0, stop, bs):
            yield self.users[perm[start : start + bs]]

    def x0(self, users: torch.Tensor) -> torch.Tensor:
        """Binary training histories of ``users``, gathered from the sparse index. [B, I]."""
        return self.history.dense(users, self.num_items).float()

    def sample_steps(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps t [n] and their sampling weights p_t * T [n] (uniform: ones)."""
        steps, device = self.sched.steps, self.users.device
        full = bool((self.loss_count == self.options.history_per_step).all())
        if self.options.time_sampler == "importance" and full:
            probs = importance_probs(self.loss_history, self.options.uniform_prob)
            t = torch.multinomial(probs, n, replacement=True, generator=gen)
            return t, probs[t] * steps
        t = torch.randint(0, steps, (n,), generator=gen, device=device)
        return t, torch.ones(n, device=device)

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
        self._stats["importance"] += float(pt.ne(1.0).any())
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
        return {"diffrec_importance_share": self._stats.get("importance", 0.0) / n}
