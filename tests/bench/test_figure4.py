"""Figure 4 from grids of named methods that vary one sampler option at a time."""

from __future__ import annotations

import pytest

from oodrec.bench.records import load_runs
from tests.bench.helpers import write_run


def test_option_families_become_lines(tmp_path):
    from oodrec.bench.plots import _option_lines

    for seed in (1, 2):
        write_run(tmp_path, f"default-{seed}", sampler="cnsdiff", seed=seed, value=0.1)
        write_run(tmp_path, f"T10-{seed}", sampler="cnsdiff", options={"steps": 10}, seed=seed)
        write_run(tmp_path, f"noalign-{seed}", sampler="cnsdiff", options={"align": False})
        for k in (1, 3):
            write_run(
                tmp_path,
                f"K{k}-{seed}",
                sampler="cnsdiff",
                options={"stride": 1, "negatives_per_positive": k},
                seed=seed,
            )
    runs = load_runs(tmp_path)
    steps = _option_lines(runs, "steps")
    # the default run joins the steps line at the default T = 20; the K runs (stride 1) do not
    assert {label: {v: len(rs) for v, rs in pts.items()} for label, pts in steps.items()} == {
        "cnsdiff": {10: 2, 20: 2}
    }
    k = _option_lines(runs, "negatives_per_positive")
    assert {label: sorted(pts) for label, pts in k.items()} == {"cnsdiff stride=1": [1, 3]}
    assert _option_lines(runs, "align") == {}  # a switch: the ablation table shows it
    # K = 1 is the default, so the K1 runs differ from the default runs in the stride alone
    stride = _option_lines(runs, "stride")
    assert {label: {v: len(rs) for v, rs in pts.items()} for label, pts in stride.items()} == {
        "cnsdiff": {1: 2, 4: 2}
    }


def test_figure4_draws_option_families(tmp_path):
    pytest.importorskip("matplotlib")
    from oodrec.bench.plots import figure4

    for t in (10, 50):
        write_run(tmp_path / "runs", f"T{t}", sampler="cnsdiff", options={"steps": t})
    written = figure4(load_runs(tmp_path / "runs"), tmp_path / "fig")
    assert sorted(p.name for p in written) == [
        "fig4_sampler_steps_food.pdf",
        "fig4_sampler_steps_food.png",
    ]


def test_a_figure_saved_twice_has_the_same_bytes(tmp_path):
    # regenerating a report must not change committed PDFs whose figure did not change
    pytest.importorskip("matplotlib")
    import time

    from oodrec.bench.plots import _figure, _save

    made = []
    for name in ("a", "b"):
        fig, (ax,) = _figure(1)
        ax.plot([0, 1, 2], [3, 1, 2])
        made.append(_save(fig, tmp_path / name, "fig"))
        time.sleep(1.1)  # a creation date in seconds would differ
    for png_or_pdf in range(2):
        assert made[0][png_or_pdf].read_bytes() == made[1][png_or_pdf].read_bytes()
