"""``causaldiff``: CausalDiffRec (Zhao et al., WWW 2025), environment-invariant graph embeddings
from a VGAE, an environment-inference VAE and an environment-conditioned diffusion
(docs/methods/causaldiff.md).

Per epoch, as the official ``run_epoch``, on the **training graph only**
(docs/methods/causaldiff.md#departures):

1. ``env`` phase, one batch per outer step: draw K environment graphs (random rewiring with
   ``noise_level``, then the generator's edge flips); per environment, encode with the VGAE,
   take the environment embedding e = EVAE.decode(z), run the DiffRec x0 diffusion loss on z
   conditioned on e (importance-sampled steps, SNR weights), and the VGAE loss on the predicted
   x0 (balanced BCE on sampled pairs, minus the code's KL term). The outer loss is
   Var_k + beta Mean_k of the per-environment losses (``combine_env_loss``), and the generator
   gets REINFORCE, -sg(Var) * sum_k log p_k. Adam steps the VGAE, Adagrad the denoiser, the EVAE
   and the generator (the official optimisers).
2. Generation: encode the training graph, e = EVAE.decode(z), reverse diffusion from z noised to
   ``sampling_steps - 1`` (posterior means, x0 clamped to [-1, 1]) -> embeddings [U + I, D]; they
   become the LightGCN's ego embeddings (``rec_init``).
3. ``main`` phase: one pass of BPR over the training pairs with uniform negatives, plus L2,
   Adam on the LightGCN.

Scores are inner products of the trained LightGCN over the training graph. Every graph
operation is sparse (``oodrec.models.causaldiff``): memory grows with the edges, not with N^2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from oodrec.diffusion.process import q_sample, reverse_chain
from oodrec.diffusion.schedule import make_schedule
from oodrec.errors import ConfigError
from oodrec.methods.base import (
    Method,
    MethodContext,
    NegativeProbe,
    OptimizerChain,
    Representations,
    Scorer,
)
from oodrec.methods.common import (
    build_lightgcn,
    inner_product_representations,
    inner_product_scorer,
    pair_batches,
    training_positives,
    uniform_probe,
)
from oodrec.models.causaldiff import (
    EdgeFlipGenerator,
    EnvDenoiser,
    EnvVAE,
    VGAEEncoder,
    balanced_recon_loss,
    combine_env_loss,
    diffusion_x0_loss,
    environment_keys,
    gcn_adjacency,
    random_features,
    vgae_kl_term,
)
from oodrec.models.diffrec import importance_probs, update_loss_history
from oodrec.models.losses import bpr_loss, l2_loss
from oodrec.samplers import TripletBatch
from oodrec.samplers.base import uniform_items
from oodrec.seeding import make_generator


@dataclass(frozen=True)
class CausalDiffOptions:
    """CausalDiffRec hyperparameters; defaults are the official ``parameters.py`` and
    ``train.py``. The latent size is ``model.emb_dim`` (official 8, implied;
    docs/methods/causaldiff.md advise 64 for a comparison with the other methods)."""

    num_envs: int = 3
    """K: environment graphs per outer step (their losses give Var_k and Mean_k)."""
    noise_level: float = 0.8
    """Share of the training edges replaced by a uniformly random user-item pair in each
    environment graph. The official code overwrites 80 % of all N^2 dense entries with random
    bits instead (a near-complete random graph); 0 keeps only the generator's flips."""
    num_flips: int = 5
    """Pairs each node flips in each environment graph (the official ``num_sample``)."""
    num_candidates: int = 32
    """Candidate partners per node that the flips are drawn from (the sparse stand-in for the
    official softmax over all N nodes)."""
    reset_generator: bool = True
    """Re-draw the generator's logits (U(0, 1)) and candidates before every outer step, as the
    official code does every epoch; False keeps and learns them."""
    beta: float = 1.0
    """Weight of Mean_k in the outer loss Var_k + beta Mean_k (the official schedule is 1)."""
    loss_mode: Literal["code", "paper_intended"] = "code"
    """Per-environment loss. ``code``: 0.1 (1 + elbo) + 0.01 vgae, as the official
    ``adjust_loss`` call with shifted arguments computes it (the inference loss is dropped, so
    the EVAE encoder and prior are not built). ``paper_intended``: 0.1 (elbo + vgae) + 0.01 infer,
    with the EVAE reconstructing z (the code's target is its own log-std)."""
    features: Literal["random", "learned"] = "random"
    """Node features fed to the VGAE. ``random``: fixed relu(one-hot ids through an untrained
    Linear), as the official preprocessing; ``learned``: the same table, trained with the VGAE."""
    feature_dim: int = 64
    """Width of the node features."""
    hidden_dim: int = 8
    """Width of the VGAE's first GCN layer (``hidden1``)."""
    mlp_dims: tuple[int, ...] = (8,)
    """Hidden widths of the denoiser MLP (``mlp_dims``)."""
    time_dim: int = 10
    """Width of the sinusoidal time embedding (``emb_size``)."""
    dropout: float = 0.5
    """Dropout on the denoiser's noised input while training."""
    norm: bool = False
    """L2-normalise the denoiser's input."""
    steps: int = 100
    """Diffusion steps T."""
    noise_schedule: Literal["linear", "linear-var"] = "linear-var"
    """Beta schedule (``linear-var`` reads the linspace as 1 - alpha_bar)."""
    noise_scale: float = 0.1
    """Scale of the schedule's endpoints (> 0)."""
    noise_min: float = 0.01
    """Lower endpoint before scaling."""
    noise_max: float = 0.09
    """Upper endpoint before scaling."""
    sampling_steps: int = 100
    """Generation noises z to step ``sampling_steps - 1`` (0: starts from z), then runs all T
    reverse steps."""
    sampling_noise: bool = False
    """Add posterior noise in the reverse steps of the generation."""
    reweight: bool = True
    """SNR-difference weights of the x0 loss (w_t = SNR(t-1) - SNR(t), w_0 = 1)."""
    history_per_step: int = 10
    """Recorded losses per step for the importance sampling of t."""
    uniform_prob: float = 0.001
    """Uniform mass mixed into the importance distribution of t."""
    recon_negatives: int = 1
    """Sampled node pairs per training edge that estimate the non-edge half of the VGAE loss
    (the official dense loss uses all N^2 entries)."""
    env_lr: float = 0.1
    """Learning rate of the VGAE (Adam) and of the EVAE and the generator (Adagrad)."""
    denoiser_lr: float = 0.1
    """Adagrad learning rate of the denoiser (``lr2``)."""
    denoiser_weight_decay: float = 0.0
    """Adagrad weight decay of the denoiser (``wd2``)."""
    rec_init: Literal["once", "every_epoch"] = "once"
    """``once``: ``pretrain_steps`` outer steps in the first epoch, then the LightGCN starts from
    the generated embeddings and is kept (docs/methods/causaldiff.md); ``every_epoch``: as the
    official loop, ``env_steps`` outer steps per epoch, then the LightGCN (and its Adam state)
    restarts from freshly generated embeddings."""
    pretrain_steps: int = 25
    """``once``: outer steps before the LightGCN starts (official: 25 epochs of one step)."""
    env_steps: int = 1
    """``every_epoch``: outer steps per epoch (official 1)."""

    def __post_init__(self) -> None:
        counts = {
            "num_envs": (self.num_envs, 2), "num_flips": (self.num_flips, 1),
            "feature_dim": (self.feature_dim, 1), "hidden_dim": (self.hidden_dim, 1),
            "time_dim": (self.time_dim, 1), "steps": (self.steps, 1),
            "history_per_step": (self.history_per_step, 1),
            "recon_negatives": (self.recon_negatives, 1),
            "pretrain_steps": (self.pretrain_steps, 1), "env_steps": (self.env_steps, 1),
        }  # fmt: skip
        for key, (value, low) in counts.items():
            if value < low:
                raise ConfigError(f"model.{key} must be >= {low}, got {value}")
        if self.num_candidates < self.num_flips:
            raise ConfigError(
                f"model.num_candidates must be >= model.num_flips, got {self.num_candidates} < "
                f"{self.num_flips}"
            )
        if not self.mlp_dims or any(d < 1 for d in self.mlp_dims):
            raise ConfigError(f"model.mlp_dims must be positive widths, got {self.mlp_dims}")
        if not 0 <= self.sampling_steps <= self.steps or self.noise_scale <= 0:
            raise ConfigError(
                f"model.sampling_steps must be in [0, steps] and model.noise_scale > 0, got "
                f"{self.sampling_steps} (steps={self.steps}), {self.noise_scale}"
            )
        if not 0 <= self.noise_level <= 1 or not 0 <= self.dropout < 1 or self.beta < 0:
            raise ConfigError(
                f"model.noise_level must be in [0, 1], model.dropout in [0, 1) and model.beta "
                f">= 0, got {self.noise_level}, {self.dropout}, {self.beta}"
            )
        if min(self.env_lr, self.denoiser_lr) <= 0 or self.denoiser_weight_decay < 0:
            raise ConfigError(
                f"model.env_lr and model.denoiser_lr must be > 0 and denoiser_weight_decay >= 0, "
                f"got {self.env_lr}, {self.denoiser_lr}, {self.denoiser_weight_decay}"
            )


