"""``drgo``: DRGO (Zhao et al., WWW 2025), distributionally robust graph OOD recommendation via a
latent diffusion model, **our reconstruction** (docs/methods/drgo.md).

The released code trains no LightGCN parameter and evaluates on the test interactions, so this
is the method as the paper describes it, rebuilt on the training graph only, with the
underspecified parts chosen by us (docs/methods/drgo.md#a-reconstruction-what-is-ours).

Epoch 0 starts with stage A (``gen`` phase), ``pretrain_steps`` full-graph steps:

1. VGAE on the symmetric training graph: z = mean + eps * exp(log_std) from node features;
2. DiffRec x0 loss: t ~ U{0..T-1}, z_t = q(z, t), x0_hat = f(z_t, t),
   L_diff = mean_n w_t |z - x0_hat|^2 / d (SNR-difference weights);
3. L_vgae on x0_hat: balanced BCE over the training edges and one uniform non-edge per edge,
   plus the VGAE's KL / N; the step's loss is L_diff + kappa_s L_vgae with
   kappa_s = ``vgae_weight_final`` ** (s / S).

Then the LightGCN's egos are set to the denoised latents (the reverse chain over the training
graph's latents), and stage B (``main`` phase) runs on every epoch's pair batches:

1. per-pair BPR l_b against one uniform negative, group means L_g over the users' k-means
   groups (``oodrec.models.drgo.user_groups``);
2. S_g: Sinkhorn divergence (no gradient) between the propagated embeddings of the group's
   batch users and the nominal set P0 (top betweenness nodes of the training graph);
3. moving averages L~_g of L_g; weights w = softmax over the present groups of
   (L~_g - lambda_s S_g) / beta (``weights=entropic``), or the released code's
   exponentiated-gradient accumulation (``weights=code``);
4. loss sum_g sg(w_g) L_g + ``train.l2`` on the batch's egos.

Scores are inner products of the trained LightGCN over the training graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from oodrec.diffusion.denoiser import MLPDenoiser
from oodrec.diffusion.process import q_sample, reverse_chain, x0_loss_terms
from oodrec.diffusion.schedule import make_schedule
from oodrec.errors import ConfigError
from oodrec.methods.base import Method, MethodContext, NegativeProbe, Representations, Scorer
from oodrec.methods.common import (
    build_lightgcn,
    inner_product_representations,
    inner_product_scorer,
    pair_batches,
    training_positives,
    uniform_probe,
)
from oodrec.models.causaldiff import (
    VGAEEncoder,
    balanced_recon_loss,
    gcn_adjacency,
    random_features,
    vgae_kl_term,
)
from oodrec.models.drgo import (
    approx_betweenness,
    entropic_weights,
    exponentiated_weights,
    group_means,
    group_point_sets,
    group_point_sets_fixed,
    nominal_nodes,
    sinkhorn_divergence,
    update_ema,
    user_groups,
)
from oodrec.models.lightgcn import init_embedding_
from oodrec.models.losses import l2_loss
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items
from oodrec.seeding import make_generator


@dataclass(frozen=True)
class DRGOOptions:
    """DRGO hyperparameters. "released code" is user683/DRGO (``parse.py`` and constants in
    ``main.py``); "ours" marks the parts the paper leaves open (docs/methods/drgo.md). The
    latent size is ``model.emb_dim`` (released 64)."""

    num_groups: int = 5
    """k: DRO groups, k-means clusters of the users (released code ``k``)."""
    svd_rank: int = 64
    """Components of the truncated SVD of the training matrix that k-means clusters (released
    code, TruncatedSVD(64))."""
    nominal_fraction: float = 0.05
    """Share of nodes, by betweenness centrality, in the nominal set P0 (released code: 5 %;
    its comment says 10 %)."""
    centrality_sources: int = 100
    """Sampled BFS sources of the approximate betweenness (released code, networkx k=100)."""
    sinkhorn_weight: float = 1.0
    """lambda_s: weight of the Sinkhorn divergence in the adversary's objective (released code
    ``sinkhorn_weight``); 0 skips the Sinkhorn problems."""
    beta: float = 1.0
    """Entropy temperature of the group weights, w ~ exp((L~_g - lambda_s S_g) / beta) (ours; the
    paper's entropy regulariser, whose weight could not be read; tune in {0.1, 1, 10})."""
    weights: Literal["entropic", "code"] = "entropic"
    """``entropic``: the closed-form entropy-regularised weights (ours); ``code``: the released
    code's w <- w exp(eta (L~_g - lambda_s S_g)), renormalised, accumulated over all batches."""
    step_size: float = 1e-3
    """eta of ``weights=code`` (released code ``step_size``)."""
    ema_rate: float = 0.3
    """Rate of the group losses' moving average, L~ <- (1 - rate) L~ + rate L (released code)."""
    sinkhorn_blur: float = 0.05
    """Sinkhorn blur; the entropic epsilon is blur^p (released code, geomloss blur=0.05)."""
    sinkhorn_p: int = 1
    """Ground cost |x - y| (1) or |x - y|^2 / 2 (2) (released code, p=1)."""
    sinkhorn_scaling: float = 0.5
    """Epsilon-annealing factor per Sinkhorn iteration (geomloss's default, kept by the
    released code)."""
    sinkhorn_points: int = 128
    """Cap on the points of each side of a Sinkhorn problem: a group's distinct batch users and
    P0 are subsampled uniformly to it per batch (ours, for speed)."""
    pretrain_steps: int = 20
    """Stage A: full-graph generative steps at the start of epoch 0 (the released code takes one
    per epoch, 20 epochs on Food); 0 skips stage A and the LightGCN keeps its ``model.init``."""
    gen_lr: float = 1e-3
    """Adam learning rate of the VGAE, the node features and the denoiser (released ``lr``)."""
    features: Literal["learned", "random_fixed"] = "learned"
    """VGAE input: learnable id embeddings (ours) or the released code's fixed
    relu(one-hot through an untrained Linear)."""
    feature_dim: int = 64
    """Width of the node features (released code 64)."""
    hidden_dim: int = 64
    """Width of the VGAE's first GCN layer (released ``n_hid``)."""
    mlp_dim: int = 64
    """Hidden width of the denoiser MLP (released ``dims``)."""
    time_dim: int = 16
    """Width of the denoiser's sinusoidal time embedding (released ``emb_size``)."""
    dropout: float = 0.5
    """Dropout on the denoiser's input while training (released code)."""
    norm: bool = True
    """L2-normalise the denoiser's input (released code)."""
    steps: int = 100
    """Diffusion steps T (released ``steps``)."""
    noise_schedule: Literal["linear", "linear-var"] = "linear-var"
    """Beta schedule (released code ``linear-var``: the linspace is read as 1 - alpha_bar)."""
    noise_scale: float = 0.1
    """Scale of the schedule's endpoints (released code)."""
    noise_min: float = 1e-4
    """Lower endpoint before scaling (released code)."""
    noise_max: float = 0.02
    """Upper endpoint before scaling (released code)."""
    reweight: bool = True
    """SNR-difference weights w_t of the x0 loss (released code; False: plain MSE)."""
    vgae_weight_final: float = 0.01
    """kappa at the end of stage A; kappa_s = vgae_weight_final ** (s / pretrain_steps)
    (released code, per epoch)."""
    sampling_steps: int = 0
    """Generation noises the latents to step ``sampling_steps - 1`` (0: starts from them, as
    the released code), then runs all T reverse steps."""
    sampling_noise: bool = False
    """Posterior noise in the reverse steps of the generation (released code: off)."""

    def __post_init__(self) -> None:
        counts = {
            "num_groups": (self.num_groups, 1), "svd_rank": (self.svd_rank, 1),
            "centrality_sources": (self.centrality_sources, 1),
            "sinkhorn_points": (self.sinkhorn_points, 1),
            "pretrain_steps": (self.pretrain_steps, 0),
            "feature_dim": (self.feature_dim, 1), "hidden_dim": (self.hidden_dim, 1),
            "mlp_dim": (self.mlp_dim, 1), "time_dim": (self.time_dim, 1), "steps": (self.steps, 1),
        }  # fmt: skip
        for key, (value, low) in counts.items():
            if value < low:
                raise ConfigError(f"model.{key} must be >= {low}, got {value}")
        positive = {
            "beta": self.beta, "sinkhorn_blur": self.sinkhorn_blur, "gen_lr": self.gen_lr,
            "noise_scale": self.noise_scale, "vgae_weight_final": self.vgae_weight_final,
        }  # fmt: skip
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"model.{key} must be > 0, got {value}")
        if not 0 < self.nominal_fraction <= 1 or not 0 < self.ema_rate <= 1:
            raise ConfigError(
                f"model.nominal_fraction and model.ema_rate must be in (0, 1], got "
                f"{self.nominal_fraction}, {self.ema_rate}"
            )
        if not 0 < self.sinkhorn_scaling < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(
                f"model.sinkhorn_scaling must be in (0, 1) and model.dropout in [0, 1), got "
                f"{self.sinkhorn_scaling}, {self.dropout}"
            )
        if self.sinkhorn_p not in (1, 2):
            raise ConfigError(f"model.sinkhorn_p must be 1 or 2, got {self.sinkhorn_p}")
        if self.sinkhorn_weight < 0 or self.step_size < 0:
            raise ConfigError(
                f"model.sinkhorn_weight and model.step_size must be >= 0, got "
                f"{self.sinkhorn_weight}, {self.step_size}"
            )
        if not 0 <= self.sampling_steps <= self.steps:
            raise ConfigError(
                f"model.sampling_steps must be in [0, steps={self.steps}], got "
                f"{self.sampling_steps}"
            )


