"""``oodrec recommend`` / ``export`` and the Python API, for every registered method: the lists
equal the evaluator's, ids come back as the user's own, and bad input changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oodrec.cli import main
from oodrec.eval.evaluate import Evaluator
from oodrec.methods import METHODS
from oodrec.recommend import recommend
from oodrec.train.reload import load_run

from .test_contract import FAST

NAMES = METHODS.names()


def _train(tiny_dir: Path, out: Path, name: str, epochs: int = 2) -> Path:
    sets = [x for o in FAST[name] for x in ("--set", o)]
    args = ["-q", "train", "--dataset", str(tiny_dir), "--model", name, "--seed", "5"]
    args += ["--epochs", str(epochs), "--out", str(out), "--name", name]
    args += ["--set", "train.batch_size=16", "--set", "train.patience=0", *sets]
    assert main(args) == 0
    return out / name


def _lists(table) -> dict:
    out: dict = {}
    for u, r, i in zip(*(table.column(c).to_pylist() for c in ("user", "rank", "item"))):
        out.setdefault(u, []).append((r, i))
    return {u: [i for _, i in sorted(v)] for u, v in out.items()}


@pytest.mark.parametrize("name", NAMES)
def test_recommend_lists_are_the_evaluators(name, tiny_dir, tmp_path):
    run = load_run(_train(tiny_dir, tmp_path / "runs", name))
    k = max(run.cfg.eval.ks)
    seen: dict[str, dict[int, list[int]]] = {"val": {}, "ood_test": {}}

    def on_top(split, users, top):
        for u, row in zip(users.tolist(), top.tolist()):
            seen[split][u] = row

    with torch.no_grad():
        run.method.eval()
        Evaluator(run.dataset, run.cfg.eval, torch.device("cpu")).evaluate(
            run.method.scorer(), ("val", "ood_test"), on_top=on_top
        )
    splits = run.dataset.splits
    for split, exclude in (("val", ("train",)), ("ood_test", ("train", "val"))):
        masked = {
            (u, i)
            for s in exclude
            for u, i in zip(*(splits[s].users.tolist(), splits[s].items.tolist()))
        }
        _, table = recommend(run, None, k=k, exclude="train" if split == "val" else "seen")
        got = _lists(table)
        assert seen[split], split
        for u, want in seen[split].items():
            # the evaluator's list ends in masked fillers when fewer than k items are left
            want = [i for i in want if (u, i) not in masked]
            assert got[u] == want, f"{name} {split} user {u}"


@pytest.mark.parametrize("name", NAMES)
def test_export_writes_vectors_or_says_why_not(name, tiny_dir, tmp_path):
    run_dir = _train(tiny_dir, tmp_path / "runs", name, epochs=1)
    assert main(["-q", "export", str(run_dir), "--out", str(tmp_path / "x")]) == 0
    info = json.loads((tmp_path / "x" / "export.json").read_text())
    ids = (tmp_path / "x" / "user_ids.txt").read_text().split()
    assert len(ids) == info["num_users"]
    run = load_run(run_dir)
    reps = run.method.representations()
    if reps is None:
        assert info["score"] is None and "no vectors" in info["note"]
        assert not (tmp_path / "x" / "user_embeddings.npy").exists()
        return
    users = np.load(tmp_path / "x" / "user_embeddings.npy")
    items = np.load(tmp_path / "x" / "item_embeddings.npy")
    assert users.shape == (info["num_users"], info["dim"]) and items.shape[0] == info["num_items"]
    if info["score"].startswith("inner product"):
        # the exported vectors reproduce the run's scores
        with torch.no_grad():
            want = run.method.scorer()(torch.arange(3))
        np.testing.assert_allclose(users[:3] @ items.T, want.numpy(), rtol=1e-4, atol=1e-5)


def _string_id_dataset(tmp_path: Path) -> Path:
    from oodrec.data.prepare import PrepareOptions, prepare_dataset
    from oodrec.data.raw import ColumnMapping

    rng = np.random.default_rng(0)
    users = rng.integers(0, 40, 1200)
    items = (rng.zipf(1.6, 1200) - 1) % 30
    lines = ["uid,sku,when"] + [
        f"u_{u},A3F-{i:02d} x,{k}" for k, (u, i) in enumerate(zip(users, items))
    ]
    raw = tmp_path / "clicks.csv"
    raw.write_text("\n".join(lines) + "\n")
    cols = ColumnMapping(user="uid", item="sku", timestamp="when")
    return prepare_dataset(
        raw, "csv", "temporal", tmp_path / "clicks", PrepareOptions(columns=cols)
    )


def test_string_ids_round_trip_through_recommend_export_and_the_api(tmp_path):
    import oodrec

    data = _string_id_dataset(tmp_path)
    raw_users = set((data / "user_ids.txt").read_text().split("\n")) - {""}
    raw_items = set((data / "item_ids.txt").read_text().split("\n")) - {""}
    assert all(u.startswith("u_") for u in raw_users) and "A3F-00 x" in raw_items
    run = oodrec.train(
        dataset=str(data), seed=1, epochs=1, out=tmp_path / "runs", **{"model.emb_dim": 8}
    )
    for suffix in (".csv", ".parquet", ".jsonl"):
        out = tmp_path / f"recs{suffix}"
        assert main(["-q", "recommend", str(run.path), "--k", "5", "--out", str(out)]) == 0
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(out).to_pylist()
        elif suffix == ".csv":
            import pyarrow.csv as pcsv

            rows = pcsv.read_csv(
                out, convert_options=pcsv.ConvertOptions(column_types={"user": "string"})
            ).to_pylist()
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows and {r["user"] for r in rows} <= raw_users
        assert {r["item"] for r in rows} <= raw_items
    some = sorted(raw_users)[:3]
    table = run.recommend(some, k=4)
    assert set(table.column("user").to_pylist()) <= set(some)
    assert table.num_rows <= 12 and set(table.column("item").to_pylist()) <= raw_items
    assert run.scores(some).shape == (3, len(raw_items))
    assert set(run.item_ids()) == raw_items
    with pytest.raises(oodrec.errors.ConfigError, match="'u_nobody'"):
        run.recommend(["u_nobody"])
    assert main(["-q", "export", str(run.path), "--out", str(tmp_path / "emb")]) == 0
    assert set((tmp_path / "emb" / "item_ids.txt").read_text().split("\n")[:-1]) == raw_items
    assert run.metrics.keys() >= {"val", "ood_test"} and run.evaluate()["val"]


BAD = [
    ("no checkpoint", ["{run}"], "no best checkpoint"),
    ("unknown user", ["{run}", "--users", "3,99999"], "'99999'"),
    ("k zero", ["{run}", "--k", "0"], "--k must be >= 1"),
    ("missing folder", ["{run}", "--out", "{tmp}/nowhere/r.csv"], "does not exist"),
    ("bad suffix", ["{run}", "--out", "{tmp}/r.txt"], "unknown output format"),
    ("unknown candidate item", ["{run}", "--candidates", "{tmp}/cand.txt"], "line 2: 555"),
]


@pytest.mark.parametrize("case,args,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(case, args, message, tiny_dir, tmp_path, capsys):
    run = _train(tiny_dir, tmp_path / "runs", "lightgcn", epochs=1)
    if case == "no checkpoint":
        (run / "checkpoints" / "best.pt").unlink()
    (tmp_path / "cand.txt").write_text("0 1\n0 555\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(run=run, tmp=tmp_path) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "r.csv")]
    capsys.readouterr()
    assert main(["-q", "recommend", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before
