"""Preprocessing: threshold, duplicates, iterated k-core (property tests), id remapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oodrec.data.preprocess import (
    InteractionLog,
    PreprocessConfig,
    compact_ids,
    drop_duplicates,
    encode_ids,
    k_core,
    positive_mask,
    preprocess,
)
from oodrec.data.raw import RawInteractions
from oodrec.errors import DataValidationError

pairs = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=0, max_size=120)


def _naive_core(edges: set[tuple[int, int]], min_user: int, min_item: int) -> set:
    """Reference: remove one violating edge at a time until none violates."""
    edges = set(edges)
    while True:
        udeg, ideg = {}, {}
        for u, i in edges:
            udeg[u] = udeg.get(u, 0) + 1
            ideg[i] = ideg.get(i, 0) + 1
        bad = [(u, i) for u, i in edges if udeg[u] < min_user or ideg[i] < min_item]
        if not bad:
            return edges
        edges.discard(bad[0])


@settings(max_examples=60, deadline=None)
@given(pairs, st.integers(0, 5), st.integers(0, 5))
def test_k_core_matches_reference_and_meets_minimums(edge_list, min_user, min_item):
    edges = sorted(set(edge_list))
    users = np.array([u for u, _ in edges], dtype=np.int64)
    items = np.array([i for _, i in edges], dtype=np.int64)
    keep, rounds = k_core(users, items, min_user, min_item)
    kept = {(int(u), int(i)) for u, i in zip(users[keep], items[keep])}
    assert kept == _naive_core(set(edges), min_user, min_item)
    if keep.any():
        assert np.bincount(users[keep])[np.unique(users[keep])].min() >= min_user
        assert np.bincount(items[keep])[np.unique(items[keep])].min() >= min_item
    assert rounds >= 0


def test_k_core_needs_several_rounds():
    # Item 2 has 1 interaction -> user 1 falls to 1 -> item 1 falls to 1 -> ...
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 1, 2, 0, 1])
    keep, rounds = k_core(users, items, 2, 2)
    assert keep.tolist() == [True, True, False, False, True, True] and rounds == 2


def test_drop_duplicates_keeps_earliest_and_treats_nan_as_latest():
    users = np.array([0, 0, 1, 0, 1])
    items = np.array([5, 5, 6, 5, 6])
    ts = np.array([30.0, 10.0, np.nan, 20.0, 40.0])
    assert drop_duplicates(users, items, ts).tolist() == [1, 4]
    groups = np.array([0, 1, 0, 0, 0])  # index 1 is another log: kept separately
    assert drop_duplicates(users, items, ts, groups).tolist() == [1, 3, 4]


def test_positive_mask_counts_missing_and_below():
    keep, missing, below = positive_mask(np.array([5.0, 3.9, np.nan, 4.0]), 4.0)
    assert keep.tolist() == [True, False, False, True] and (missing, below) == (1, 1)
    assert positive_mask(np.array([np.nan]), None)[0].tolist() == [True]


def test_encode_and_compact_ids():
    codes, vocab = encode_ids(np.array(["b", "a", "b", "c"]))
    assert vocab[codes].tolist() == ["b", "a", "b", "c"] and codes.max() == 2
    new, used = compact_ids(np.array([7, 2, 7, 4]), 9)
    assert new.tolist() == [2, 0, 2, 1] and used.tolist() == [2, 4, 7]


def _raw(users, items, ratings, ts=None) -> RawInteractions:
    n = len(users)
    return RawInteractions(
        np.array(users, dtype=str),
        np.array(items, dtype=str),
        np.array(ratings, dtype=float),
        np.full(n, np.nan) if ts is None else np.array(ts, dtype=float),
        "test",
    )


def test_preprocess_counts_every_removal_and_remaps_contiguously():
    raw = _raw(
        ["a", "a", "a", "b", "b", "b", "c", "z"],
        ["x", "y", "x", "x", "y", "w", "x", "x"],
        [5, 4, 5, 4, 5, 2, 5, 1],
        [3, 2, 1, 1, 2, 3, 4, 5],
    )
    log, vocab, rep = preprocess(raw, PreprocessConfig(4.0, 2, 2))
    assert rep.input_interactions == 8 and rep.below_threshold == 2 and rep.missing_rating == 0
    assert rep.duplicates_removed == 1  # (a, x) twice: the one at t=1 is kept
    assert rep.kcore_removed_interactions == 1 and rep.kcore_removed_users == 1  # user c
    assert (rep.num_users, rep.num_items, rep.interactions) == (2, 2, 4)
    assert vocab.users.tolist() == ["a", "b"] and vocab.items.tolist() == ["x", "y"]
    got = sorted(zip(vocab.users[log.users], vocab.items[log.items], log.timestamps))
    assert got == [("a", "x", 1.0), ("a", "y", 2.0), ("b", "x", 1.0), ("b", "y", 2.0)]


def test_preprocess_flags_unbiased_log_and_dedupes_it_separately():
    biased = _raw(["a", "b", "a"], ["x", "x", "y"], [5, 5, 5])
    unbiased = _raw(["a", "a"], ["x", "x"], [4, 5])
    log, vocab, rep = preprocess(biased, PreprocessConfig(4.0), unbiased)
    assert rep.unbiased_input == 2 and rep.duplicates_removed == 1
    assert log.unbiased.sum() == 1 and len(log) == 4


def test_preprocess_fails_when_nothing_is_left():
    with pytest.raises(DataValidationError, match=r"no interactions left"):
        preprocess(_raw(["a"], ["x"], [1]), PreprocessConfig(4.0))
    with pytest.raises(DataValidationError, match=r"must be >= 0"):
        PreprocessConfig(4.0, -1, 0)


def test_interaction_log_helpers():
    log = InteractionLog.from_arrays([0, 2], [1, 0])
    assert (log.num_users, log.num_items) == (3, 2) and np.isnan(log.timestamps).all()
    assert log.keys().tolist() == [1, 4] and len(log.take(np.array([1]))) == 1
