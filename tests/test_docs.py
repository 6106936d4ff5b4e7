"""The contributor guide's "adding a method in one file" example works as written: registered,
it trains, evaluates, recommends and exports through the same paths as every method."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from oodrec.cli import main
from oodrec.methods import METHODS

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "developing.md"


def _example() -> str:
    text = GUIDE.read_text()
    section = text[text.index("## Adding a method in one file") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/developing.md: no python block under 'Adding a method in one file'"
    return match.group(1)


@pytest.fixture
def mf(monkeypatch):
    module = types.ModuleType("mf_example")
    monkeypatch.setitem(sys.modules, "mf_example", module)  # dataclasses look the module up
    exec(compile(_example(), str(GUIDE), "exec"), module.__dict__)  # noqa: S102 - our own doc
    METHODS.register("mf", module.MF)
    try:
        yield module.MF
    finally:
        METHODS._items.pop("mf", None)


def test_the_one_file_method_example_trains_recommends_and_exports(mf, tiny_dir, tmp_path):
    out = tmp_path / "runs"
    args = ["-q", "train", "--dataset", str(tiny_dir), "--model", "mf", "--epochs", "2"]
    assert main([*args, "--out", str(out), "--set", "model.emb_dim=8"]) == 0
    run = out / "tiny-mf-seed2025"
    assert (run / "record.json").is_file()
    assert main(["-q", "recommend", str(run), "--k", "3", "--out", str(tmp_path / "r.csv")]) == 0
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 3 * 20
    assert main(["-q", "export", str(run), "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "user_embeddings.npy").is_file()
