"""One OOD table of every system: the thirteen of the paper's Table 1, PNS, MostPop and the
popularity-shift anchors (PDA, PSL, BC loss, DRGO), each with plain and with popularity-adjusted
scores where its rows exist.

Reads the ``table1.csv`` files that ``oodrec report`` wrote under ``results/`` (mean, std and
number of seeds of each OOD-test metric) and writes one Markdown table (and a CSV) with, per
dataset, OOD Recall@20 and NDCG@20 as ``mean ± std`` and, for every row, a t-test against the
best row of that dataset and metric from another system (a system's plain and adjusted rows are
not each other's rivals; the best row is tested against the best of the other systems).

The test is paired over the seeds both rows share when both reports list their per-seed values
(the ``values`` column of ``table1.csv``) and share at least two seeds; otherwise it is Welch's
unpaired test from mean, std and n (the older grids kept those summaries only, not their runs).
Every cell names the test behind its p.

A row the grids have not produced reads "not run"; a cell over fewer than 3 seeds says how
many. Every row is selected on val; a cell marked † was selected on the IPS-weighted val
estimator (the better one on Yahoo! R3 and Yelp2018), the others on plain val, so the selection
rule of every figure is visible.

Usage::

    python benchmarks/ood_table.py --out results/ood_methods/combined
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from scipy import stats

from oodrec.bench.stats import paired_ttest

DATASETS = ("food", "yahoo_r3", "yelp2018")
METRICS = ("recall@20", "ndcg@20")
SEEDS = 3
"""Seeds of a complete row; a cell over fewer says how many."""


@dataclass(frozen=True)
class Source:
    """Rows of one report: ``method`` in ``csv`` shown as ``label``."""

    label: str
    csv: str
    method: str
    selection: str = "plain val"
    adjusted: bool = False
    datasets: tuple[str, ...] = DATASETS
    rerun_name: str | None = None
    """The method's name in the adjusted rerun of its grid, where it differs (configs/paper.yaml
    names CNSDiff's modes cnsdiff-causal, cnsdiff (paper) and cnsdiff-cf)."""

    @property
    def system(self) -> str:
        """The system a row belongs to (``system_of`` its label)."""
        return system_of(self.label)


def system_of(label: str) -> str:
    """The system a row's label names: the label before any comma (``PSL, cosine γ grid`` is
    PSL)."""
    return label.split(",")[0]


def _both(label: str, method: str, folder: str = "ood_methods/{ds}") -> list[Source]:
    plain = Source(label, f"{folder}/table1.csv", method)
    adj = Source(label, f"{folder}/table1.csv", f"{method}-adj", adjusted=True)
    return [plain, adj]


# The sources of the combined table. The 14 older systems ran before popularity-adjusted
# scoring existed: their adjusted rows come from a rerun of their grids with
# eval.adjust_gammas, reported into results/ood_adjusted/DATASET/ (every row there is adjusted;
# see results/ood_methods/README.md), where present.
SOURCES: list[Source] = [
    Source("MostPop", "ood_methods/mostpop/table1.csv", "mostpop"),
    *[
        s
        for name, method in [
            ("LightGCN + RNS", "rns"),
            ("PDA", "pda"),
            ("PSL", "psl"),
            ("BC loss", "bc"),
            ("DRGO (our reconstruction)", "drgo"),
        ]
        for s in _both(name, method)
    ],
    Source(
        "LightGCN + RNS, γ grid to −8", "ood_methods/{ds}/table1.csv", "rns-adj-wide", adjusted=True
    ),
    Source("PSL, cosine γ grid", "ood_methods/{ds}/table1.csv", "psl-adjc", adjusted=True),
    Source("BC loss, cosine γ grid", "ood_methods/{ds}/table1.csv", "bc-adjc", adjusted=True),
    Source("CNSDiff `causal`", "main/table1.csv", "cnsdiff", rerun_name="cnsdiff-causal"),
    Source("CNSDiff `paper`", "main/table1.csv", "cnsdiff[mode=paper]", rerun_name="cnsdiff"),
    Source(
        "CNSDiff `code_faithful`",
        "main/table1.csv",
        "cnsdiff[mode=code_faithful]",
        rerun_name="cnsdiff-cf",
    ),
    *[
        Source(name, "main/table1.csv", method)
        for name, method in [
            ("DNS(2,32)", "dns"),
            ("MixGCF", "mixgcf"),
            ("AHNS", "ahns"),
            ("DMNS (adapted)", "dmns"),
            ("PNS", "pns"),
        ]
    ],
    Source("DiffRec", "methods/table1.csv", "diffrec"),
    *[
        Source(name, "shift_methods/table1.csv", method)
        for name, method in [("InvCF", "invcf"), ("AdvInfoNCE", "advinfonce"), ("DR-GNN", "drgnn")]
    ],
    *[
        Source(name, "causal_methods/table1.csv", method)
        for name, method in [("CausalDiff", "causaldiff"), ("HDRM", "hdrm"), ("CDR", "cdr")]
    ],
]
OLDER = [s for s in SOURCES if not s.csv.startswith("ood_methods")]
"""The older systems; their adjusted rows are read from ``ood_adjusted/{dataset}``."""


