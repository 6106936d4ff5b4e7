"""How long `oodrec --help` and `oodrec COMMAND --help` take (the parser is built from torch-free
modules, so help never waits for torch).

    python benchmarks/cli_startup.py --repeats 5

Prints the median wall time of each command over --repeats runs, each in a fresh process. Run
it on an idle machine.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = [
    [],
    ["train"],
    ["evaluate"],
    ["recommend"],
    ["export"],
    ["prepare"],
    ["stats"],
    ["bench"],
    ["tune"],
    ["report"],
    ["archive"],
    ["speed"],
    ["models"],
    ["samplers"],
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("oodrec")
    base = [exe] if exe else [sys.executable, "-m", "oodrec.cli"]
    worst = 0.0
    for cmd in COMMANDS:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([*base, *cmd, "--help"], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        worst = max(worst, med)
        label = " ".join(["oodrec", *cmd, "--help"])
        print(f"{label:<32} median {med:.3f} s  runs {[round(t, 3) for t in times]}")
    print(f"slowest median: {worst:.3f} s (target <= 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
