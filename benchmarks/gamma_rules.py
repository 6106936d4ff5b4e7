"""How far does each val rule's choice of the popularity adjustment gamma fall from the best gamma?

For every finished run that logged the gamma grid (``eval.adjust_gammas``), at the run's
selected epoch:

* each *rule* (a val metric: plain ``ndcg@20``, ``ips_ndcg@20``, ``strat_ndcg@20`` ...) picks the
  gamma of the grid (0 included) with the best val value, read from ``epochs.jsonl``; a rule
  ``ips_ndcg@20~E`` is the IPS estimator with exponent ``E`` instead of the run's own
  ``eval.ips_gamma``, recomputed from the checkpoint (same epoch, same grid);
* the selected checkpoint is re-scored on the OOD test at every gamma of the grid, which gives
  the OOD figure of each rule's pick and the *oracle* gamma (best on the test). The oracle is a
  diagnostic of how much a perfect rule would gain: it reads the test, so it is never a result.

Prints (and with ``--out`` writes) a Markdown table per dataset and method: for each rule the
mean gamma picked, the OOD metric at the pick and its shortfall from the oracle; then the
oracle's gamma and figure. On the simulator (``configs/gamma_sim.yaml``) the OOD test is logged
under uniform exposure from the known relevance, so it is the truth the rules aim at.

Usage::

    python benchmarks/gamma_rules.py runs/gamma_sim --out results/ood_methods/gamma_rules_sim.md
    OODREC_DATA=../shared/data python benchmarks/gamma_rules.py runs/ood_methods_food \\
        runs/ood_methods_yahoo_r3 runs/ood_methods_yelp2018 --methods rns-adj,pda-adj
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

from oodrec.eval.evaluate import Evaluator
from oodrec.train.reload import load_run

DEFAULT_RULES = ("ndcg@20", "ips_ndcg@20", "strat_ndcg@20", "ips_ndcg@20~1", "ips_ndcg@20~1.5")
"""``METRIC~E``: an IPS val metric with exponent ``E`` (``eval.ips_gamma``), recomputed from the
checkpoint at every gamma; the others are read from the run's own log."""


def run_dirs(parents: list[str], methods: set[str] | None) -> list[Path]:
    """Finished runs under ``parents`` (or the parents themselves) that logged a gamma grid."""
    found = []
    for parent in map(Path, parents):
        for rec in sorted([parent / "record.json", *parent.glob("*/record.json")]):
            if not rec.is_file():
                continue
            record = json.loads(rec.read_text())
            if not (record.get("selection") or {}).get("adjustment"):
                continue
            if methods and method_name(rec.parent, record) not in methods:
                continue
            found.append(rec.parent)
    return found


def best(curve: dict[float, float]) -> float:
    """The gamma with the largest value (ties: the smaller |gamma|, so no adjustment wins a
    tie)."""
    return max(sorted(curve, key=abs), key=curve.__getitem__)


def logged_curve(row: dict, grid: list[float], rule: str) -> dict[float, float]:
    """Val ``rule`` at every gamma of ``grid``, as one epoch row of ``epochs.jsonl`` logged it."""
    return {g: row[f"val/{rule}"] if g == 0 else row["val_adjusted"][f"{g:g}"][rule] for g in grid}


def picks(row: dict, grid: list[float], rule: str) -> float:
    """The gamma of ``grid`` with the best val ``rule`` in one epoch row (``best``)."""
    return best(logged_curve(row, grid, rule))


def method_name(path: Path, record: dict) -> str | None:
    """The grid's name of a run's method (``bench.json``), else the record's."""
    bench = path / "bench.json"
    name = json.loads(bench.read_text()).get("method") if bench.is_file() else None
    return name or record.get("method")