@dataclass(frozen=True)
class GenStep:
    """A ``gen``-phase batch: generative step ``index`` of stage A (the whole graph)."""

    index: int


class DRGO(Method):
    """DRGO, our reconstruction: a VGAE and a latent diffusion denoise the training graph's
    node embeddings, which start a LightGCN trained with entropy-regularised group DRO over BPR,
    the groups' adversary penalised by their Sinkhorn divergence to a central nominal set.

    Paper: Zhao et al., "Distributionally Robust Graph Out-of-Distribution Recommendation via
    Diffusion Model", WWW 2025 (code user683/DRGO). This is our reconstruction of the method the
    paper describes, not the released code (which trains no LightGCN parameter and evaluates on
    the test graph); docs/methods/drgo.md lists what is ours. Backbone: ``model.emb_dim``,
    ``model.num_layers`` (2); implied released settings: Adam lr 1e-3, batch 4096.
    """

    Options = DRGOOptions
    paper = (
        "Zhao et al., Distributionally Robust Graph Out-of-Distribution Recommendation via "
        "Diffusion Model (DRGO), WWW 2025 (our reconstruction)"
    )

    def __init__(self, ctx: MethodContext, options: DRGOOptions | None) -> None:
        opts = options or DRGOOptions()
        super().__init__(ctx, opts)
        data, cfg, dev = ctx.data, ctx.cfg, ctx.device
        self.num_users, self.num_items = data.num_users, data.num_items
        self.num_nodes = n = data.num_users + data.num_items
        dim = cfg.model.emb_dim
        self.model = build_lightgcn(ctx)
        self.positives = training_positives(ctx)
        gen = make_generator(cfg.seed, "init", 1)  # apart from the LightGCN's init stream
        if opts.features == "learned":
            feats = torch.empty(n, opts.feature_dim)
            init_embedding_(feats, "xavier_uniform", gen)
            self.features = nn.Parameter(feats)
        else:
            feats = random_features(data.num_users, data.num_items, opts.feature_dim, gen)
            self.register_buffer("features", feats, persistent=False)
        self.encoder = VGAEEncoder(opts.feature_dim, opts.hidden_dim, dim, gen)
        self.denoiser = MLPDenoiser(
            dim, opts.mlp_dim, opts.time_dim, opts.dropout, opts.norm, generator=gen
        )
        self.sched = make_schedule(
            opts.noise_schedule, opts.steps, opts.noise_scale, opts.noise_min, opts.noise_max
        ).to(dev)
        adj = gcn_adjacency(data.users, data.items, self.num_users, n)
        self.register_buffer("train_adj", adj, persistent=False)
        # groups and the nominal set: from the training pairs only, on the CPU, deterministic
        users, items = data.users.cpu(), data.items.cpu()
        ggen = make_generator(cfg.seed, "init", 2)
        groups = user_groups(
            users, items, data.num_users, data.num_items, opts.num_groups, opts.svd_rank, ggen
        )
        sources = torch.randperm(n, generator=ggen)[: opts.centrality_sources]
        central = approx_betweenness(users, items, data.num_users, data.num_items, sources)
        self.register_buffer("user_group", groups.to(dev), persistent=False)
        nominal = nominal_nodes(central, opts.nominal_fraction)
        self.register_buffer("nominal", nominal.to(dev), persistent=False)
        k = opts.num_groups
        self.register_buffer("loss_ema", torch.zeros(k, device=dev))
        self.register_buffer("sinkhorn_last", torch.zeros(k, device=dev))
        self.register_buffer("group_weights", torch.full((k,), 1.0 / k, device=dev))
        self._optims: dict[str, Any] | None = None
        self._stats: list[torch.Tensor] = []  # per batch: weight max, S_g mean, loss spread

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # released parse.py: lr 1e-3, batch 4096; LightGCN with 2 layers (the config default)
        return {"train.lr": 1e-3, "train.batch_size": 4096}

    def optimizers(self) -> dict[str, Any]:
        if self._optims is None:
            gen_params = [*self.encoder.parameters(), *self.denoiser.parameters()]
            if isinstance(self.features, nn.Parameter):
                gen_params.append(self.features)
            self._optims = {
                "main": torch.optim.Adam(self.model.parameters(), lr=self.ctx.cfg.train.lr),
                "gen": torch.optim.Adam(gen_params, lr=self.options.gen_lr),
            }
        return self._optims

    # ------------------------------------------------------------------ schedule

    def _gen_steps(self, epoch: int) -> int:
        return self.options.pretrain_steps if epoch == 0 else 0

    def start_epoch(self, epoch: int) -> None:
        self._stats = []

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[GenStep | TripletBatch]:
        for index in range(self._gen_steps(epoch)):
            yield GenStep(index)
        if self._gen_steps(epoch):  # after the last generative step was applied
            self.init_backbone()
        tcfg = self.ctx.cfg.train
        yield from pair_batches(self.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)

    def phase(self, epoch: int, step: int) -> str:
        return "gen" if step < self._gen_steps(epoch) else "main"

    # ------------------------------------------------------------------ stage A

    @torch.no_grad()
    def generate(self, gen: torch.Generator) -> torch.Tensor:
        """Denoised latents of every node from the training graph, no dropout.

        Returns: [U + I, D] (users first).
        """
        o, sched = self.options, self.sched
        z, _, _ = self.encoder(self.train_adj, self.features, gen)
        x = z
        if o.sampling_steps > 0:
            t = torch.full((z.shape[0],), o.sampling_steps - 1, device=z.device)
            x = q_sample(sched, z, t, torch.randn(z.shape, generator=gen, device=z.device))
        bias = self.denoiser.time_bias(sched.steps)

        def step_fn(xs: torch.Tensor, t: int, rows: int) -> torch.Tensor:
            return self.denoiser.reverse_step(
                xs, t, sched.coef1[t], sched.coef2[t], dropout_active=False, time_bias=bias
            )

        return reverse_chain(
            sched, x, sched.steps - 1, noise_gen=gen, sampling_noise=o.sampling_noise,
            step_fn=step_fn,
        )  # fmt: skip

    def init_backbone(self) -> None:
        """Set the LightGCN's egos to the denoised latents (and restart its Adam)."""
        gen = make_generator(self.ctx.cfg.seed, "diffusion", device=self.ctx.device)
        emb = self.generate(gen)
        with torch.no_grad():
            self.model.user_emb.copy_(emb[: self.num_users])
            self.model.item_emb.copy_(emb[self.num_users :])
        if self._optims is not None:
            self._optims["main"].state.clear()

    def gen_loss(self, step: GenStep, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One full-graph generative step: L_diff + kappa_s L_vgae."""
        o, data, sched = self.options, self.ctx.data, self.sched
        z, mean, log_std = self.encoder(self.train_adj, self.features, gen)
        t = torch.randint(sched.steps, (z.shape[0],), generator=gen, device=z.device)
        noise = torch.randn(z.shape, generator=gen, device=z.device)
        x0_hat = self.denoiser(q_sample(sched, z, t, noise), t, dropout_gen=gen)
        if o.reweight:
            diff = x0_loss_terms(sched, z, t, x0_hat).mean()
        else:
            diff = (z - x0_hat).pow(2).mean()
        neg = uniform_items(data.users, self.num_items, gen, positives=self.positives)
        items = data.items + self.num_users
        recon = balanced_recon_loss(x0_hat, data.users, items, data.users, neg + self.num_users)
        kappa = o.vgae_weight_final ** (step.index / max(o.pretrain_steps, 1))
        return {"diff": diff, "vgae": kappa * (recon - vgae_kl_term(mean, log_std))}

    # ------------------------------------------------------------------ stage B

    def loss(
        self, batch: GenStep | TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        if phase == "gen":
            return self.gen_loss(batch, gen)
        return self.dro_loss(batch, gen)

    @torch.no_grad()
    def group_sinkhorn(
        self, pooled: torch.Tensor, users: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """S_g for every group: Sinkhorn divergence between the propagated embeddings of the
        group's distinct batch users and those of P0, each side subsampled to
        ``sinkhorn_points``. Groups without batch users get 0.

        Shapes: pooled [U + I, D], users [B] -> [k].
        """
        o = self.options
        fixed = self.ctx.sync_free is not None
        points = group_point_sets_fixed if fixed else group_point_sets
        ids, mask = points(users, self.user_group, o.num_groups, o.sinkhorn_points, gen)
        nominal = self.nominal
        if nominal.numel() > o.sinkhorn_points:
            pick = torch.randperm(nominal.numel(), generator=gen, device=nominal.device)
            nominal = nominal[pick[: o.sinkhorn_points]]
        return sinkhorn_divergence(
            pooled[ids],
            mask,
            pooled[nominal],
            o.sinkhorn_blur,
            o.sinkhorn_p,
            o.sinkhorn_scaling,
            fixed=fixed,
        )

    def dro_loss(self, batch: TripletBatch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Group DRO over per-pair BPR, plus ``train.l2``
        (docs/methods/drgo.md#per-epoch-and-per-batch)."""
        o, tcfg = self.options, self.ctx.cfg.train
        users, pos = batch.users, batch.pos_items
        neg = uniform_items(users, self.num_items, gen, positives=self.positives)
        emb = self.model.propagate()
        u = emb.users[users]
        per_pair = F.softplus((u * emb.items[neg]).sum(-1) - (u * emb.items[pos]).sum(-1))
        means, present = group_means(per_pair, self.user_group[users], o.num_groups)
        with torch.no_grad():
            if o.sinkhorn_weight > 0:
                pooled = torch.cat([emb.users, emb.items])
                s = self.group_sinkhorn(pooled, users, gen)
                self.sinkhorn_last.copy_(torch.where(present, s, self.sinkhorn_last))
            self.loss_ema.copy_(update_ema(self.loss_ema, means.detach(), present, o.ema_rate))
            adversary = self.loss_ema - o.sinkhorn_weight * self.sinkhorn_last
            if o.weights == "entropic":
                w = entropic_weights(adversary, present, o.beta)
            else:
                w = exponentiated_weights(self.group_weights, adversary, o.step_size)
            self.group_weights.copy_(w)
            if self.ctx.sync_free is None:
                spread = means[present].max() - means[present].min()
                s_mean = self.sinkhorn_last[present].mean()
            else:  # the same values without boolean indexing (no host read)
                inf = torch.full_like(means, math.inf)
                spread = (
                    torch.where(present, means, -inf).max() - torch.where(present, means, inf).min()
                )
                s_mean = torch.where(present, self.sinkhorn_last, 0.0).sum() / present.sum()
            self._stats.append(torch.stack([w.max(), s_mean, spread]))
        if tcfg.l2_form == "selfrec":
            l2 = l2_loss(u, emb.items[pos], emb.items[neg], batch_size=1, form="selfrec")
        else:
            egos = (emb.user_ego[users], emb.item_ego[pos], emb.item_ego[neg])
            l2 = l2_loss(*egos, batch_size=len(batch), form="squared")
        return {"dro": (w * means).sum(), "l2": tcfg.l2 * l2}

    # ------------------------------------------------------------------ evaluation

    def scorer(self) -> Scorer:
        return inner_product_scorer(self.model)

    def representations(self) -> Representations:
        return inner_product_representations(self.model)

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.num_items, gen)

    def diagnostics(self) -> dict[str, float]:
        if not self._stats:
            return {}
        w_max, sinkhorn, spread = torch.stack(self._stats).mean(0).tolist()
        return {
            "drgo_weight_max": w_max,
            "drgo_sinkhorn": sinkhorn,
            "drgo_group_loss_spread": spread,
        }