@dataclass
class Cell:
    mean: float
    std: float
    n: int
    selection: str
    per_seed: dict[int, float] | None = None
    """Seed -> value where the report lists them (``values`` column), else None."""


def _per_seed(row: dict[str, str]) -> dict[int, float] | None:
    seeds, values = (row.get("seeds") or "").split(), (row.get("values") or "").split()
    if not values or len(seeds) != len(values):
        return None
    return {int(s): float(v) for s, v in zip(seeds, values)}


def read(results: Path, source: Source, dataset: str) -> dict[str, Cell] | None:
    path = results / source.csv.format(ds=dataset)
    if not path.is_file():
        return None
    cells = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if (row["split"], row["dataset"], row["method"]) != (
                "ood_test",
                dataset,
                source.method,
            ):
                continue
            if row["metric"] not in METRICS or not row["n"]:
                continue
            adjusted = "popularity-adjusted" in row["selection"]
            if adjusted != source.adjusted and source.csv.startswith("ood_methods"):
                continue
            std = float(row["std"]) if row["std"] else 0.0
            cells[row["metric"]] = Cell(
                float(row["mean"]), std, int(row["n"]), row["selection"], _per_seed(row)
            )
    return cells or None


def welch(a: Cell, b: Cell) -> float:
    """Two-sided p of Welch's t-test from the summaries (nan when undefined)."""
    if a.n < 2 or b.n < 2 or (a.std == 0 and b.std == 0):
        return math.nan
    return float(stats.ttest_ind_from_stats(a.mean, a.std, a.n, b.mean, b.std, b.n, False).pvalue)


def compare(a: Cell, b: Cell) -> tuple[float, str]:
    """p of ``a`` against ``b`` and the test that gave it: paired over their common seeds where
    both list per-seed values for at least two common seeds, else Welch's (``welch``)."""
    common = sorted(set(a.per_seed or {}) & set(b.per_seed or {}))
    if len(common) >= 2:
        _, p = paired_ttest([a.per_seed[s] for s in common], [b.per_seed[s] for s in common])  # type: ignore[index]
        return p, "paired"
    return welch(a, b), "Welch"


def build(results: Path) -> tuple[list[str], list[dict]]:
    rows: list[tuple[str, bool, dict[str, dict[str, Cell] | None]]] = []
    for s in SOURCES:
        rows.append((s.label, s.adjusted, {ds: read(results, s, ds) for ds in s.datasets}))
    for s in OLDER:
        name = s.rerun_name or s.method
        adj = Source(s.label, "ood_adjusted/{ds}/table1.csv", name, adjusted=True)
        rows.append((s.label, True, {ds: read(results, adj, ds) for ds in DATASETS}))
    flat = []
    best: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for i, (_, _, cells) in enumerate(rows):
        for ds, got in cells.items():
            for m in METRICS:
                if got and m in got:
                    best.setdefault((ds, m), []).append((got[m].mean, i))
    for key in best:
        best[key].sort(reverse=True)
    names = {"food": "Food", "yahoo_r3": "Yahoo! R3", "yelp2018": "Yelp2018"}
    cols = " | ".join(f"{names[ds]} R@20 | {names[ds]} N@20" for ds in DATASETS)
    head = f"| system | scores | {cols} |"
    lines = [head, "|---|---|" + "--:|--:|" * len(DATASETS)]
    for i, (label, adjusted, cells) in enumerate(rows):
        out = [label, "adjusted" if adjusted else "plain"]
        for ds in DATASETS:
            got = cells.get(ds)
            for m in METRICS:
                if not got or m not in got:
                    out.append("not run")
                    continue
                c = got[m]
                ranking = best[(ds, m)]
                rival = next(r for r in ranking if system_of(rows[r[1]][0]) != system_of(label))
                rc = rows[rival[1]][2][ds][m]  # type: ignore[index]
                p, test = compare(c, rc)
                mark = "**" if ranking[0][1] == i else ""
                ptxt = "" if math.isnan(p) else f" ({test} p {p:.2g})"
                ips = "†" if "IPS" in c.selection else ""
                seeds = "" if c.n >= SEEDS else f" [{c.n} seed{'s' if c.n > 1 else ''}]"
                out.append(f"{mark}{c.mean:.4f}{mark}{ips} ± {c.std:.4f}{seeds}{ptxt}")
                flat.append(
                    {
                        "system": label,
                        "scores": "adjusted" if adjusted else "plain",
                        "dataset": ds,
                        "metric": m,
                        "mean": c.mean,
                        "std": c.std,
                        "n": c.n,
                        "selection": c.selection,
                        "best": ranking[0][1] == i,
                        "rival": rows[rival[1]][0] + (" (adjusted)" if rows[rival[1]][1] else ""),
                        "p": p,
                        "test": test,
                    }
                )
        lines.append("| " + " | ".join(out) + " |")
    return lines, flat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results", help="the results directory")
    p.add_argument("--out", help="write OUT.md and OUT.csv")
    args = p.parse_args(argv)
    lines, flat = build(Path(args.results))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".md").write_text(text)
        with open(args.out + ".csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(flat[0]))
            w.writeheader()
            w.writerows(flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
