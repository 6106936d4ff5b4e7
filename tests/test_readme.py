"""The README's examples run as written (so they cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(marker: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- example: {marker} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README.md has no python block after <!-- example: {marker} -->"
    return match.group(1)


def test_the_readme_python_api_example_runs(tmp_path):
    code = _example("api")
    assert "oodrec.train(" in code and ".recommend(" in code
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert 0.0 <= float(lines[0]) <= 1.0
    assert "'user': 3" in lines[1] and "'rank': 1" in lines[1]
    assert (tmp_path / "runs" / "synthetic-rns-seed1" / "record.json").is_file()


def test_the_readme_stays_a_front_page():
    assert len(README.read_bytes()) <= 10_000