def measure(path: Path, rules: tuple[str, ...], metrics: tuple[str, ...], cache: dict) -> dict:
    record = json.loads((path / "record.json").read_text())
    grid = [float(g) for g in record["selection"]["adjustment"]["grid"]]
    rows = [json.loads(line) for line in (path / "epochs.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["epoch"] == record["best_epoch"])
    key = json.dumps(record["config"]["data"], sort_keys=True)
    run = load_run(path, dataset=cache.get(key))
    cache[key] = run.dataset
    device = torch.device(run.cfg.train.device)
    scorer = run.method.scorer()

    def scored(split: str, ecfg) -> dict[float, dict[str, float]]:
        evaluator = Evaluator(run.dataset, ecfg, device)
        return {
            g: evaluator.evaluate(scorer, (split,), keep_per_user=False, gamma=g)[split].means
            for g in grid
        }

    ood = scored("ood_test", run.cfg.eval)
    out = {
        "dataset": record["dataset"],
        "method": method_name(path, record),
        "seed": record["seed"],
        "selected": float(record["selection"]["adjustment"]["gamma"]),
        "rules": {},
        "oracle": {},
        "curves": {f"ood/{m}": {g: ood[g][m] for g in grid} for m in metrics},
    }
    for rule in rules:
        if "~" in rule:
            base, exponent = rule.split("~")
            vals = scored("val", replace(run.cfg.eval, ips_gamma=float(exponent)))
            curve = {g: vals[g][base] for g in grid}
        else:
            curve = logged_curve(row, grid, rule)
        out["curves"][f"val/{rule}"] = curve
        g = best(curve)
        out["rules"][rule] = {"gamma": g, **{m: ood[g][m] for m in metrics}}
    for m in metrics:
        g = best(out["curves"][f"ood/{m}"])
        out["oracle"][m] = {"gamma": g, "value": ood[g][m]}
    return out


def table(results: list[dict], rules: tuple[str, ...], metric: str) -> list[str]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["dataset"], r["method"])].append(r)
    head = "| dataset | method | seeds | " + " | ".join(
        f"{rule}: gamma / OOD {metric} / shortfall" for rule in rules
    )
    lines = [
        head + f" | oracle (test-chosen, diagnostic): gamma / OOD {metric} |",
        "|---|---|--:|" + "--:|" * (len(rules) + 1),
    ]
    for (ds, method), rs in sorted(groups.items()):
        oracle = statistics.mean(r["oracle"][metric]["value"] for r in rs)
        cells = []
        for rule in rules:
            g = statistics.mean(r["rules"][rule]["gamma"] for r in rs)
            v = statistics.mean(r["rules"][rule][metric] for r in rs)
            short = (oracle - v) / oracle * 100 if oracle > 0 else 0.0
            cells.append(f"{g:+.2f} / {v:.4f} / {short:.1f}%")
        og = statistics.mean(r["oracle"][metric]["gamma"] for r in rs)
        lines.append(
            f"| {ds} | {method} | {len(rs)} | "
            + " | ".join(cells)
            + f" | {og:+.2f} / {oracle:.4f} |"
        )
    return lines


def figure(results: list[dict], path: str, metric: str) -> None:
    """One panel per (dataset, method): the OOD-test ``metric`` and every rule's val value
    against gamma (means over seeds, each curve divided by its own maximum so that the shapes
    compare), the rules' picks and the oracle marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["dataset"], r["method"])].append(r)
    n = len(groups)
    cols = min(3, n)
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.2 * rows_), squeeze=False)
    for ax, ((ds, method), rs) in zip(axes.flat, sorted(groups.items())):
        for name in rs[0]["curves"]:
            grid = sorted(rs[0]["curves"][name])
            ys = [statistics.mean(r["curves"][name][g] for r in rs) for g in grid]
            top = max(ys) or 1.0
            style = {"color": "black", "linewidth": 2.2} if name.startswith("ood/") else {}
            label = f"OOD test {name[4:]} (oracle)" if name.startswith("ood/") else name
            ax.plot(grid, [y / top for y in ys], marker="o", markersize=3, label=label, **style)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_title(f"{ds} / {method} ({len(rs)} seeds)", fontsize=9)
        ax.set_xlabel("gamma (s - gamma log(1 + d))")
        ax.set_ylabel("relative to the curve's max")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.suptitle(f"Val rules against the OOD test ({metric}) over the gamma grid", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories or their parents (a grid's out dir)")
    p.add_argument("--rules", default=",".join(DEFAULT_RULES), help="val metrics that pick gamma")
    p.add_argument("--metrics", default="recall@20,ndcg@20", help="OOD-test metrics reported")
    p.add_argument("--methods", help="only these grid method names (comma-separated)")
    p.add_argument("--out", help="also write the tables to this Markdown file")
    p.add_argument("--figure", help="also draw the gamma curves into this image (PNG)")
    args = p.parse_args(argv)
    rules = tuple(args.rules.split(","))
    metrics = tuple(args.metrics.split(","))
    dirs = run_dirs(args.runs, set(args.methods.split(",")) if args.methods else None)
    if not dirs:
        print("no finished run with a gamma grid (eval.adjust_gammas) found", file=sys.stderr)
        return 2
    cache: dict = {}
    results = []
    for i, d in enumerate(dirs, 1):
        print(f"[{i}/{len(dirs)}] {d}", file=sys.stderr)
        results.append(measure(d, rules, metrics, cache))
    lines = [
        "Gamma picked by each val rule at the selected epoch, the OOD-test figure there (mean over",
        "seeds) and its shortfall from the oracle gamma (best on the OOD test: a diagnostic that",
        "reads the test, never a result). Grid: the runs' eval.adjust_gammas plus 0.",
        "",
    ]
    for m in metrics:
        lines += [f"### OOD {m}", "", *table(results, rules, m), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    if args.figure:
        figure(results, args.figure, metrics[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
