"""``train.sync_free``: nothing in the batch loop waits for the device.

On the CPU a ``TorchFunctionMode`` counts the calls that synchronise the host with a CUDA device
(reads such as ``.item()``, ``int(t)``, ``.tolist()``; output sizes the host must know, such as
``nonzero``, boolean-mask indexing or ``repeat_interleave`` without ``output_size``) during one
epoch of every sampler and every method; the count must not grow with the number of batches
(reads once per epoch are allowed). On CUDA (marker ``gpu``) an epoch runs under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import collections
import logging
import traceback

import pytest
import torch
from torch.overrides import TorchFunctionMode

from oodrec.config import ExperimentConfig, TrainConfig, apply_overrides
from oodrec.data.dataset import load_dataset
from oodrec.errors import ConfigError
from oodrec.methods import METHODS, TrainData, build_method
from oodrec.samplers import SAMPLERS, PositiveIndex, SyncFree
from oodrec.samplers.base import SYNC_FREE_ROUNDS, uniform_items
from oodrec.train.loop import Trainer

READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
SIZED = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}
"""Ops whose output size the host must read (a CUDA ``bincount`` reads the largest id)."""
OTHER = {"__format__", "equal", "allclose", "tensor", "as_tensor"}
"""``torch.tensor`` from host data is a host-to-device copy on CUDA."""


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class SyncCounter(TorchFunctionMode):
    """Counts host-synchronising torch calls, by op and by the innermost ``oodrec`` line.

    Reads inside ``torch/optim`` are left out: Adam's step counter is a host tensor unless
    ``capturable`` (its ``.item()`` reads no device).
    """

    def __init__(self) -> None:
        super().__init__()
        self.where: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.where.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        hit = name if name in READS | SIZED | OTHER else None
        if name in ("__getitem__", "__setitem__") and len(args) > 1 and _bool_index(args[1]):
            hit = f"{name}[bool]"
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            hit = None if isinstance(repeats, int) else name
        if hit is not None:
            stack = traceback.extract_stack()[:-1]
            if "torch/optim/" not in stack[-1].filename:
                ours = [f for f in stack if "/oodrec/" in f.filename]
                loc = (
                    f"{ours[-1].filename.split('/oodrec/')[-1]}:{ours[-1].lineno}" if ours else "?"
                )
                self.where[(hit, loc)] += 1
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- the counter works


def _toy_epoch(n: int, sync: bool) -> int:
    x = torch.arange(64)
    with SyncCounter() as counter:
        total = torch.zeros(())
        for _ in range(n):
            if sync:
                _ = x[x > 3]  # boolean mask: the host must know its size
                total = total + float(x.sum())  # a host read
            else:
                total = total + torch.where(x > 3, x, 0).sum()
        float(total)  # one read per epoch
    return counter.total


def test_the_counter_catches_a_syncing_loop():
    assert _toy_epoch(9, sync=True) - _toy_epoch(3, sync=True) == 2 * 6
    assert _toy_epoch(9, sync=False) == _toy_epoch(3, sync=False) == 1
    with SyncCounter() as c:
        t = torch.tensor([1, 2, 0])
        t.nonzero(), t.repeat_interleave(t), t.repeat_interleave(t, output_size=3), t.tolist()
    assert {k for k, _ in c.where} == {"tensor", "nonzero", "repeat_interleave", "tolist"}


# --------------------------------------------------------------------------- every sampler/method

KNOWN_SYNCS: dict[str, str] = {}
"""Methods whose batch loop still synchronises in sync-free mode, with the reason (their tests
are strict xfails: one that becomes sync-free fails until it leaves this list)."""

EXTRA = {"drgnn": ["model.full_batch=false"]}
"""Settings that give a method several batches per epoch."""

USER_BATCHES = {"cdr", "diffrec"}
"""Methods whose batches are users (20 in the tiny data), not training pairs (about 190)."""

CASES = [pytest.param("lightgcn", s, id=f"lightgcn+{s}") for s in SAMPLERS.names()] + [
    pytest.param(
        m,
        None,
        id=m,
        marks=[pytest.mark.xfail(reason=KNOWN_SYNCS[m], strict=True)] if m in KNOWN_SYNCS else [],
    )
    for m in METHODS.names()
    if m not in ("lightgcn", "mostpop")  # mostpop: no batches
]


def _trainer(tiny_dir, name: str, sampler: str | None, batch_size: int, *extra: str) -> Trainer:
    from methods.test_contract import _cfg  # tests/ is on sys.path (rootdir conftest)

    settings = [f"train.batch_size={batch_size}", "train.sync_free=true", *EXTRA.get(name, [])]
    if sampler is not None:
        settings.append(f"sampler.name={sampler}")
    cfg = _cfg(tiny_dir, name, epochs=2, extra=(*settings, *extra))
    return Trainer(cfg, load_dataset(cfg.data))


def _count(trainer: Trainer) -> tuple[SyncCounter, int]:
    """Syncs of one epoch and its number of batches."""
    batches, seen = trainer.method.batches, [0]

    def counted(*args):
        for batch in batches(*args):
            seen[0] += 1
            yield batch

    trainer.method.batches = counted
    with SyncCounter() as counter:
        trainer.train_epoch(0)
    return counter, seen[0]


@pytest.mark.parametrize(("name", "sampler"), CASES)
def test_syncs_do_not_grow_with_the_batches(tiny_dir, name, sampler, caplog):
    caplog.set_level(logging.ERROR)  # residual collisions warn on the tiny data
    big, small = (8, 3) if name in USER_BATCHES else (48, 16)
    few, n_few = _count(_trainer(tiny_dir, name, sampler, big))
    many, n_many = _count(_trainer(tiny_dir, name, sampler, small))
    assert n_many >= 2 * n_few >= 4, (n_few, n_many)
    grown = {k: (few.where.get(k, 0), v) for k, v in many.where.items() if v > few.where.get(k, 0)}
    assert not grown, f"{n_few} -> {n_many} batches; syncs (op, line): (few, many) {grown}"


# --------------------------------------------------------------------------- the mode itself


def test_sync_free_setting_and_its_resolution(tiny_dir):
    assert TrainConfig().sync_free == "auto"
    cfg = apply_overrides(ExperimentConfig(), ["train.sync_free=false"])
    assert cfg.train.sync_free is False
    with pytest.raises(ConfigError, match="train.sync_free"):
        apply_overrides(ExperimentConfig(), ["train.sync_free=sometimes"])
    with pytest.raises(ConfigError, match="train.sync_free"):
        TrainConfig(sync_free="on")
    from methods.test_contract import _cfg

    auto = _cfg(tiny_dir, "lightgcn", epochs=1)
    data = TrainData.from_dataset(load_dataset(auto.data))
    # auto on the CPU: the exact, host-synchronising path (the golden runs' numbers)
    assert build_method(auto, data, torch.device("cpu")).ctx.sync_free is None
    on = apply_overrides(auto, ["train.sync_free=true"])
    method = build_method(on, data, torch.device("cpu"))
    assert isinstance(method.ctx.sync_free, SyncFree)
    assert method.sampler.ctx.positives.sync_free is method.ctx.sync_free


def test_fixed_round_rejection_never_returns_a_positive_it_could_avoid():
    users = torch.tensor([0, 0, 1, 1, 2])
    items = torch.tensor([0, 1, 2, 3, 0])
    mode = SyncFree()
    index = PositiveIndex(users, items, 50, sync_free=mode)
    batch = torch.tensor([0, 1, 2] * 200)
    gen = torch.Generator().manual_seed(0)
    for num in (None, 4):  # a collision survives 9 draws with probability 0.04 ** 9
        ids = uniform_items(batch, 50, gen, num=num, positives=index)
        assert ids.shape == ((600,) if num is None else (600, 4))
        assert not index.contains(batch, ids).any()
    assert mode.take() == 0 and mode.residual is None
    # a user who has every item cannot be served: the slots are kept and counted on the device
    full = PositiveIndex(torch.zeros(3, dtype=torch.long), torch.arange(3), 3, sync_free=mode)
    ids = uniform_items(torch.zeros(7, dtype=torch.long), 3, gen, num=2, positives=full)
    assert ids.shape == (7, 2) and mode.residual is not None
    assert mode.take() == 14 and mode.take() == 0
    assert mode.rounds == SYNC_FREE_ROUNDS


def test_residual_collisions_are_reported_once_per_epoch(tiny_dir, caplog):
    trainer = _trainer(tiny_dir, "lightgcn", "rns", 48)
    row = trainer.train_epoch(0)
    assert isinstance(row["residual_collisions"], int) and row["residual_collisions"] >= 0
    assert row["loss"] == pytest.approx(sum(v for k, v in row.items() if k.startswith("loss_")))
    trainer.method.sampler.ctx.positives.sync_free.rounds = 0  # every collision is left
    with caplog.at_level(logging.WARNING, logger="oodrec.train.loop"):
        row = trainer.train_epoch(1)
    assert row["residual_collisions"] > 0
    assert "sync-free" in caplog.text and "epoch 1" in caplog.text
    default = Trainer(apply_overrides(trainer.cfg, ["train.sync_free=auto"]), trainer.dataset)
    assert "residual_collisions" not in default.train_epoch(0)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "sampler"), CASES)
def test_an_epoch_on_cuda_never_synchronises(tiny_dir, name, sampler):
    """The second epoch (the first builds lazy tables and optimiser state), from its first
    batch to its last, under ``set_sync_debug_mode("error")``; the per-epoch reads after the
    loop are allowed."""
    big = 8 if name in USER_BATCHES else 48
    trainer = _trainer(tiny_dir, name, sampler, big, "train.device=cuda")
    assert trainer.method.ctx.sync_free is not None
    trainer.train_epoch(0)
    batches = trainer.method.batches

    def guarded(*args):
        try:
            for i, batch in enumerate(batches(*args)):
                if i == 0:
                    torch.cuda.set_sync_debug_mode("error")
                yield batch
        finally:
            torch.cuda.set_sync_debug_mode(0)

    trainer.method.batches = guarded
    try:
        trainer.train_epoch(1)
    finally:
        torch.cuda.set_sync_debug_mode(0)


# ------------------------------------------------- fixed-shape forms of CDR's and DiffRec's batches


def test_padded_rows_hold_what_csr_gather_returns():
    from oodrec.data.csr import CSR
    from oodrec.methods.common import PaddedRows

    gen = torch.Generator().manual_seed(0)
    users = torch.randint(0, 7, (40,), generator=gen)
    items = torch.randint(0, 30, (40,), generator=gen)
    csr = CSR(users, items, 9)  # users 7 and 8 have no row entries
    padded = PaddedRows(csr)
    rows = torch.tensor([3, 8, 0, 3])
    got = padded.batch(rows)
    r, c = csr.gather(rows)
    for k in range(rows.numel()):
        want = c[r == k]
        assert torch.equal(got[k][got[k] >= 0], want)
        assert bool((got[k][want.numel() :] == -1).all())


def _masked_update(history, count, t, loss):
    """The boolean-mask form of DiffRec's loss-history update that the fixed-shape
    ``update_loss_history`` replaced (kept here as a reference)."""
    steps, width = history.shape
    order = torch.argsort(t, stable=True)
    ts, ls = t[order], loss[order].to(history.dtype)
    n_t = torch.bincount(t, minlength=steps)
    group_start = n_t.cumsum(0) - n_t
    rank = torch.arange(ts.numel()) - group_start[ts]
    total = count + n_t
    drop = (total - width).clamp_min(0)
    new = torch.zeros_like(history)
    pos = torch.arange(width).unsqueeze(0)
    old_pos = pos - drop.unsqueeze(1)
    keep_old = (pos < count.unsqueeze(1)) & (old_pos >= 0)
    rows = torch.arange(steps).unsqueeze(1).expand(steps, width)
    new[rows[keep_old], old_pos[keep_old]] = history[keep_old]
    new_pos = count[ts] + rank - drop[ts]
    keep = new_pos >= 0
    new[ts[keep], new_pos[keep]] = ls[keep]
    return new, total.clamp_max(width)


def test_update_loss_history_fixed_equals_the_masked_form():
    from oodrec.models.diffrec import update_loss_history

    gen = torch.Generator().manual_seed(1)
    history = torch.zeros(5, 4)
    count = torch.zeros(5, dtype=torch.long)
    fixed = (history.clone(), count.clone())
    for _ in range(12):  # from empty through full and overflowing histories
        t = torch.randint(0, 5, (int(torch.randint(1, 9, (1,), generator=gen)),), generator=gen)
        loss = torch.rand(t.numel(), generator=gen)
        history, count = _masked_update(history, count, t, loss)
        fixed = update_loss_history(*fixed, t, loss)
        assert torch.equal(fixed[0], history) and torch.equal(fixed[1], count)


def _method(tiny_dir, name: str, sync_free: bool):
    from methods.test_contract import _cfg  # tests/ is on sys.path (rootdir conftest)

    cfg = _cfg(tiny_dir, name, extra=(f"train.sync_free={str(sync_free).lower()}",))
    data = TrainData.from_dataset(load_dataset(cfg.data), torch.device("cpu"))
    return build_method(cfg, data, torch.device("cpu"))


def test_cdr_and_diffrec_fixed_inputs_equal_the_exact_ones(tiny_dir):
    users = torch.tensor([0, 5, 3, 19])
    cdr_free, cdr = _method(tiny_dir, "cdr", True), _method(tiny_dir, "cdr", False)
    assert cdr_free.padded is not None and cdr.padded is None and cdr_free.net.dense_input
    for a, b in zip(
        cdr_free.slice_inputs(users, cdr_free.train_history, cdr_free.train_slices),
        cdr.slice_inputs(users, cdr.train_history, cdr.train_slices),
    ):
        assert torch.equal(a, b)
    cdr_free.eval()
    cdr.eval()
    x = next(cdr.slice_inputs(users, cdr.train_history, cdr.train_slices))
    # the dense input product gives the sparse one's values (up to summation order)
    assert torch.allclose(cdr_free.net.encode(x), cdr.net.encode(x), atol=1e-6)
    diff_free, diff = _method(tiny_dir, "diffrec", True), _method(tiny_dir, "diffrec", False)
    assert torch.equal(diff_free.x0(users), diff.x0(users))
    t = torch.tensor([0, 3, 3, 1])
    diff_free.eval()
    diff.eval()
    x0 = diff.x0(users)
    assert torch.allclose(diff_free.dnn(x0, t), diff.dnn(x0, t), atol=1e-6)


def test_drgo_fixed_point_sets_and_sinkhorn():
    from oodrec.models.drgo import group_point_sets_fixed, sinkhorn_divergence

    gen = torch.Generator().manual_seed(3)
    groups = torch.randint(0, 4, (50,), generator=gen)
    users = torch.randint(0, 50, (30,), generator=gen)
    ids, mask = group_point_sets_fixed(users, groups, 4, 5, gen)
    assert ids.shape == mask.shape == (4, 5)
    in_batch = set(users.tolist())
    for g in range(4):
        members = {u for u in in_batch if int(groups[u]) == g}
        got = ids[g][mask[g]].tolist()
        assert len(got) == len(set(got)) == min(5, len(members))  # distinct, capped
        assert set(got) <= members
    x = torch.randn(3, 10, 8, generator=gen)
    x_mask = torch.rand(3, 10, generator=gen) > 0.3
    x_mask[2] = False  # a group without users gives 0
    y = torch.randn(12, 8, generator=gen)
    for p in (1, 2):
        exact = sinkhorn_divergence(x, x_mask, y, p=p)
        fixed = sinkhorn_divergence(x, x_mask, y, p=p, fixed=True)
        # the fixed schedule only runs more steps at the final blur: the same divergence
        assert torch.allclose(fixed, exact, rtol=0.02) and float(fixed[2]) == 0.0