@dataclass(frozen=True)
class EnvStep:
    """An ``env``-phase batch: outer step ``index`` of the epoch (the whole graph each time)."""

    index: int


class CausalDiff(Method):
    """CausalDiffRec: LightGCN started from environment-invariant embeddings that a VGAE and an
    environment-conditioned latent diffusion learn over generated environment graphs.

    Paper: Zhao et al., "Graph Representation Learning via Causal Diffusion for
    Out-of-Distribution Recommendation", WWW 2025 (official code user683/CausalDiffRec).
    Backbone: ``model.emb_dim`` (the latent size), ``model.num_layers``; implied official
    settings: latent 8, 3 layers, Adam lr 1e-3, batch 2048, 25 epochs, L2 1e-3 (SELFRec form on
    the propagated rows). The environment / diffusion part has its own optimisers
    (``model.env_lr``, ``model.denoiser_lr``).
    """

    Options = CausalDiffOptions
    paper = (
        "Zhao et al., Graph Representation Learning via Causal Diffusion for Out-of-Distribution "
        "Recommendation (CausalDiffRec), WWW 2025"
    )

    def __init__(self, ctx: MethodContext, options: CausalDiffOptions | None) -> None:
        opts = options or CausalDiffOptions()
        super().__init__(ctx, opts)
        data, cfg, dev = ctx.data, ctx.cfg, ctx.device
        self.num_users, self.num_items = data.num_users, data.num_items
        self.num_nodes = data.num_users + data.num_items
        dim = cfg.model.emb_dim
        self.model = build_lightgcn(ctx)
        self.positives = training_positives(ctx)
        gen = make_generator(cfg.seed, "init", 1)  # apart from the LightGCN's init stream
        feats = random_features(self.num_users, self.num_items, opts.feature_dim, gen)
        if opts.features == "learned":
            self.features = nn.Parameter(feats)
        else:
            self.register_buffer("features", feats, persistent=False)
        self.encoder = VGAEEncoder(opts.feature_dim, opts.hidden_dim, dim, gen)
        self.evae = EnvVAE(dim, opts.loss_mode == "paper_intended", gen)
        self.denoiser = EnvDenoiser(dim, opts.mlp_dims, opts.time_dim, opts.dropout, opts.norm, gen)
        self.editor = EdgeFlipGenerator(
            opts.num_envs, self.num_users, self.num_items, opts.num_candidates
        )
        self.editor.reset(gen)
        self.sched = make_schedule(
            opts.noise_schedule, opts.steps, opts.noise_scale, opts.noise_min, opts.noise_max
        ).to(dev)
        self.register_buffer("loss_history", torch.zeros(opts.steps, opts.history_per_step))
        self.register_buffer("loss_count", torch.zeros(opts.steps, dtype=torch.long))
        adj = gcn_adjacency(data.users, data.items, self.num_users, self.num_nodes)
        self.register_buffer("train_adj", adj, persistent=False)
        self._optims: dict[str, Any] | None = None
        self._stats = {"env_edges": 0.0, "env_graphs": 0.0}

    @classmethod
    def train_overrides(cls, options: dict[str, Any]) -> dict[str, Any]:
        # official train.py: LightGCN with 3 layers on the 8-dim generated embeddings, Adam 1e-3,
        # batch 2048, l2_reg_loss(1e-3) (non-squared), 25 epochs, no early stopping.
        return {
            "model.emb_dim": 8,
            "model.num_layers": 3,
            "train.lr": 1e-3,
            "train.batch_size": 2048,
            "train.epochs": 25,
            "train.l2": 1e-3,
            "train.l2_form": "selfrec",
            "train.patience": 0,
        }

    def optimizers(self) -> dict[str, Any]:
        if self._optims is None:
            o = self.options
            vgae = list(self.encoder.parameters())
            if isinstance(self.features, nn.Parameter):
                vgae.append(self.features)
            env = OptimizerChain({
                "vgae": torch.optim.Adam(vgae, lr=o.env_lr),
                "denoiser": torch.optim.Adagrad(
                    self.denoiser.parameters(), lr=o.denoiser_lr,
                    weight_decay=o.denoiser_weight_decay,
                ),
                "evae": torch.optim.Adagrad(self.evae.parameters(), lr=o.env_lr),
                "generator": torch.optim.Adagrad(self.editor.parameters(), lr=o.env_lr),
            })  # fmt: skip
            main = torch.optim.Adam(self.model.parameters(), lr=self.ctx.cfg.train.lr)
            self._optims = {"main": main, "env": env}
        return self._optims

    # ------------------------------------------------------------------ schedule

    def _env_steps(self, epoch: int) -> int:
        o = self.options
        if o.rec_init == "once":
            return o.pretrain_steps if epoch == 0 else 0
        return o.env_steps

    def start_epoch(self, epoch: int) -> None:
        self._stats = {"env_edges": 0.0, "env_graphs": 0.0}

    def batches(self, epoch: int, gen: torch.Generator) -> Iterator[EnvStep | TripletBatch]:
        for index in range(self._env_steps(epoch)):
            yield EnvStep(index)
        # resumed after the last env step was applied: generate from the updated model
        if self.options.rec_init == "every_epoch" or epoch == 0:
            self.init_backbone(epoch)
        tcfg = self.ctx.cfg.train
        yield from pair_batches(self.ctx.data, tcfg.batch_size, tcfg.drop_last, gen)

    def phase(self, epoch: int, step: int) -> str:
        return "env" if step < self._env_steps(epoch) else "main"

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, gen: torch.Generator) -> torch.Tensor:
        """Embeddings of every node from the training graph (docs/methods/causaldiff.md#per-epoch),
        no dropout.

        Returns: [U + I, D] (users first).
        """
        o, sched, n = self.options, self.sched, self.num_nodes
        z, _, _ = self.encoder(self.train_adj, self.features, gen)
        e = self.evae.decode(z)
        x = z
        if o.sampling_steps > 0:
            t = torch.full((n,), o.sampling_steps - 1, device=z.device)
            x = q_sample(sched, z, t, torch.randn(z.shape, generator=gen, device=z.device))

        def x0_fn(xs: torch.Tensor, t: int, rows: int) -> torch.Tensor:
            steps = torch.full((rows,), t, device=xs.device)
            return self.denoiser(xs, steps, e[:rows], dropout=False).clamp(-1.0, 1.0)

        return reverse_chain(
            sched, x, sched.steps - 1, x0_fn, noise_gen=gen, sampling_noise=o.sampling_noise
        )

    def init_backbone(self, epoch: int) -> None:
        """Set the LightGCN's egos to freshly generated embeddings (and restart its Adam)."""
        gen = make_generator(self.ctx.cfg.seed, "diffusion", epoch, device=self.ctx.device)
        emb = self.generate(gen)
        with torch.no_grad():
            self.model.user_emb.copy_(emb[: self.num_users])
            self.model.item_emb.copy_(emb[self.num_users :])
        if self._optims is not None:
            self._optims["main"].state.clear()  # the official loop builds a new Adam

    # ------------------------------------------------------------------ losses

    def loss(
        self, batch: EnvStep | TripletBatch, gen: torch.Generator, phase: str = "main"
    ) -> dict[str, torch.Tensor]:
        if phase == "env":
            return self.env_loss(gen)
        return self.rec_loss(batch, gen)

    def env_loss(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One outer step: Var_k + beta Mean_k, and REINFORCE for the generator."""
        o, data = self.options, self.ctx.data
        if o.reset_generator:
            self.editor.reset(gen)
        losses, log_p = [], torch.zeros((), device=self.ctx.device)
        for k in range(o.num_envs):
            flip_u, flip_i, lp = self.editor.sample(k, o.num_flips, gen)
            keys = environment_keys(
                data.users, data.items, self.num_users, self.num_items, o.noise_level,
                flip_u, flip_i, gen,
            )  # fmt: skip
            adj = gcn_adjacency(
                keys // self.num_items, keys % self.num_items, self.num_users, self.num_nodes
            )
            losses.append(self.environment_loss(adj, gen))
            log_p = log_p + lp  # [N]
            self._stats["env_edges"] += keys.numel() / data.users.numel()
            self._stats["env_graphs"] += 1
        var, mean = torch.var_mean(torch.stack(losses))
        return {
            "var": var,
            "mean": o.beta * mean,
            "generator": -(var.detach() * log_p).mean(),
        }

    def environment_loss(self, adj: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One environment graph's loss (``combine_env_loss``). adj: [N, N] sparse."""
        o = self.options
        z, mean, log_std = self.encoder(adj, self.features, gen)
        e = self.evae.decode(z)
        t, pt = self.sample_steps(z.shape[0], gen)
        noise = torch.randn(z.shape, generator=gen, device=z.device)
        x0_hat = self.denoiser(q_sample(self.sched, z, t, noise), t, e, gen)
        elbo, per_row = diffusion_x0_loss(self.sched, z, x0_hat, t, pt, o.reweight)
        with torch.no_grad():
            hist, count = update_loss_history(
                self.loss_history, self.loss_count, t, per_row.detach()
            )
            self.loss_history.copy_(hist)
            self.loss_count.copy_(count)
        neg_a, neg_b = self.non_edge_pairs(gen)
        pos_a = self.ctx.data.users
        pos_b = self.ctx.data.items + self.num_users
        recon = balanced_recon_loss(x0_hat, pos_a, pos_b, neg_a, neg_b)
        vgae = recon - vgae_kl_term(mean, log_std)
        infer = None
        if o.loss_mode == "paper_intended":
            rec_z, mu, ls = self.evae(z, gen)
            infer = F.mse_loss(rec_z, z, reduction="sum") + self.evae.kl(mu, ls)
        return combine_env_loss(o.loss_mode, elbo, vgae, infer)

    def sample_steps(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps t [n] by importance once every step has a full history (uniform before), and
        p_t * T [n] (ones while uniform)."""
        steps, dev = self.sched.steps, self.loss_history.device
        if bool((self.loss_count == self.options.history_per_step).all()):
            probs = importance_probs(self.loss_history, self.options.uniform_prob)
            t = torch.multinomial(probs, n, replacement=True, generator=gen)
            return t, probs[t] * steps
        t = torch.randint(0, steps, (n,), generator=gen, device=dev)
        return t, torch.ones(n, device=dev)

    def non_edge_pairs(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``recon_negatives * E`` uniform node pairs over N x N, training edges dropped.

        Shapes: -> a, b [M'] node ids.
        """
        m = self.options.recon_negatives * self.ctx.data.users.numel()
        a = torch.randint(self.num_nodes, (m,), generator=gen, device=self.ctx.device)
        b = torch.randint(self.num_nodes, (m,), generator=gen, device=self.ctx.device)
        a_user = a < self.num_users
        bipartite = a_user != (b < self.num_users)
        user = torch.where(a_user, a, b).clamp_max(self.num_users - 1)
        item = (torch.where(a_user, b, a) - self.num_users).clamp(0, self.num_items - 1)
        keep = ~(bipartite & self.positives.contains(user, item))
        return a[keep], b[keep]

    def rec_loss(self, batch: TripletBatch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """BPR with one uniform negative, plus ``train.l2``: ``selfrec`` as the official code
        (sum of non-squared norms over rows of the propagated u, i, j), ``squared`` on the egos
        (docs/methods/lightgcn.md#bpr-and-l2)."""
        tcfg = self.ctx.cfg.train
        users, pos = batch.users, batch.pos_items
        neg = uniform_items(users, self.num_items, gen, positives=self.positives)
        emb = self.model.propagate()
        u, p, n = emb.users[users], emb.items[pos], emb.items[neg]
        if tcfg.l2_form == "selfrec":
            l2 = l2_loss(u, p, n, batch_size=1, form="selfrec")
        else:
            egos = (emb.user_ego[users], emb.item_ego[pos], emb.item_ego[neg])
            l2 = l2_loss(*egos, batch_size=len(batch), form="squared")
        return {"bpr": bpr_loss(u, p, n), "l2": tcfg.l2 * l2}

    # ------------------------------------------------------------------ evaluation

    def scorer(self) -> Scorer:
        return inner_product_scorer(self.model)

    def representations(self) -> Representations:
        return inner_product_representations(self.model)

    def negative_probe(self, gen: torch.Generator) -> NegativeProbe:
        return uniform_probe(self.model, self.positives, self.num_items, gen)

    def diagnostics(self) -> dict[str, float]:
        graphs = self._stats["env_graphs"]
        if not graphs:
            return {}
        return {"causaldiff_env_edge_ratio": self._stats["env_edges"] / graphs}
