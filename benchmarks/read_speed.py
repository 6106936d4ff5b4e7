"""Seconds to read a KuaiRec-schema CSV file with ``oodrec.data.raw.read_kuairec``.

Generates a file in the schema of KuaiRec's ``big_matrix.csv`` (``oodrec.data.raw_fixtures``;
12.5M rows, about 1.1 GB, by default: the size of the real big matrix) in a temporary directory,
reads it ``--repeats`` times and prints the median (the first read also warms the page cache, as
every later read of a real file would find it). Target: <= 10 s for 12.5M rows on 2 cores.

Usage::

    python benchmarks/read_speed.py                   # 12.5M rows, median of 3
    python benchmarks/read_speed.py --rows 1000000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from oodrec.data.raw import read_kuairec
from oodrec.data.raw_fixtures import kuairec_like, write_kuairec_like


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12_500_000, help="rows (default 12.5M)")
    parser.add_argument("--repeats", type=int, default=3, help="timed reads (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="where to write the file (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.dir:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big_matrix.csv"
        t0 = time.perf_counter()
        write_kuairec_like(path, kuairec_like(args.rows, seed=args.seed))
        made = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size_mb:,.0f} MB) in {made:.1f} s")
        seconds = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            log = read_kuairec(path)
            seconds.append(time.perf_counter() - t0)
            assert len(log) == args.rows
            del log
    med = statistics.median(seconds)
    print(
        f"read_kuairec: median {med:.2f} s over {args.repeats} reads "
        f"({args.rows / med / 1e6:.2f} M rows/s, {size_mb / med:,.0f} MB/s); "
        f"runs {[round(s, 2) for s in seconds]}; cores {os.cpu_count()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
