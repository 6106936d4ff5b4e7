"""Networks and sparse graph pieces of CausalDiffRec (Zhao et al., WWW 2025),
docs/methods/causaldiff.md.

Node ids: users ``0..U-1``, items ``U..U+I-1`` (N = U + I). Every graph here is an undirected
user-item edge list (``user * I + item`` keys); no function builds an N x N dense tensor, so
memory grows with the edges (and linearly with the nodes), never with N^2.

- ``gcn_adjacency``: GCNConv's D~^-1/2 (A + I) D~^-1/2 as a symmetric CSR matrix;
- ``VGAEEncoder``: GCN -> (mean, log-std) GCNs -> reparameterised latent z;
- ``EnvVAE``: the environment-inference VAE (its decoder gives the environment embedding);
- ``EnvDenoiser``: the x0-predicting MLP f(x_t, t, e) conditioned on the environment embedding;
- ``EdgeFlipGenerator``: per-node flip logits over a few candidate partners (the sparse stand-in
  for the official K x N x N logit tensor), sampled with the Gumbel top-k trick;
- ``environment_keys``, ``balanced_recon_loss``, ``vgae_kl_term``, ``diffusion_x0_loss``,
  ``combine_env_loss``: the environment graphs and the per-environment losses;
- ``random_features``: the official fixed node features.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from oodrec.diffusion.denoiser import dropout_with, timestep_embedding
from oodrec.diffusion.process import x0_loss_terms
from oodrec.diffusion.schedule import DiffusionSchedule
from oodrec.models.lightgcn import symmetric_spmm


def gcn_adjacency(
    users: torch.Tensor, items: torch.Tensor, num_users: int, num_nodes: int
) -> torch.Tensor:
    """GCN propagation matrix D~^-1/2 (A + I) D~^-1/2 of an undirected user-item graph (CSR).

    Args:
        users, items: the edges (unique pairs). Shape [E] each.
        num_users: U (items are nodes ``U + item``).
        num_nodes: N = U + I.

    Returns:
        A symmetric float32 ``sparse_csr`` tensor [N, N] with 2E + N stored entries.
    """
    loops = torch.arange(num_nodes, device=users.device)
    rows = torch.cat([users, items + num_users, loops])
    cols = torch.cat([items + num_users, users, loops])
    deg = torch.bincount(rows, minlength=num_nodes)  # >= 1 (self loop)
    inv_sqrt = deg.float().rsqrt()
    order = torch.argsort(rows * num_nodes + cols)
    vals = (inv_sqrt[rows] * inv_sqrt[cols])[order]
    crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=users.device)
    crow[1:] = deg.cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow, cols[order], vals, (num_nodes, num_nodes), check_invariants=False
        )


def symmetric_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Keys in exactly one of ``a`` and ``b`` (each without duplicates), sorted.

    This is the sparse form of flipping the entries ``b`` of a binary matrix with ones at ``a``.
    Shapes: a [Ea], b [Eb] -> [E'].
    """
    keys, counts = torch.unique(torch.cat([a, b]), return_counts=True)
    return keys[counts == 1]


def environment_keys(
    users: torch.Tensor,
    items: torch.Tensor,
    num_users: int,
    num_items: int,
    noise_level: float,
    flip_users: torch.Tensor,
    flip_items: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """One environment graph: random rewiring, then the generator's flips
    (docs/methods/causaldiff.md#per-epoch).

    Each training edge is replaced, with probability ``noise_level``, by a uniformly random
    user-item pair; then every flipped pair is toggled (removed if present, added if not).

    Shapes: users, items [E]; flip_users, flip_items [F] -> sorted ``user * I + item`` keys.
    """
    replace = torch.rand(users.shape, generator=gen, device=users.device) < noise_level
    rand_u = torch.randint(num_users, users.shape, generator=gen, device=users.device)
    rand_i = torch.randint(num_items, items.shape, generator=gen, device=items.device)
    noisy = torch.where(replace, rand_u, users) * num_items + torch.where(replace, rand_i, items)
    flips = torch.unique(flip_users * num_items + flip_items)
    return symmetric_difference(torch.unique(noisy), flips)


class GCNLayer(nn.Module):
    """A GCNConv layer, ``A_hat (x W) + b`` (glorot weight, zero bias, as PyG).

    Shapes: adj [N, N] symmetric sparse, x [N, F_in] -> [N, F_out].
    """

    def __init__(self, in_dim: int, out_dim: int, generator: torch.Generator | None) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (in_dim + out_dim))
        weight = torch.empty(in_dim, out_dim).uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return symmetric_spmm(adj, x @ self.weight) + self.bias


