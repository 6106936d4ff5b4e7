"""Shared fixtures: tiny synthetic datasets built in code, and the real-data directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on small, shared CI machines
# (subprocesses started by the tests inherit the variable).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


REAL_DATA = Path(os.environ.get("OODREC_DATA", Path(__file__).parents[2] / "shared" / "data"))


def write_pairs(path: Path, pairs, third: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for u, i in pairs:
            fh.write(f"{u} {i} 1\n" if third else f"{u} {i}\n")
    return path


def make_tiny_dataset(root: Path, num_users: int = 20, num_items: int = 30, seed: int = 0) -> Path:
    """A checkerboard-ish dataset: even users like even items, odd users odd items, with a skewed
    popularity; every user has train, val, iid and ood items. Returns the directory."""
    rng = np.random.default_rng(seed)
    train, val, iid, ood = [], [], [], []
    for u in range(num_users):
        liked = [i for i in range(num_items) if i % 2 == u % 2]
        # skew: low ids are popular
        p = 1.0 / (1 + np.arange(len(liked)))
        p /= p.sum()
        chosen = rng.choice(liked, size=len(liked), replace=False, p=p)
        train += [(u, i) for i in chosen[:8]]
        val += [(u, int(chosen[8]))]
        iid += [(u, int(chosen[9])), (u, int(chosen[10]))]
        ood += [(u, int(chosen[11])), (u, int(chosen[12]))]
    # make sure every item appears in train
    for i in range(num_items):
        train.append((i % num_users if (i % num_users) % 2 == i % 2 else (i + 1) % num_users, i))
    train = list(dict.fromkeys(train))
    tset = set(train)
    val = [p for p in val if p not in tset]
    iid = [p for p in iid if p not in tset]
    ood = [p for p in ood if p not in tset]
    d = root / "tiny"
    write_pairs(d / "train.txt", train)
    write_pairs(d / "valid_iid.txt", val)
    write_pairs(d / "test_iid.txt", iid)
    write_pairs(d / "test_ood.txt", ood)
    return d


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return make_tiny_dataset(tmp_path)


@pytest.fixture
def tiny_dataset_factory():
    """``make_tiny_dataset`` itself, for tests that build several tiny datasets."""
    return make_tiny_dataset


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shipped data directory. Under CI (CI=true) missing data is a failure, not a skip."""
    if not (REAL_DATA / "food" / "train.txt").is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real data not found at {REAL_DATA} (set OODREC_DATA)")
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA
