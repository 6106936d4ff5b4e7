"""How long `oodrec recommend --users all --k 20` takes next to one evaluation of the same run,
and the peak memory of the process that writes the lists.

    python benchmarks/recommend_speed.py --dataset yelp2018 --repeats 3

Without --run it first trains LightGCN + RNS for one epoch into a temporary directory (the
timings do not depend on how well the run is trained). Each repeat runs in a fresh process: it
loads the run, times one evaluation (val + IID test + OOD test, as `oodrec speed`'s eval figure),
times `recommend` over every user into a CSV file, and reports its peak resident memory
(ru_maxrss, the whole process: data, model and lists). Medians are printed; run it on an idle
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from oodrec.recommend import recommend
from oodrec.train.reload import load_run
run = load_run(sys.argv[1])
t0 = time.perf_counter(); run.evaluate(); t_eval = time.perf_counter() - t0
t0 = time.perf_counter()
summary, _ = recommend(run, sys.argv[2], k=int(sys.argv[3]))
t_rec = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
print(json.dumps({"eval_s": t_eval, "recommend_s": t_rec, "peak_mib": peak,
                  "rows": summary.rows, "users": summary.written}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="yelp2018")
    ap.add_argument("--run", help="an existing run directory (default: train one epoch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = str(Path(tmp) / "runs" / "bench")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "oodrec.cli",
                    "-q",
                    "train",
                    "--dataset",
                    args.dataset,
                    "--sampler",
                    "rns",
                    "--epochs",
                    "1",
                    "--seed",
                    "1",
                    "--out",
                    str(Path(tmp) / "runs"),
                    "--name",
                    "bench",
                    "--set",
                    "train.fhn_batches=0",
                    "--on-bad-lines",
                    "skip",
                ],
                check=True,
            )
        rows = []
        for _ in range(args.repeats):
            out = str(Path(tmp) / "recs.csv")
            done = subprocess.run(
                [sys.executable, "-c", CHILD, run, out, str(args.k)],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("eval_s", "recommend_s", "peak_mib")}
    print(
        f"dataset={args.dataset} k={args.k} users={rows[0]['users']} rows={rows[0]['rows']} "
        f"repeats={args.repeats}"
    )
    print(
        f"median evaluation (val+iid_test+ood_test) {med['eval_s']:.2f} s; median recommend "
        f"--users all {med['recommend_s']:.2f} s ({med['recommend_s'] / med['eval_s']:.2f}x); "
        f"median peak RSS {med['peak_mib']:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
