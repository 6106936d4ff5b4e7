"""Generators of small raw release files (Food.com, Yelp, KuaiRec, generic CSV) for the
bring-your-own-data tests. Everything is written into pytest's ``tmp_path``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


def raw_log(num_users: int = 80, num_items: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    """A popularity-skewed explicit-feedback log: 10-25 distinct items per user, ratings 1-5
    (mostly >= 4), timestamps in seconds (ties possible), string tokens."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, num_items + 1) ** 0.8
    pop /= pop.sum()
    users, items = [], []
    for u in range(num_users):
        n = int(rng.integers(10, 26))
        users += [u] * n
        items += rng.choice(num_items, size=n, replace=False, p=pop).tolist()
    n = len(users)
    return {
        "user": np.array([f"u{u}" for u in users]),
        "item": np.array([f"i{i}" for i in items]),
        "rating": rng.choice([1, 2, 3, 4, 5], size=n, p=[0.05, 0.05, 0.1, 0.4, 0.4]),
        "ts": 1_500_000_000 + rng.integers(0, 400, size=n) * 86_400,
    }


def write_food_com(path: Path, log: dict) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "recipe_id", "date", "rating", "review"])
        for k in range(log["user"].size):
            date = np.datetime64(int(log["ts"][k]), "s").astype("datetime64[D]")
            review = 'Great, "really"\nmade it twice' if k % 7 == 0 else "ok"
            w.writerow([log["user"][k], log["item"][k], str(date), log["rating"][k], review])
    return path


def write_yelp(path: Path, log: dict) -> Path:
    with open(path, "w") as fh:
        for k in range(log["user"].size):
            date = str(np.datetime64(int(log["ts"][k]), "s")).replace("T", " ")
            obj = {
                "review_id": f"r{k}",
                "user_id": str(log["user"][k]),
                "business_id": str(log["item"][k]),
                "stars": float(log["rating"][k]),
                "useful": 0,
                "text": "Nice place, friendly staff.",
                "date": date,
            }
            fh.write(json.dumps(obj) + "\n")
    return path


KUAIREC_HEADER = [
    "user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp",
    "watch_ratio",
]  # fmt: skip


def write_kuairec(path: Path, users, items, watch_ratio, ts) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(KUAIREC_HEADER)
        for u, i, r, t in zip(users, items, watch_ratio, ts):
            stamp = "" if np.isnan(t) else f"{t:.3f}"
            w.writerow([u, i, int(r * 10000), 10000, "", "", stamp, f"{r:.4f}"])
    return path


def kuairec_pair(tmp_path: Path, seed: int = 0) -> tuple[Path, Path]:
    """A biased big matrix (skewed exposure) and a fully observed small matrix over a subset."""
    rng = np.random.default_rng(seed)
    log = raw_log(90, 60, seed)
    users = np.char.lstrip(log["user"], "u").astype(int)
    items = np.char.lstrip(log["item"], "i").astype(int)
    wr = rng.lognormal(0.5, 0.6, size=users.size)
    ts = log["ts"].astype(float)
    ts[::50] = np.nan  # the release has some rows without a timestamp
    big = write_kuairec(tmp_path / "big_matrix.csv", users, items, wr, ts)
    su, si = np.meshgrid(np.arange(0, 90, 3), np.arange(0, 60, 2), indexing="ij")
    su, si = su.ravel(), si.ravel()
    swr = rng.lognormal(0.0, 0.8, size=su.size)
    small = write_kuairec(tmp_path / "small_matrix.csv", su, si, swr, np.full(su.size, 1.6e9))
    return big, small


@pytest.fixture
def food_raw(tmp_path: Path) -> Path:
    return write_food_com(tmp_path / "RAW_interactions.csv", raw_log())


@pytest.fixture
def yelp_raw(tmp_path: Path) -> Path:
    return write_yelp(tmp_path / "review.json", raw_log(400, 60, seed=1))


@pytest.fixture
def kuairec_raw(tmp_path: Path) -> tuple[Path, Path]:
    return kuairec_pair(tmp_path)