class VGAEEncoder(nn.Module):
    """VGAE encoder: h = GCN(x) (no activation), mean = GCN(h), log_std = GCN(h),
    z = mean + eps * exp(log_std).

    Shapes: adj [N, N] sparse, x [N, F] -> z, mean, log_std [N, D].
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, latent_dim: int, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.base = GCNLayer(in_dim, hidden_dim, generator)
        self.mean = GCNLayer(hidden_dim, latent_dim, generator)
        self.log_std = GCNLayer(hidden_dim, latent_dim, generator)

    def forward(
        self, adj: torch.Tensor, x: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.base(adj, x)
        mean, log_std = self.mean(adj, h), self.log_std(adj, h)
        eps = torch.randn(mean.shape, generator=gen, device=mean.device)
        return mean + eps * log_std.exp(), mean, log_std


def _linear(in_dim: int, out_dim: int, generator: torch.Generator | None) -> nn.Linear:
    """nn.Linear with torch's default init (U(+-1/sqrt(fan_in))) drawn from ``generator``."""
    layer = nn.Linear(in_dim, out_dim)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class EnvVAE(nn.Module):
    """Environment-inference VAE with a learnable Gaussian prior.

    encode: relu(z) -> (mu, log_std); decode: relu(h) -> Linear. The environment embedding is
    ``decode(z)``, the decoder applied to the latent directly (as the official code does).
    Without ``with_encoder`` only the decoder is built: in the code's loss combination the
    inference loss, the only thing that trains the encoder and the prior, is dropped.

    Shapes: z [N, D] -> recon, mu, log_std [N, D]; decode [N, D] -> [N, D].
    """

    def __init__(self, dim: int, with_encoder: bool, generator: torch.Generator | None) -> None:
        super().__init__()
        self.decoder = _linear(dim, dim, generator)
        self.with_encoder = with_encoder
        if with_encoder:
            self.enc_mu = _linear(dim, dim, generator)
            self.enc_log_std = _linear(dim, dim, generator)
            self.prior_mu = nn.Parameter(torch.zeros(dim))
            self.prior_log_std = nn.Parameter(torch.zeros(dim))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(F.relu(h))

    def forward(
        self, z: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h1 = F.relu(z)
        mu, log_std = self.enc_mu(h1), self.enc_log_std(h1)
        eps = torch.randn(mu.shape, generator=gen, device=mu.device)
        return self.decode(mu + eps * log_std.exp()), mu, log_std

    def kl(self, mu: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        """Summed KL(N(mu, e^{2 log_std}) || N(prior_mu, e^{2 prior_log_std})). Scalar."""
        pls = self.prior_log_std
        ratio = ((2 * log_std).exp() + (mu - self.prior_mu) ** 2) / (2 * pls).exp()
        return (0.5 * (2 * (pls - log_std) + ratio - 1)).sum()


class EnvDenoiser(nn.Module):
    """CausalDiffRec's x0-predicting MLP: [dropout(x_t); Linear(temb(t)); e] -> tanh MLP -> D.

    With ``hidden = (h_1, .., h_m)``: in-layers 2D + T -> h_m -> .. -> h_1 (tanh after each),
    out-layers h_1 -> .. -> h_m -> D (tanh between). Xavier-normal weights, zero biases.

    Shapes: x [N, D], t [N] long, e [N, D] -> [N, D].
    """

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...],
        time_dim: int,
        dropout: float,
        norm: bool,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.time_dim, self.p, self.norm = time_dim, dropout, norm
        self.time_layer = nn.Linear(time_dim, time_dim)
        ins = [2 * dim + time_dim, *hidden[::-1]]
        outs = [*hidden, dim]
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(ins[:-1], ins[1:]))
        self.out_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(outs[:-1], outs[1:]))
        for layer in (self.time_layer, *self.in_layers, *self.out_layers):
            fan_out, fan_in = layer.weight.shape
            with torch.no_grad():
                layer.weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)
                layer.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        e: torch.Tensor,
        gen: torch.Generator | None = None,
        dropout: bool = True,
    ) -> torch.Tensor:
        temb = self.time_layer(timestep_embedding(t, self.time_dim))
        if self.norm:
            x = F.normalize(x, dim=-1)
        if dropout:
            x = dropout_with(x, self.p, gen)
        h = torch.cat([x, temb, e], dim=1)
        for layer in self.in_layers:
            h = torch.tanh(layer(h))
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != len(self.out_layers) - 1:
                h = torch.tanh(h)
        return h


class EdgeFlipGenerator(nn.Module):
    """Environment generator: every node flips its pairs with ``num_flips`` partners drawn without
    replacement from softmax(logits) over ``C`` candidate partners of the other side.

    The official Graph_Editer holds a dense K x N x N logit tensor and samples among all N nodes;
    its logits are reset to U(0, 1) before each use, where a softmax over N or over C uniformly
    drawn candidates is close to uniform, so C candidates per node give the same flips in law at
    O(K N C) memory.

    Shapes: logits [K, N, C] (parameter), candidates [N, C] long (buffer: item ids for user rows,
    user ids for item rows).
    """

    def __init__(self, num_envs: int, num_users: int, num_items: int, num_candidates: int) -> None:
        super().__init__()
        self.num_users, self.num_items = num_users, num_items
        n = num_users + num_items
        self.logits = nn.Parameter(torch.zeros(num_envs, n, num_candidates))
        self.register_buffer("candidates", torch.zeros(n, num_candidates, dtype=torch.long))

    @torch.no_grad()
    def reset(self, gen: torch.Generator) -> None:
        """Logits ~ U(0, 1) (the official ``reset_parameters``) and fresh candidates."""
        c = self.candidates.shape[1]
        dev = self.logits.device
        self.logits.uniform_(0.0, 1.0, generator=gen)
        user_c = torch.randint(self.num_items, (self.num_users, c), generator=gen, device=dev)
        item_c = torch.randint(self.num_users, (self.num_items, c), generator=gen, device=dev)
        self.candidates.copy_(torch.cat([user_c, item_c]))

    def sample(
        self, k: int, num_flips: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Environment ``k``'s flips and their log-probabilities.

        ``log_p[j] = sum_s logits[k, j, c_s] - logsumexp_c logits[k, j, c]`` (the official
        formula: one normaliser per node).

        Returns:
            flip_users, flip_items [N * num_flips], log_p [N] (differentiable in the logits).
        """
        logits = self.logits[k]  # [N, C]
        eps = torch.finfo(logits.dtype).eps
        u = torch.rand(logits.shape, generator=gen, device=logits.device).clamp(eps, 1 - eps)
        chosen = (logits.detach() - torch.log(-torch.log(u))).topk(num_flips, dim=1).indices
        log_p = logits.gather(1, chosen).sum(1) - torch.logsumexp(logits, dim=1)  # [N]
        partner = self.candidates.gather(1, chosen)  # [N, s]
        node = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1).expand_as(partner)
        is_user = node < self.num_users
        users = torch.where(is_user, node, partner)
        items = torch.where(is_user, partner, node - self.num_users)
        return users.reshape(-1), items.reshape(-1), log_p


def balanced_recon_loss(
    z: torch.Tensor,
    pos_a: torch.Tensor,
    pos_b: torch.Tensor,
    neg_a: torch.Tensor,
    neg_b: torch.Tensor,
) -> torch.Tensor:
    """Sparse form of the VGAE's weighted BCE of sigmoid(z z^T) against the adjacency.

    With pos_weight = (N^2 - P) / P and norm = N^2 / (2 (N^2 - P)) the official dense loss equals
    1/2 mean_edges softplus(-s) + 1/2 mean_non-edges softplus(s); the second mean is estimated
    on the given (sampled) non-edge pairs.

    Shapes: z [N, D]; pos_a, pos_b [P]; neg_a, neg_b [M] -> scalar.
    """
    s_pos = (z[pos_a] * z[pos_b]).sum(1)
    s_neg = (z[neg_a] * z[neg_b]).sum(1)
    return 0.5 * F.softplus(-s_pos).mean() + 0.5 * F.softplus(s_neg).mean()


def vgae_kl_term(mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """The official VGAE "kl": 0.5 / N * mean_n sum_d (1 + 2 log_std - mean^2 - e^{2 log_std})
    (minus the per-node KL divided by N; the VGAE loss subtracts it). Shapes: [N, D] -> scalar."""
    n = mean.shape[0]
    inner = 1 + 2 * log_std - mean**2 - (2 * log_std).exp()
    return 0.5 / n * inner.sum(1).mean()


def combine_env_loss(
    mode: str, elbo: torch.Tensor, vgae: torch.Tensor, infer: torch.Tensor | None
) -> torch.Tensor:
    """One environment's loss.

    ``code``: ``adjust_loss(reweight, elbo, vgae, infer)`` with its arguments shifted, i.e.
    0.1 (1 + elbo) + 0.01 vgae (the inference loss is dropped). ``paper_intended``: the call in
    its declared order, 0.1 (elbo + vgae) + 0.01 infer.
    """
    if mode == "code":
        return 0.1 * (1.0 + elbo) + 0.01 * vgae
    if infer is None:
        raise ValueError("paper_intended needs the environment-inference loss")
    return 0.1 * (elbo + vgae) + 0.01 * infer


def diffusion_x0_loss(
    sched: DiffusionSchedule,
    x0: torch.Tensor,
    x0_hat: torch.Tensor,
    t: torch.Tensor,
    pt: torch.Tensor,
    reweight: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ELBO term: mean over rows of w_t mse_row / p_t (DiffRec's ``training_losses``).

    Shapes: x0, x0_hat [N, D]; t, pt [N] -> (scalar, the per-row w_t * mse [N] recorded for the
    importance sampling).
    """
    per_row = x0_loss_terms(sched, x0, t, x0_hat) if reweight else (x0 - x0_hat).pow(2).mean(1)
    return (per_row / pt).mean(), per_row


def random_features(num_users: int, num_items: int, dim: int, gen: torch.Generator) -> torch.Tensor:
    """relu(W onehot(id) + b) with torch's Linear init, per node type (official preprocessing).

    Shapes: -> [U + I, dim].
    """
    out = []
    for n in (num_users, num_items):
        bound = n**-0.5
        w = torch.empty(n, dim).uniform_(-bound, bound, generator=gen)
        b = torch.empty(dim).uniform_(-bound, bound, generator=gen)
        out.append(F.relu(w + b))
    return torch.cat(out)
