"""`oodrec --help` and every `oodrec COMMAND --help` load no heavy library (torch, numpy,
pyarrow, ...): the parser is built from light modules, and each command imports what it needs
when it runs. (The time it takes is measured by benchmarks/cli_startup.py, not here.)"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "pyarrow", "scipy", "optuna", "ray", "mlflow", "tensorboard", "yaml")

PROBE = """
import json, sys
from oodrec.cli import build_parser
parser = build_parser()
commands = [None] + sorted(parser._subparsers._group_actions[0].choices)
for cmd in commands:
    try:
        parser.parse_args(([cmd] if cmd else []) + ["--help"])
    except SystemExit:
        pass
print(json.dumps({"commands": commands, "loaded": sorted(m for m in %r if m in sys.modules)}))
"""


def test_help_of_every_command_loads_no_heavy_library():
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)], capture_output=True, text=True, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"train", "recommend", "prepare", "tune"} <= set(out["commands"][1:])
    assert out["loaded"] == []


def test_prepare_infers_the_format_from_the_file_name():
    from oodrec.data.formats import RAW_FORMAT_DESCRIPTIONS, SPLIT_PROTOCOL_NAMES, infer_format
    from oodrec.data.prepare import RAW_FORMATS
    from oodrec.data.splits import SPLITS_PROTOCOLS

    assert set(RAW_FORMAT_DESCRIPTIONS) == set(RAW_FORMATS)
    assert set(SPLIT_PROTOCOL_NAMES) == set(SPLITS_PROTOCOLS)
    assert infer_format(["a/clicks.csv", "b.csv"]) == ("csv", "csv (from the suffix .csv)")
    assert infer_format(["x/RAW_interactions.csv"])[0] == "foodcom"
    assert infer_format(["big_matrix.csv"])[0] == "kuairec"
    assert infer_format(["log.parquet"])[0] == "parquet"
    fmt, why = infer_format(["a.csv", "b.tsv"])
    assert fmt is None and "different formats" in why
    fmt, why = infer_format(["reviews.json"])
    assert fmt is None and "reviews.json" in why
