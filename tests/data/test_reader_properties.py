"""Property-based tests of the split readers: any bytes give a clean ``DataValidationError`` or a
load, never another exception; token lines load exactly as a plain reference reading of the
rules says (``oodrec.data.io``): the file's column count is the most common of 2 and 3, a good
line has that many fields and plain-digit ids up to ``MAX_ID``, repeats keep the first."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oodrec.data.io import MAX_ID, read_adjacency, read_interactions, read_pairs
from oodrec.errors import DataValidationError

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

TOKENS = st.one_of(
    st.integers(0, 40).map(str),
    st.sampled_from(
        ["0", "7", "2147483647", "2147483648", "99999999999", "-1", "-0", "+3", "004", "1_0",
         "x", "1.5", "nan", "\u0663", "\xff", "\t", "\r"]
    ),
)  # fmt: skip
LINES = st.lists(st.lists(TOKENS, min_size=0, max_size=4), min_size=0, max_size=25)


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "split.txt"
    path.write_bytes(data)
    return path


def _plain(token: bytes) -> bool:
    return token.isdigit() and (token == b"0" or not token.startswith(b"0"))


def _reference(data: bytes) -> tuple[list[tuple[int, int]], int | None] | None:
    """What ``read_interactions`` must do: ``(pairs kept, first bad line or None)``, with
    ``pairs`` empty when nothing is kept (an error), or None when the file as a whole is
    refused (empty, UTF-16, no line of 2 or 3 fields)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    fields = [line.split() for line in lines]
    usable = [len(f) for f in fields if len(f) in (2, 3)]
    if not usable:
        return None
    columns = Counter(usable).most_common(1)[0][0]
    pairs, first_bad = [], None
    for number, f in enumerate(fields, start=1):
        if len(f) == columns and all(_plain(t) and int(t) <= MAX_ID for t in f[:2]):
            pairs.append((int(f[0]), int(f[1])))
        elif first_bad is None:
            first_bad = number
    return list(dict.fromkeys(pairs)), first_bad


@SETTINGS
@given(data=st.binary(max_size=400))
def test_any_bytes_load_or_fail_cleanly(tmp_path, data):
    path = _write(tmp_path, data)
    for read in (
        lambda: read_interactions(path),
        lambda: read_interactions(path, "skip"),
        lambda: read_adjacency(path),
        lambda: read_adjacency(path, "skip"),
        lambda: read_pairs(path, "skip", timestamps=True),
    ):
        try:
            out = read()
        except DataValidationError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            continue
        users, items = out[0], out[1]
        assert users.dtype == items.dtype == np.int64 and users.shape == items.shape
        assert users.size > 0 and users.min() >= 0 and items.min() >= 0
        assert max(users.max(), items.max()) <= MAX_ID
        assert len(set(zip(users.tolist(), items.tolist()))) == users.size  # no repeats


@SETTINGS
@given(
    lines=LINES, newline=st.sampled_from(["\n", "\r\n"]), end=st.sampled_from(["", "\n", "\n\n"])
)
def test_token_lines_load_exactly_as_the_rules_say(tmp_path, lines, newline, end):
    data = (newline.join(" ".join(tokens) for tokens in lines) + end).encode()
    path = _write(tmp_path, data)
    want = _reference(data)
    if want is None or not want[0]:
        with pytest.raises(DataValidationError):
            read_interactions(path, "skip")
    else:
        users, items, report = read_interactions(path, "skip")
        assert list(zip(users.tolist(), items.tolist())) == want[0]
        assert report.kept == len(want[0])
    if want is None:
        return
    pairs, first_bad = want
    if first_bad is not None:
        with pytest.raises(DataValidationError) as err:
            read_interactions(path)
        assert f"{path}, line {first_bad}:" in str(err.value)
    elif pairs:
        users, items, _ = read_interactions(path)
        assert list(zip(users.tolist(), items.tolist())) == pairs
