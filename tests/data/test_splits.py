"""Split protocols: invariants as hypothesis properties, and the shift each protocol creates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from oodrec.data.preprocess import InteractionLog
from oodrec.data.splits import (
    SPLITS_PROTOCOLS,
    ExposureSplitConfig,
    PopularitySplitConfig,
    SplitResult,
    TemporalSplitConfig,
    check_split,
    exposure_split,
    get_protocol,
    iid_split,
    popularity_split,
    temporal_split,
)
from oodrec.data.stats import total_variation
from oodrec.errors import ConfigError, DataValidationError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def logs(draw, unbiased: bool = False) -> InteractionLog:
    nu, ni = draw(st.integers(6, 30)), draw(st.integers(6, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.floats(0.15, 0.7))
    # Popularity skew: item j is chosen with probability falling in j.
    mask = rng.random((nu, ni)) < density * np.linspace(1.5, 0.3, ni)
    users, items = np.nonzero(mask)
    flags = np.zeros(users.size, dtype=bool)
    if unbiased:
        extra = rng.random((nu, ni)) < 0.25  # may overlap the biased pairs
        eu, ei = np.nonzero(extra)
        users, items = np.concatenate([users, eu]), np.concatenate([items, ei])
        flags = np.concatenate([flags, np.ones(eu.size, dtype=bool)])
    assume(users.size >= 20)
    ts = rng.integers(0, 15, size=users.size).astype(float)  # many ties
    return InteractionLog.from_arrays(users, items, ts, flags, nu, ni)


def _pairs(log: InteractionLog) -> list[tuple[int, int]]:
    return list(zip(log.users.tolist(), log.items.tolist()))


def assert_invariants(result: SplitResult, source: InteractionLog) -> None:
    """Independent (set-based) check of the split invariants."""
    parts = {name: _pairs(p) for name, p in result.parts().items()}
    for name, p in parts.items():
        assert len(set(p)) == len(p), f"{name} repeats a pair"
    names = list(parts)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not set(parts[names[a]]) & set(parts[names[b]]), (names[a], names[b])
    union = sorted(sum(parts.values(), []) + _pairs(result.dropped))
    assert union == sorted(_pairs(source))
    train_users = set(result.train.users.tolist())
    train_items = set(result.train.items.tolist())
    for name in ("val", "iid_test", "ood_test"):
        assert set(getattr(result, name).users.tolist()) <= train_users, name
        assert set(getattr(result, name).items.tolist()) <= train_items, name
    check_split(result, source)


def _run(fn, log, seed):
    try:
        return fn(log, None, seed)
    except DataValidationError as exc:  # too small an input for a protocol: skip the example
        assume("is empty" not in str(exc))
        raise


def _same(a: SplitResult, b: SplitResult) -> bool:
    return all(
        np.array_equal(pa.users, pb.users) and np.array_equal(pa.items, pb.items)
        for pa, pb in zip(a.parts().values(), b.parts().values())
    )


@SETTINGS
@given(logs(), st.integers(0, 1000))
def test_popularity_split_invariants(log, seed):
    result = _run(popularity_split, log, seed)
    assert_invariants(result, log)
    assert len(result.dropped) == 0  # uncovered OOD pairs are moved, not dropped
    assert _same(result, popularity_split(log, None, seed))


@SETTINGS
@given(logs(), st.integers(0, 1000))
def test_temporal_split_invariants_and_ordering(log, seed):
    result = _run(temporal_split, log, seed)
    assert_invariants(result, log)
    assert _same(result, temporal_split(log, None, seed))
    history = InteractionLog.concat([result.train, result.val, result.iid_test])
    latest = np.full(log.num_users, -np.inf)
    np.maximum.at(latest, history.users, history.timestamps)
    ood = result.ood_test
    assert (ood.timestamps > latest[ood.users]).all()


@SETTINGS
@given(logs(unbiased=True), st.integers(0, 1000), st.sampled_from(["ood_test", "biased"]))
def test_exposure_split_invariants(log, seed, keep):
    cfg = ExposureSplitConfig(overlap_keep=keep)
    try:
        result = exposure_split(log, cfg, seed)
    except DataValidationError as exc:
        assume("is empty" not in str(exc) and "needs both" not in str(exc))
        raise
    assert_invariants(result, log)
    assert result.ood_test.unbiased.all()
    assert not any(p.unbiased.any() for p in (result.train, result.val, result.iid_test))
    rep = result.report
    assert len(result.dropped) == rep.overlap_pairs + rep.dropped_unseen["ood_test"]
    assert _same(result, exposure_split(log, cfg, seed))


def _skewed_log(num_users=400, num_items=300, seed=0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, num_items + 1)
    pop /= pop.sum()
    users = np.repeat(np.arange(num_users), 25)
    items = np.concatenate(
        [rng.choice(num_items, 25, replace=False, p=pop) for _ in range(num_users)]
    )
    return InteractionLog.from_arrays(
        users, items, rng.random(users.size), None, num_users, num_items
    )


def test_popularity_shift_is_real():
    log = _skewed_log()
    result = popularity_split(log, PopularitySplitConfig(), seed=3)
    deg = {n: np.bincount(p.items, minlength=log.num_items) for n, p in result.parts().items()}
    tv_ood = total_variation(deg["train"], deg["ood_test"])
    tv_iid = total_variation(deg["train"], deg["iid_test"])
    assert tv_ood > 0.4 and tv_ood > 3 * tv_iid
    train_deg = deg["train"]
    assert train_deg[result.ood_test.items].mean() < 0.5 * train_deg[result.iid_test.items].mean()
    assert abs(result.report.ood_selected / len(log) - 0.2) < 0.01
    # Near-uniform OOD items: the most frequent OOD item is far rarer than in the IID test.
    assert deg["ood_test"].max() < 0.5 * deg["iid_test"].max()


def test_iid_split_fractions_per_user():
    log = _skewed_log(50, 300)
    train, val, test = iid_split(log, (0.7, 0.1, 0.2), np.random.default_rng(0))
    for part, share in ((train, 0.7), (val, 0.1), (test, 0.2)):
        per_user = np.bincount(part.users, minlength=50) / 25
        assert np.allclose(per_user, share, atol=0.04)


def test_seeds_and_generators():
    log = _skewed_log(60, 80)
    a = popularity_split(log, None, torch.Generator().manual_seed(5))
    b = popularity_split(log, None, torch.Generator().manual_seed(5))
    c = popularity_split(log, None, np.random.default_rng(6))
    assert _same(a, b) and not _same(a, c)
    with pytest.raises(TypeError, match=r"seed must be an int"):
        popularity_split(log, None, None)  # type: ignore[arg-type]


def test_split_input_errors():
    log = _skewed_log(30, 50)
    no_time = InteractionLog.from_arrays(log.users, log.items)
    with pytest.raises(DataValidationError, match=r"needs a timestamp on every interaction; 750"):
        temporal_split(no_time)
    with pytest.raises(DataValidationError, match=r"needs both a biased log and an unbiased"):
        exposure_split(log)
    dup = InteractionLog.concat([log, log.take(np.arange(3))])
    with pytest.raises(DataValidationError, match=r"repeats 3 \(user, item\) pair"):
        popularity_split(dup)
    with pytest.raises(DataValidationError, match=r"fractions must be three"):
        TemporalSplitConfig(fractions=(0.5, 0.5, 0.5))
    with pytest.raises(DataValidationError, match=r"ood_fraction must be in \[0, 1\)"):
        PopularitySplitConfig(ood_fraction=1.5)
    with pytest.raises(ConfigError, match=r"unknown split protocol 'random'; valid protocols"):
        get_protocol("random")
    assert set(SPLITS_PROTOCOLS) == {"popularity", "temporal", "exposure"}


def test_check_split_reports_violations():
    log = _skewed_log(40, 60)
    good = popularity_split(log, None, 0)
    leak = SplitResult(
        good.train,
        InteractionLog.concat([good.val, good.train.take(np.arange(2))]),
        good.iid_test,
        good.ood_test,
        good.dropped,
        good.report,
    )
    with pytest.raises(DataValidationError, match=r"train and val share 2 pair\(s\).*not exactly"):
        check_split(leak, log)
    lonely = InteractionLog.from_arrays([39], [59], [0.0], None, 40, 60)
    cold = SplitResult(
        good.train.take(good.train.users != 39), good.val, good.iid_test,
        InteractionLog.concat([good.ood_test, lonely]), good.dropped, good.report,
    )  # fmt: skip
    with pytest.raises(DataValidationError, match=r"user or item missing from train"):
        check_split(cold, log)


def test_temporal_ties_at_the_boundary_stay_in_the_history():
    users = np.repeat(np.arange(100), 5)
    items = np.tile(np.arange(5), 100)
    ts = np.tile([0.0, 1.0, 2.0, 3.0, 4.0], 100)
    ts[(users % 2 == 0) & (items == 4)] = 3.0  # even users: the latest two tie
    result = temporal_split(InteractionLog.from_arrays(users, items, ts), None, 0)
    assert result.report.boundary_ties == 50
    assert sorted(set(result.ood_test.users.tolist())) == list(range(1, 100, 2))
    assert (result.ood_test.items == 4).all()
