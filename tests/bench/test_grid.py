"""Grid specs: YAML validation, cartesian expansion, run names and resolved configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from oodrec.bench.grid import expand_grid, load_grid, parse_grid, run_name
from oodrec.config import ExperimentConfig
from oodrec.errors import ConfigError

SMOKE = Path(__file__).parents[2] / "configs" / "smoke.yaml"
PAPER = Path(__file__).parents[2] / "configs" / "paper.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GRID = {
    "out_dir": "runs/x",
    "base": {"train": {"epochs": 3, "lr": 0.05}},
    "methods": [
        {"name": "rns", "sampler": "rns"},
        {"name": "cf", "sampler": "cnsdiff", "options": {"mode": "code_faithful"}},
        {"name": "dns-slow", "sampler": "dns", "overrides": ["train.lr=0.001"]},
    ],
    "datasets": ["food", "yelp2018"],
    "seeds": [1, 2],
    "sweep": {"model.num_layers": [1, 3], "train.batch_size": [64, 128]},
}


def test_cartesian_product_names_and_configs(tmp_path):
    runs = expand_grid(load_grid(_write(tmp_path, GRID)))
    assert len(runs) == 2 * 3 * 2 * 2 * 2
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert names[0] == "food-rns-seed1-model.num_layers=1-train.batch_size=64"
    assert names[-1] == "yelp2018-dns-slow-seed2-model.num_layers=3-train.batch_size=128"
    by_name = {r.name: r for r in runs}
    run = by_name["yelp2018-cf-seed2-model.num_layers=3-train.batch_size=64"]
    name, cfg = run  # unpacks as (run_name, ExperimentConfig)
    assert isinstance(cfg, ExperimentConfig) and name == cfg.name == run.name
    assert cfg.data.dataset == "yelp2018" and cfg.seed == 2 and cfg.out_dir == "runs/x"
    assert cfg.model.num_layers == 3 and cfg.train.batch_size == 64 and cfg.train.epochs == 3
    assert cfg.sampler.name == "cnsdiff" and cfg.sampler.options == {"mode": "code_faithful"}
    assert cfg.train.l2_form == "selfrec"  # implied by code_faithful
    assert run.method == "cf" and run.sweep == {"model.num_layers": 3, "train.batch_size": 64}
    slow = by_name["food-dns-slow-seed1-model.num_layers=1-train.batch_size=64"].config
    assert slow.train.lr == 0.001 and by_name[names[0]].config.train.lr == 0.05


def test_sampler_option_sweep_and_extra_overrides(tmp_path):
    data = dict(GRID, methods=[{"name": "cnsdiff", "sampler": "cnsdiff"}], datasets=["food"])
    data["sweep"] = {"sampler.initial_alpha": [1.0, 2.0]}
    runs = expand_grid(parse_grid(data), ["train.threads=1"], out_dir="elsewhere")
    assert [r.name for r in runs] == [
        "food-cnsdiff-seed1-sampler.initial_alpha=1.0",
        "food-cnsdiff-seed2-sampler.initial_alpha=1.0",
        "food-cnsdiff-seed1-sampler.initial_alpha=2.0",
        "food-cnsdiff-seed2-sampler.initial_alpha=2.0",
    ]
    assert runs[2].config.sampler.options == {"initial_alpha": 2.0}
    assert all(r.config.train.threads == 1 and r.config.out_dir == "elsewhere" for r in runs)


def test_base_as_override_list_and_plain_method_names():
    spec = parse_grid(
        {"base": ["train.epochs=2"], "methods": ["rns", "dns"], "datasets": ["d/x"], "seeds": [0]}
    )
    runs = expand_grid(spec)
    assert [r.name for r in runs] == ["x-rns-seed0", "x-dns-seed0"]
    assert runs[1].config.train.epochs == 2 and runs[1].config.sampler.name == "dns"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"sweeps": {}}, "unknown key(s) sweeps"),
        ({"methods": [{"name": "a", "sampler": "rns", "option": {}}]}, "methods[0]"),
        ({"base": {"train": {"epoch": 3}}}, "base.train.epoch"),
        ({"methods": [{"name": "a", "sampler": "rnss"}]}, "Did you mean 'rns'"),
        ({"methods": [{"name": "a", "sampler": "dns", "options": {"bogus": 1}}]}, "bogus"),
        ({"methods": ["rns", {"name": "rns", "sampler": "dns"}]}, "duplicate method"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"sweep": {"train.nope": [1]}}, "train.nope"),
    ],
)
def test_errors_name_the_file(tmp_path, change, needle):
    path = _write(tmp_path, dict(GRID, **change))
    with pytest.raises(ConfigError) as exc:
        expand_grid(load_grid(path))
    assert str(path) in str(exc.value) and needle in str(exc.value)


def test_run_name_is_filesystem_safe():
    assert (
        run_name("/data/my set", "m", 3, {"a.b": "x/y", "c": True})
        == "my_set-m-seed3-a.b=x_y-c=true"
    )


def test_shipped_grids_expand():
    smoke = expand_grid(load_grid(SMOKE))
    assert len(smoke) == 6 and {r.method for r in smoke} == {"rns", "cnsdiff", "diffrec"}
    assert all(r.config.train.threads == 1 and r.config.train.epochs == 2 for r in smoke)
    paper = expand_grid(load_grid(PAPER))
    assert {r.dataset for r in paper} == {"food", "yelp2018", "yahoo_r3", "coat", "food_drgnn"}
    from oodrec.samplers import SAMPLERS

    assert {r.config.sampler.name for r in paper} == set(SAMPLERS.names())  # every sampler
    modes = {
        r.config.sampler.options.get("mode") for r in paper if r.config.sampler.name == "cnsdiff"
    }
    assert modes == {"code_faithful", "paper", "causal"}
    assert len({r.seed for r in paper}) == 5


def test_gpu_pinning_only_for_plain_cuda_runs(monkeypatch, tmp_path):
    import torch

    from oodrec.bench.executors import _cuda_devices
    from oodrec.bench.runner import plan_grid

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    data = dict(GRID, sweep={}, datasets=["food"], seeds=[1])

    def jobs(device: str):
        runs = expand_grid(parse_grid(data), [f"train.device={device}"], out_dir=str(tmp_path))
        return plan_grid(runs)[0]

    assert _cuda_devices(jobs("cuda")) == [0, 1]
    assert _cuda_devices(jobs("cpu")) == []
    assert _cuda_devices(jobs("cuda:1")) == []  # explicit devices are not remapped


def test_a_run_finished_elsewhere_counts_as_done_but_an_unfinished_one_conflicts(tmp_path):
    """Finished on a GPU machine (or with other threads), it is skipped; unfinished, refused."""
    from oodrec.bench.runner import plan_run
    from oodrec.config import to_dict
    from oodrec.errors import RunError

    data = dict(GRID, sweep={}, datasets=["food"], seeds=[1])

    def run(*overrides: str):
        return expand_grid(parse_grid(data), list(overrides), out_dir=str(tmp_path))[0]

    cpu = run("train.device=cpu", "train.threads=1")
    path = tmp_path / cpu.name
    path.mkdir()
    gpu_cfg = run("train.device=cuda", "train.threads=4").config
    (path / "config.yaml").write_text(yaml.safe_dump(to_dict(gpu_cfg)))
    with pytest.raises(RunError, match=r"unfinished run with a different config: train.device"):
        plan_run(cpu, path)
    (path / "record.json").write_text("{}")
    assert plan_run(cpu, path) == "skip"
    assert plan_run(cpu, path, force=True) == "restart"
    with pytest.raises(RunError, match=r"finished run with a different config: train.device.*lr"):
        plan_run(run("train.lr=0.5"), path)  # a result-changing key still conflicts


def test_dry_run_names_each_runs_state_and_why_it_conflicts(tmp_path, capsys):
    """--dry-run: a resumable run says how far it got, a conflict names the differing keys, and
    the last line counts each state."""
    import json

    from oodrec.cli import main
    from oodrec.config import to_dict

    data = dict(GRID, sweep={}, datasets=["food"], seeds=[1, 2, 3], methods=GRID["methods"][:1])
    grid = str(_write(tmp_path, data))
    out = tmp_path / "runs"
    runs = expand_grid(parse_grid(data), out_dir=str(out))
    for run, epochs, finished, lr in [(runs[0], 2, False, 0.05), (runs[1], 3, True, 0.01)]:
        cfg = to_dict(run.config) | {"train": to_dict(run.config.train) | {"lr": lr}}
        (out / run.name).mkdir(parents=True)
        (out / run.name / "config.yaml").write_text(yaml.safe_dump(cfg))
        rows = "".join(json.dumps({"epoch": e}) + "\n" for e in range(epochs))
        (out / run.name / "epochs.jsonl").write_text(rows)
        if finished:
            (out / run.name / "record.json").write_text("{}")
    assert main(["bench", grid, "--out", str(out), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "resume   food-rns-seed1  (2 epoch(s) done)",
        "CONFLICT food-rns-seed2  (differs: train.lr (0.01 -> 0.05))",
        "new      food-rns-seed3",
        f"3 run(s) in {out}: 1 resume, 1 CONFLICT, 1 new",
    ]
    assert "--force to rerun it" in captured.err


def test_model_entries_and_plain_model_names():
    spec = parse_grid(
        {
            "methods": [
                "rns",
                "diffrec",
                {"name": "diffrec-t10", "model": "diffrec", "options": {"steps": 10}},
                {"name": "cf", "sampler": "cnsdiff", "options": {"mode": "code_faithful"}},
            ],
            "datasets": ["food"],
            "seeds": [1],
        }
    )
    runs = {r.name: r.config for r in expand_grid(spec)}
    rns, dr, dr10, cf = (runs[f"food-{m}-seed1"] for m in ("rns", "diffrec", "diffrec-t10", "cf"))
    assert rns.model.name == "lightgcn" and rns.sampler.name == "rns"
    assert dr.model.name == "diffrec" and dr.train.lr == 1e-5 and dr.train.batch_size == 400
    assert dr10.model.options == {"steps": 10} and dr10.sampler is None  # no sampler
    assert cf.train.l2_form == "selfrec"  # sampler-implied, computed in the one place


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"name": "x", "model": "diffrec", "sampler": "dns"}, "takes no sampler"),
        ({"name": "x", "model": "difrec"}, "Did you mean 'diffrec'"),
        ({"name": "x", "model": "diffrec", "options": {"stepz": 1}}, "unknown option"),
    ],
)
def test_model_entry_errors_name_the_grid(entry, needle):
    with pytest.raises(ConfigError, match=needle):
        expand_grid(parse_grid({"methods": [entry], "datasets": ["food"], "seeds": [1]}, "g.yaml"))


def test_option_templates_are_filled_per_run():
    spec = parse_grid(
        {
            "out_dir": "runs/c",
            "methods": [
                {"name": "hdrm_backbone", "model": "hdrm_backbone"},
                {
                    "name": "hdrm",
                    "model": "hdrm",
                    "options": {"backbone_run": "{out_dir}/{dataset}-hdrm_backbone-seed{seed}"},
                },
            ],
            "datasets": ["food", "data/yahoo_r3"],
            "seeds": [1, 2],
        },
        "g.yaml",
    )
    runs = {r.name: r for r in expand_grid(spec)}
    opts = runs["yahoo_r3-hdrm-seed2"].config.model.options
    assert opts["backbone_run"] == "runs/c/yahoo_r3-hdrm_backbone-seed2"
    assert "yahoo_r3-hdrm_backbone-seed2" in runs  # the run it points to is in the grid
    bad = {"name": "x", "model": "hdrm", "options": {"backbone_run": "{nope}/r"}}
    with pytest.raises(ConfigError, match="unknown placeholder"):
        expand_grid(parse_grid({"methods": [bad], "datasets": ["food"], "seeds": [1]}, "g.yaml"))


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_grid_file_loads_and_expands(path):
    runs = expand_grid(load_grid(path))
    assert runs and len({r.name for r in runs}) == len(runs)


def test_part_of_a_grid_has_the_whole_grids_run_names_and_configs(tmp_path, capsys):
    from oodrec.bench.grid import restrict_grid
    from oodrec.cli import main

    spec = load_grid(_write(tmp_path, GRID))
    whole = {r.name: r.config for r in expand_grid(spec)}
    part = expand_grid(restrict_grid(spec, ["yelp2018"], ["dns-slow", "rns"], [2]))
    assert len(part) == 2 * 4  # two methods x four sweep points
    assert all(whole[r.name] == r.config for r in part)
    assert {r.config.data.dataset for r in part} == {"yelp2018"} and {r.seed for r in part} == {2}
    assert [r.name.split("-seed")[0] for r in part][:2] == ["yelp2018-rns", "yelp2018-rns"]
    with pytest.raises(ConfigError, match=r"--methods 'dns' is not in the grid's methods: rns, cf"):
        restrict_grid(spec, methods=["dns"])
    with pytest.raises(ConfigError, match=r"--seeds 3 is not in the grid's seeds: 1, 2"):
        restrict_grid(spec, seeds=[3])
    grid = str(_write(tmp_path, GRID))
    out = str(tmp_path / "runs")
    assert (
        main(["bench", grid, "--out", out, "--dry-run", "--datasets", "food", "--seeds", "1"]) == 0
    )
    listed = capsys.readouterr().out
    assert "12 run(s)" in listed and "yelp2018" not in listed and "seed2" not in listed
    assert main(["bench", grid, "--dry-run", "--datasets", "kuairec"]) == 2
    assert "--datasets 'kuairec' is not in the grid's datasets: food, yelp2018" in (
        capsys.readouterr().err
    )


def test_runs_that_read_another_run_wait_for_it(tmp_path):
    """HDRM's stage 2 names its stage-1 run (backbone_run): parallel workers start it only in a
    later wave; grids without such links stay one wave."""
    from oodrec.bench.executors import dependency_waves
    from oodrec.bench.runner import plan_grid

    root = Path(__file__).parents[2] / "configs"

    def waves(grid: str) -> list[list[str]]:
        runs = expand_grid(load_grid(root / grid), out_dir=str(tmp_path))
        return [[j.run.name for j in w] for w in dependency_waves(plan_grid(runs)[0])]

    first, second = waves("causal_methods.yaml")
    assert len(second) == 9 and all("-hdrm-" in n for n in second)
    assert not any("-hdrm-" in n for n in first)
    assert len(waves("smoke.yaml")) == 1
