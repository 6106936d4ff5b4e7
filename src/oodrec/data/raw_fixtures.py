"""Files in raw release schemas, generated fast, for reader tests and benchmarks.

``kuairec_like`` builds a table with the columns and value formats of KuaiRec's
``big_matrix.csv`` (Gao et al., CIKM 2022): ``user_id, video_id, play_duration, video_duration,
time, date, timestamp, watch_ratio``, with ``time`` like ``2020-07-05 05:27:48.378``, ``date``
like ``20200705``, ``timestamp`` in Unix seconds with milliseconds and some rows without a
time. Everything is vectorised (12.5M rows, the size of the real big matrix, in a few seconds).
``write_kuairec_like`` writes it as CSV, optionally with chosen fields replaced by bad text, so
that tests can check that an error deep inside a large file is located exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

KUAIREC_COLUMNS = (
    "user_id", "video_id", "play_duration", "video_duration", "time", "date", "timestamp",
    "watch_ratio",
)  # fmt: skip
FIRST_DAY = np.datetime64("2020-07-05", "D")
NUM_DAYS = 64
DAY_MS = 86_400_000


def kuairec_like(
    num_rows: int,
    seed: int = 0,
    num_users: int = 7176,
    num_items: int = 10728,
    missing_time_rate: float = 0.001,
) -> pa.Table:
    """A table in the KuaiRec matrix schema (module docstring).

    Args:
        num_rows: rows to generate.
        seed: seed of every draw.
        num_users, num_items: id ranges (defaults: the big matrix's 7,176 users and 10,728
            videos).
        missing_time_rate: share of rows whose ``time``, ``date`` and ``timestamp`` are empty.

    Returns:
        The table; ``timestamp`` and ``watch_ratio`` are float64 (null where missing).
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, num_users, num_rows)
    items = rng.integers(0, num_items, num_rows)
    video = rng.integers(3_000, 60_000, num_rows)
    play = (video * rng.lognormal(0.0, 0.8, num_rows)).astype(np.int64)
    day = pa.array(rng.integers(0, NUM_DAYS, num_rows))
    ms_of_day = rng.integers(0, DAY_MS, num_rows)
    missing = pa.array(rng.random(num_rows) < missing_time_rate)
    # Text columns from small lookup tables (one take each) instead of per-row formatting.
    days = np.arange(FIRST_DAY, FIRST_DAY + NUM_DAYS)
    day_text = pa.array([f"{d} " for d in days])
    date_text = pa.array([str(d).replace("-", "") for d in days])
    clock = pa.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}." for s in range(86_400)])
    millis = pa.array([f"{m:03d}" for m in range(1000)])
    time_text = pc.binary_join_element_wise(
        day_text.take(day),
        clock.take(pa.array(ms_of_day // 1000)),
        millis.take(pa.array(ms_of_day % 1000)),
        "",
    )
    first_ms = FIRST_DAY.astype("datetime64[ms]").astype(np.int64)
    stamp = (first_ms + day.to_numpy() * DAY_MS + ms_of_day) / 1000.0
    null_text = pa.scalar(None, pa.string())
    return pa.table(
        {
            "user_id": users,
            "video_id": items,
            "play_duration": play,
            "video_duration": video,
            "time": pc.if_else(missing, null_text, time_text),
            "date": pc.if_else(missing, null_text, date_text.take(day)),
            "timestamp": pc.if_else(missing, pa.scalar(None, pa.float64()), pa.array(stamp)),
            "watch_ratio": play / video,
        }
    )


def _csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    pa_csv.write_csv(table, sink, options)
    return sink.getvalue().to_pybytes()


def write_kuairec_like(
    path: str | Path,
    table: pa.Table,
    corrupt: dict[int, tuple[str, str]] | None = None,
) -> Path:
    """Write ``table`` (from ``kuairec_like``) as a KuaiRec CSV file with a header row.

    Args:
        path: output file.
        table: the rows.
        corrupt: ``data row (1-based) -> (column, text)``: write ``text`` instead of the value.

    Returns:
        ``path``.
    """
    path = Path(path)
    position = {name: k for k, name in enumerate(table.column_names)}
    with open(path, "wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        done = 0
        for row, (column, text) in sorted((corrupt or {}).items()):
            if done < row - 1:
                pa_csv.write_csv(
                    table.slice(done, row - 1 - done),
                    fh,
                    pa_csv.WriteOptions(include_header=False, quoting_style="none"),
                )
            fields = _csv_bytes(table.slice(row - 1, 1)).decode().rstrip("\n").split(",")
            fields[position[column]] = text
            fh.write((",".join(fields) + "\n").encode())
            done = row
        if done < table.num_rows:
            rest = table.slice(done)
            pa_csv.write_csv(
                rest, fh, pa_csv.WriteOptions(include_header=False, quoting_style="none")
            )
    return path
