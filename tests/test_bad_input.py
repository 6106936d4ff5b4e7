"""A corpus of bad and unusual inputs (issue "Nothing silently wrong"): every row is one command
a new user might type, with the files it needs. Each must be refused with exit code 2, no
traceback, an error line naming the file, key or value at fault, and nothing written or
damaged: the workspace's files (names and SHA-256) are the same before and after.

Every row runs in this process through ``oodrec.cli.main`` (a subprocess costs 1-2 s of
interpreter and torch start-up, ~150 rows would take minutes on a 2-core machine); the rows
marked ``sub`` (one or more per command, the seven former tracebacks among them) also run as a
real ``python -m oodrec.cli`` process, so the console's exit code and stderr are checked as a
user sees them. An exception escaping ``main`` in-process is what a traceback would be: the
row fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from oodrec.cli import main

TRAIN = "0 0\n0 1\n1 1\n1 2\n2 0\n2 2\n3 3\n3 0\n"
VAL = "0 2\n1 0\n"
OOD = "2 1\n3 1\n"
GRID = """\
out_dir: {ws}/gridruns
base:
  train: {{epochs: 1, batch_size: 64, patience: 0}}
methods: [rns]
datasets: [{ws}/tiny]
seeds: [1]
"""
TUNE = "tune:\n  trials: 2\n  space:\n    train.lr: {{low: 0.001, high: 0.01, log: true}}\n"


def ds(name: str = "bad", train: str | bytes = TRAIN, **extra: str | bytes) -> dict:
    """Files of a dataset directory ``name`` with this train.txt (val and OOD test are fine)."""
    files = {f"{name}/train.txt": train, f"{name}/valid_iid.txt": VAL, f"{name}/test_ood.txt": OOD}
    files.update({f"{name}/{k.replace('__', '.')}": v for k, v in extra.items()})
    return files


@dataclass(frozen=True)
class Row:
    """One bad input: ``argv`` and ``files`` (contents may hold ``{ws}``, the workspace) and
    ``expect``, a part of the error line (``{ws}`` too). ``absent``: must not be printed."""

    id: str
    argv: tuple[str, ...]
    expect: str
    files: dict = field(default_factory=dict)
    sub: bool = False
    absent: str | None = None


def R(id: str, argv: str, expect: str, files: dict | None = None, **kw) -> Row:  # noqa: N802
    return Row(id, tuple(argv.split()), expect, files or {}, **kw)


T = "train --dataset {ws}/tiny --out {ws}/out --epochs 1"
RUN = "{ws}/runs/run"

ROWS = [
    # ------------------------------------------------------------ settings and their ranges
    R("l2-negative", f"{T} --set train.l2=-1", "train.l2 must be >= 0, got -1.0", sub=True),
    R("l2-inf", f"{T} --set train.l2=inf", "train.l2 must be a finite number >= 0, got inf"),
    R("l2-nan", f"{T} --set train.l2=nan", "train.l2 must be a finite number >= 0, got nan"),
    R("l2-text", f"{T} --set train.l2=small", "train.l2 must be a number, got 'small'"),
    R("lr-zero", f"{T} --set train.lr=0", "train.lr must be a finite number > 0, got 0.0"),
    R("lr-negative", f"{T} --lr -0.1", "train.lr must be a finite number > 0, got -0.1"),
    R("lr-nan", f"{T} --set train.lr=nan", "train.lr must be a finite number > 0, got nan"),
    R("lr-inf", f"{T} --set train.lr=inf", "train.lr must be a finite number > 0, got inf"),
    R("epochs-zero", f"{T} --set train.epochs=0", "train.epochs must be >= 1, got 0"),
    R("epochs-flag-zero", f"{T} --epochs 0", "train.epochs must be >= 1, got 0"),
    R("epochs-fraction", f"{T} --set train.epochs=1.5", "train.epochs must be an integer"),
    R("epochs-flag-text", f"{T} --epochs many", "argument --epochs: invalid int value: 'many'"),
    R("batch-zero", f"{T} --set train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    R("batch-negative", f"{T} --set train.batch_size=-64", "train.batch_size must be >= 1"),
    R("patience-negative", f"{T} --set train.patience=-1", "train.patience must be >= 0, got -1"),
    R("eval-every-zero", f"{T} --set train.eval_every=0", "train.eval_every must be >= 1, got 0"),
    R("threads-negative", f"{T} --set train.threads=-2", "train.threads must be 0"),
    R(
        "threads-text",
        f"{T} --set train.threads=many",
        "train.threads must be an integer or one of ['auto'], got 'many'",
    ),
    R("fhn-negative", f"{T} --set train.fhn_batches=-1", "train.fhn_batches must be >= 0, got -1"),
    R("select-on", f"{T} --set train.select_on=test", "train.select_on must be one of"),
    R("select-on-flag", f"{T} --select-on test", "argument --select-on: invalid choice: 'test'"),
    R("select-metric", f"{T} --set train.select_metric=hit@20", "'hit@20' is not computed"),
    R("select-metric-k", f"{T} --set train.select_metric=ndcg@50", "'ndcg@50' is not computed"),
    R("select-rule", f"{T} --set train.select_rule=best", "train.select_rule must be one of"),
    R(
        "all-four-ks",
        f"{T} --set train.select_rule=all_four --set eval.ks=[5] --set train.select_metric=ndcg@5",
        "needs 10 and 20",
    ),
    R("l2-form", f"{T} --set train.l2_form=cubic", "train.l2_form must be one of"),
    R("deterministic", f"{T} --set train.deterministic=maybe", "must be true or false"),
    R("sync-free", f"{T} --set train.sync_free=maybe", "train.sync_free must be true or false"),
    R("device", f"{T} --device gpu0", "is not a torch device"),
    R("unknown-key", f"{T} --set train.speed=1", "unknown config key 'train.speed'"),
    R("unknown-section", f"{T} --set optim.lr=1", "unknown config key 'optim.lr'"),
    R("no-equals", f"{T} --set train.lr", "override 'train.lr' must look like key=value"),
    R("sub-key-of-leaf", f"{T} --set seed.x=1", "config key 'seed' has no sub-keys"),
    R("ks-zero", f"{T} --set eval.ks=[0,20]", "eval.ks must be >= 1 (each value), got [0, 20]"),
    R("ks-empty", f"{T} --set eval.ks=[]", "eval.ks must be non-empty"),
    R("ks-text", f"{T} --set eval.ks=[ten]", "eval.ks must be an integer, got 'ten'"),
    R(
        "ks-above-items",
        f"{T} --set eval.ks=[500] --set train.select_metric=ndcg@500",
        "eval.ks=[500]: every K must be <= the number of items of dataset 'tiny' (30)",
        sub=True,
    ),
    R("ks-one-above", f"{T} --set eval.ks=[10,20,31]", "31 would rank every item"),
    R("user-batch", f"{T} --set eval.user_batch_size=0", "eval.user_batch_size must be >= 1"),
    R("ips-gamma", f"{T} --set eval.ips_gamma=-0.5", "eval.ips_gamma must be >= 0, got -0.5"),
    R("ips-clip", f"{T} --set eval.ips_clip=0.5", "eval.ips_clip must be >= 1, got 0.5"),
    R("strata", f"{T} --set eval.strata=0", "eval.strata must be >= 1, got 0"),
    R("protocol", f"{T} --set eval.protocol=sampled", "eval.protocol must be one of"),
    R(
        "protocol-candidates",
        f"{T} --set eval.protocol=candidates",
        "eval.protocol=candidates",
        absent="run directory:",
    ),
    R("emb-dim-zero", f"{T} --set model.emb_dim=0", "model.emb_dim must be >= 1, got 0"),
    R("emb-dim-text", f"{T} --set model.emb_dim=wide", "model.emb_dim must be an integer"),
    R("layers-negative", f"{T} --set model.num_layers=-1", "model.num_layers must be >= 0"),
    R("init", f"{T} --set model.init=zeros", "model.init must be one of"),
    R("model-unknown", f"{T} --model nosuch", "nosuch"),
    R("sampler-unknown", f"{T} --sampler nosuch", "nosuch"),
    R("sampler-option", f"{T} --set sampler.bogus=1", "bogus"),
    R("model-takes-no-sampler", f"{T} --model diffrec --sampler dns", "takes no negative sampler"),
    R(
        "sampler-weight",
        f"{T} --sampler cnsdiff --set sampler.cl_weight=-1",
        "sampler.cl_weight must be >= 0, got -1.0",
    ),
    R(
        "model-noise",
        f"{T} --model diffrec --set model.noise_scale=-1",
        "model.noise_scale must be >= 0, got -1.0",
    ),
    R("model-option-type", f"{T} --model diffrec --set model.steps=two", "model.steps must be an"),
    R("bad-lines-value", f"{T} --set data.on_bad_lines=ignore", "data.on_bad_lines must be one"),
    R(
        "split-seed",
        f"{T} --set data.split_seed=-1",
        "data.split_seed must be >= 0 and <= 2**63 - 1, got -1",
    ),
    R("seed-negative", f"{T} --seed -1", "seed must be >= 0", sub=True),
    R(
        "adjust-on-test",
        f"{T} --set eval.adjust_gammas=[1] --select-on ood_test",
        "eval.adjust_gammas=[1.0] chooses gamma on val by one metric",
    ),
    R("adjust-not-finite", f"{T} --set eval.adjust_gammas=[nan]", "must be finite numbers"),
    R("seed-set-negative", f"{T} --set seed=-5", "seed must be >= 0 and <= 2**63 - 1, got -5"),
    R("seed-huge", f"{T} --seed 99999999999999999999", "seed must be >= 0 and <="),
    R("seed-text", f"{T} --seed one", "argument --seed: invalid int value: 'one'"),
    R(
        "synthetic-option",
        "train --dataset synthetic --out {ws}/out --set data.synthetic.bogus=1",
        "bogus",
    ),
    R("sparse-flag-text", f"{T} --set data.allow_sparse_ids=maybe", "must be true or false"),
    R(
        "hdrm-no-backbone",
        f"{T} --model hdrm",
        "needs a trained stage-1 backbone",
        absent="run directory:",
    ),
    R(
        "hdrm-missing-backbone",
        f"{T} --model hdrm --set model.backbone_run={{ws}}/nope",
        "is not a run directory (no config.yaml)",
        absent="run directory:",
    ),
    R(
        "hdrm-wrong-backbone",
        f"{T} --model hdrm --set model.backbone_run={RUN}",
        "is a 'lightgcn' run",
        absent="run directory:",
    ),
    R("repeats", "speed --dataset {ws}/tiny --repeats 0", "--repeats must be >= 1, got 0"),
    # ------------------------------------------------------------ paths
    R("train-out-file", f"{T.replace('{ws}/out', '{ws}/afile')}", "afile: is a file", sub=True),
    R("train-out-below-file", f"{T.replace('{ws}/out', '{ws}/afile/x')}", "afile is a file"),
    R("name-escape", f"{T} --name ../../x", "name '../../x': a run name is one", sub=True),
    R("name-slash", f"{T} --name a/b", "name 'a/b': a run name is one directory name"),
    R("name-dotdot", f"{T} --name ..", "name '..': a run name is one directory name"),
    R("name-dot", f"{T} --name .", "name '.': a run name is one directory name"),
    R(
        "config-dir",
        "train --config {ws}/tiny",
        "config file {ws}/tiny is a directory; give a file",
        sub=True,
    ),
    R("config-missing", "train --config {ws}/nope.yaml", "config file {ws}/nope.yaml does not"),
    R(
        "config-yaml",
        "train --config {ws}/c.yaml",
        "config file {ws}/c.yaml, line 2, column 1: not valid YAML",
        {"c.yaml": "a: [1,\n"},
    ),
    R("config-list", "train --config {ws}/c.yaml", "config must be a mapping", {"c.yaml": "- 1\n"}),
    R(
        "config-unknown-key",
        "train --config {ws}/c.yaml",
        "{ws}/c.yaml: unknown config key(s) train.speed",
        {"c.yaml": "train:\n  speed: 3\n"},
    ),
    R(
        "config-l2",
        "train --config {ws}/c.yaml --dataset {ws}/tiny",
        "{ws}/c.yaml: train.l2 must be >= 0, got -1.0",
        {"c.yaml": "train:\n  l2: -1\n"},
    ),
    R(
        "config-name",
        "train --config {ws}/c.yaml --dataset {ws}/tiny",
        "{ws}/c.yaml: name '../x'",
        {"c.yaml": "name: ../x\n"},
    ),
    R(
        "config-utf8",
        "train --config {ws}/c.yaml",
        "config file {ws}/c.yaml is not UTF-8 text",
        {"c.yaml": b"train:\n  lr: 0.\xff1\n"},
    ),
    R("dataset-missing", "train --dataset {ws}/nope --out {ws}/out", "unknown dataset"),
    R("dataset-file", "train --dataset {ws}/afile --out {ws}/out", "unknown dataset"),
    R("dataset-empty-dir", "train --dataset {ws}/empty --out {ws}/out", "{ws}/empty"),
    R("run-exists", "train --dataset {ws}/tiny --out {ws}/runs --name run", "exists"),
    R(
        "overwrite-refused",
        "train --dataset {ws}/tiny --out {ws}/runs --name run --overwrite --model hdrm",
        "needs a trained stage-1 backbone",
        absent="removed",
    ),
    R(
        "overwrite-bad-data",
        "train --dataset {ws}/bad --out {ws}/runs --name run --overwrite",
        "line 9: malformed line",
        ds(train=TRAIN + "1 oops\n"),
    ),
    R("report-missing", "report {ws}/nope", "RUNS_DIR {ws}/nope: does not exist", sub=True),
    R("report-file", "report {ws}/afile", "RUNS_DIR {ws}/afile: is a file"),
    R("report-empty", "report {ws}/empty", "no finished run (record.json) below {ws}/empty"),
    R("report-out-file", "report {ws}/runs --out {ws}/afile", "--out {ws}/afile: is a", sub=True),
    R("report-reselect", "report {ws}/runs --out {ws}/rep --reselect hit@3", "hit@3"),
    R("archive-src-missing", "archive {ws}/nope {ws}/dest", "SRC {ws}/nope: does not exist"),
    R("archive-src-file", "archive {ws}/afile {ws}/dest", "SRC {ws}/afile: is a file"),
    R("archive-dest-file", "archive {ws}/runs {ws}/afile", "DEST {ws}/afile: is a", sub=True),
    R("archive-dest-inside", "archive {ws}/runs {ws}/runs/copy", "lies inside it"),
    R("archive-empty", "archive {ws}/empty {ws}/dest", "no run directory and no tune.db"),
    R(
        "bench-out-file",
        "bench {ws}/grid.yaml --out {ws}/afile",
        "--out {ws}/afile: is a",
        sub=True,
    ),
    R("bench-grid-dir", "bench {ws}/tiny", "grid file {ws}/tiny is a directory", sub=True),
    R("bench-grid-missing", "bench {ws}/nope.yaml", "grid file {ws}/nope.yaml does not exist"),
    R("bench-workers", "bench {ws}/grid.yaml --workers 0", "--workers must be >= 1 or 'auto'"),
    R("bench-cpus", "bench {ws}/grid.yaml --cpus-per-run 0", "--cpus-per-run must be >= 1"),
    R("bench-l2", "bench {ws}/grid.yaml --set train.l2=-1", "train.l2 must be >= 0, got -1.0"),
    R("bench-seeds", "bench {ws}/grid.yaml --seeds x", "seeds are integers, got 'x'"),
    R(
        "bench-grid-key",
        "bench {ws}/g.yaml",
        "{ws}/g.yaml",
        {"g.yaml": "methods: [rns]\ndatasets: [synthetic]\nseeds: [1]\nepochs: 3\n"},
    ),
    R(
        "bench-grid-out-file",
        "bench {ws}/g.yaml",
        "{ws}/g.yaml: out_dir {ws}/afile: is a file",
        {"g.yaml": "out_dir: {ws}/afile\nmethods: [rns]\ndatasets: [synthetic]\nseeds: [1]\n"},
    ),
    R(
        "tune-out-file",
        "tune {ws}/t.yaml --out {ws}/afile",
        "--out {ws}/afile: is a file",
        {"t.yaml": GRID + TUNE},
        sub=True,
    ),
    R("tune-no-section", "tune {ws}/grid.yaml --out {ws}/t", "{ws}/grid.yaml: no 'tune:'"),
    R(
        "tune-space",
        "tune {ws}/t.yaml",
        "train.lr",
        {"t.yaml": GRID + TUNE.replace("low: 0.001", "low: -1")},
    ),
    R("tune-trials", "tune {ws}/grid.yaml --trials 0", "--trials must be >= 1, got 0"),
    R("stats-missing", "stats {ws}/nope", "unknown dataset '{ws}/nope'"),
    # ------------------------------------------------------------ prepare
    R(
        "prepare-out-file",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/afile",
        "--out {ws}/afile: is a file",
        sub=True,
    ),
    R(
        "prepare-input-dir",
        "prepare {ws}/tiny --format csv --protocol popularity --out {ws}/p",
        "input {ws}/tiny: is a directory",
    ),
    R(
        "prepare-input-missing",
        "prepare {ws}/no.csv --format csv --protocol popularity --out {ws}/p",
        "input {ws}/no.csv: does not exist",
    ),
    R(
        "prepare-seed",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --seed -1",
        "prepare option seed must be >= 0 and <= 2**63 - 1, got -1",
    ),
    R(
        "prepare-min-user",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --min-user -1",
        "prepare option min_user_interactions must be >= 0",
    ),
    R(
        "prepare-ood-fraction",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --ood-fraction 2",
        "ood_fraction must be in [0, 1), got 2.0",
    ),
    R(
        "prepare-fractions",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --fractions 0.5,0.5",
        "got (0.5, 0.5)",
    ),
    R(
        "prepare-fractions-text",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --fractions a,b,c",
        "--fractions must be three numbers, got 'a,b,c'",
    ),
    R(
        "prepare-threshold",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --threshold high",
        "--threshold must be a number, 'auto' or 'none', got 'high'",
    ),
    R(
        "prepare-exponent-temporal",
        "prepare {ws}/raw.csv --format csv --protocol temporal --out {ws}/p --exponent 2",
        "--exponent does not apply to the temporal protocol",
    ),
    R(
        "prepare-exposure",
        "prepare {ws}/raw.csv --format csv --protocol exposure --out {ws}/p",
        "the exposure protocol needs an unbiased log",
    ),
    R(
        "prepare-columns",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/p --columns user=who",
        "who",
    ),
    R(
        "prepare-header",
        "prepare {ws}/h.csv --format csv --protocol popularity --out {ws}/p",
        "{ws}/h.csv: no column named like a user",
        {"h.csv": "a,b\n1,2\n"},
    ),
    R(
        "prepare-utf8",
        "prepare {ws}/u.csv --format csv --protocol popularity --out {ws}/p",
        "{ws}/u.csv, line 3: not UTF-8 text",
        {"u.csv": b"user,item\nu1,i1\nu\xff,i2\n"},
    ),
    R(
        "prepare-existing",
        "prepare {ws}/raw.csv --format csv --protocol popularity --out {ws}/tiny",
        "{ws}/tiny already holds train.txt",
    ),
    # ------------------------------------------------------------ split files
    R(
        "third-field",
        "train --dataset {ws}/bad --out {ws}/out",
        "{ws}/bad/train.txt, line 3: "
        "malformed line '0 0 good': it has 3 field(s), but the file's lines have 2",
        ds(train="0 1\n1 2\n0 0 good\n" + TRAIN),
        sub=True,
    ),
    R(
        "plus-and-zeros",
        "train --dataset {ws}/bad --out {ws}/out",
        "line 2: malformed line '+3 004': user id '+3' is not written in plain digits",
        ds(train="0 1\n+3 004\n" + TRAIN),
    ),
    R(
        "leading-zero",
        "train --dataset {ws}/bad --out {ws}/out",
        "item id '007' is not written in plain digits",
        ds(train=TRAIN + "1 007\n"),
    ),
    R(
        "underscore",
        "train --dataset {ws}/bad --out {ws}/out",
        "user id '1_0' is not written",
        ds(train=TRAIN + "1_0 1\n"),
    ),
    R(
        "non-utf8",
        "train --dataset {ws}/bad --out {ws}/out",
        "{ws}/bad/train.txt, line 9: not UTF-8 text (byte 0xff at column 3)",
        ds(train=TRAIN.encode() + b"1 \xff2\n"),
    ),
    R(
        "negative-id",
        "train --dataset {ws}/bad --out {ws}/out",
        "user id '-2' is not a non-negative integer",
        ds(train=TRAIN + "-2 1\n"),
    ),
    R(
        "text-id",
        "train --dataset {ws}/bad --out {ws}/out",
        "line 9: malformed line '1 oops': item id 'oops'",
        ds(train=TRAIN + "1 oops\n"),
    ),
    R(
        "one-field",
        "train --dataset {ws}/bad --out {ws}/out",
        "line 9: malformed line '7': it has 1 field(s)",
        ds(train=TRAIN + "7\n"),
    ),
    R(
        "blank-line",
        "train --dataset {ws}/bad --out {ws}/out",
        "line 3: blank line before the last interaction",
        ds(train="0 1\n1 2\n\n" + TRAIN),
    ),
    R(
        "huge-id",
        "train --dataset {ws}/bad --out {ws}/out",
        "line 9: user id 99999999999 is too large",
        ds(train=TRAIN + "99999999999 1\n"),
    ),
    R(
        "sparse-user",
        "train --dataset {ws}/bad --out {ws}/out",
        "{ws}/bad/train.txt, line 9: "
        "user id 5,000,000 lies far beyond the other user ids (the next largest is 3)",
        ds(train=TRAIN + "5000000 1\n"),
        sub=True,
    ),
    R(
        "sparse-item",
        "train --dataset {ws}/bad --out {ws}/out",
        "line 9: item id 10,000 lies far beyond the other item ids",
        ds(train=TRAIN + "2 10000\n"),
    ),
    R(
        "sparse-wide",
        "train --dataset {ws}/bad --out {ws}/out",
        "data.allow_sparse_ids=true",
        ds(train="".join(f"{3 * u} {u % 4}\n" for u in range(12000))),
    ),
    R(
        "utf16",
        "train --dataset {ws}/bad --out {ws}/out",
        "{ws}/bad/train.txt, line 1: the file is UTF-16 text",
        ds(train=TRAIN.encode("utf-16")),
    ),
    R(
        "empty-train",
        "train --dataset {ws}/bad --out {ws}/out",
        "{ws}/bad/train.txt: file is empty",
        ds(train=""),
    ),
    R(
        "blank-train",
        "train --dataset {ws}/bad --out {ws}/out",
        "file is empty",
        ds(train="\n \n\n"),
    ),
    R(
        "four-fields",
        "train --dataset {ws}/bad --out {ws}/out",
        "layout.txt",
        ds(train="0 1 2 3\n1 2\n" + TRAIN),
    ),
    R(
        "layout-unknown",
        "train --dataset {ws}/bad --out {ws}/out",
        "layout.txt",
        ds(layout__txt="columns\n"),
    ),
    R(
        "adjacency-bad",
        "train --dataset {ws}/bad --out {ws}/out",
        "item id 'x' is not a non-negative integer",
        ds(train="0 1 2\n1 x 3\n", layout__txt="adjacency\n"),
    ),
    R(
        "ood-all-unseen",
        "train --dataset {ws}/bad --out {ws}/out",
        "split ood_test",
        ds(test_ood__txt="9 9\n8 8\n"),
    ),
    R(
        "iid-without-val",
        "train --dataset {ws}/bad2 --out {ws}/out",
        "val is needed",
        {"bad2/train.txt": TRAIN, "bad2/test_iid.txt": VAL, "bad2/test_ood.txt": OOD},
    ),
    R(
        "no-train",
        "train --dataset {ws}/bad2 --out {ws}/out",
        "{ws}/bad2",
        {"bad2/test_ood.txt": OOD},
    ),
    R(
        "val-bad-line",
        "train --dataset {ws}/bad --out {ws}/out",
        "{ws}/bad/valid_iid.txt, line 2: malformed line",
        ds(valid_iid__txt="0 2\n1 a\n"),
    ),
    R(
        "timestamps-missing",
        "train --dataset {ws}/bad --out {ws}/out",
        "declares a third column",
        ds(
            prepare__json='{"split_format": {"columns": ["user", "item", "timestamp"], '
            '"timestamp_unit": "s"}}'
        ),
    ),
    R(
        "ips-exponent",
        "train --dataset {ws}/bad --out {ws}/out",
        'prepare.json: options.split.exponent must be a number >= 0, got "high"',
        ds(prepare__json='{"protocol": "popularity", "options": {"split": {"exponent": "high"}}}'),
    ),
    R(
        "timestamp-text",
        "train --dataset {ws}/bad --out {ws}/out",
        "timestamp 'noon' is not an integer",
        ds(
            train="0 0 1\n0 1 2\n1 1 3\n1 2 4\n2 0 5\n2 2 noon\n3 3 7\n3 0 8\n",
            valid_iid__txt="0 2 9\n1 0 9\n",
            test_ood__txt="2 1 9\n3 1 9\n",
            prepare__json='{"split_format": {"columns": ["user", "item", "timestamp"], '
            '"timestamp_unit": "s"}}',
        ),
    ),
    R(
        "candidates-bad",
        "train --dataset {ws}/bad --out {ws}/out --set eval.protocol=candidates",
        "{ws}/bad/test_ood_candidates.txt, line 1",
        ds(test_ood_candidates__txt="x y\n"),
    ),
    R(
        "stats-bad-line",
        "stats {ws}/bad",
        "{ws}/bad/train.txt, line 9: malformed line '1 oops'",
        ds(train=TRAIN + "1 oops\n"),
    ),
    # ------------------------------------------------------------ run directories
    R("resume-lr", f"train --resume {RUN} --set train.lr=0.5", "--resume cannot change train.lr"),
    R("resume-seed", f"train --resume {RUN} --seed 9", "--resume cannot change seed (1 -> 9)"),
    R("resume-seed-negative", f"train --resume {RUN} --seed -1", "seed must be >= 0"),
    R("resume-name", f"train --resume {RUN} --name other", "drop --name"),
    R("resume-out", f"train --resume {RUN} --out {{ws}}/x", "drop --out"),
    R("resume-epochs-zero", f"train --resume {RUN} --epochs 0", "train.epochs must be >= 1"),
    R("resume-missing", "train --resume {ws}/nope", "{ws}/nope is not a run directory"),
    R("resume-file", "train --resume {ws}/afile", "{ws}/afile is not a run directory"),
    R("resume-from-alone", f"{T} --resume-from prev", "--resume-from goes with --resume"),
    R("resume-from-choice", f"train --resume {RUN} --resume-from best", "invalid choice: 'best'"),
    R(
        "resume-damaged-last",
        f"train --resume {RUN} --epochs 4",
        f"checkpoint {RUN}/checkpoints/last.pt is unreadable",
        {"runs/run/checkpoints/last.pt": b"PK\x03\x04 cut short"},
        sub=True,
    ),
    R(
        "resume-no-prev",
        f"train --resume {RUN} --resume-from prev --epochs 4",
        "no previous checkpoint",
        {"runs/run/checkpoints/prev.pt": None},
    ),
    R(
        "resume-record",
        f"train --resume {RUN} --epochs 4",
        f"{RUN}/record.json is unreadable",
        {"runs/run/record.json": '{"best_epoch": '},
    ),
    R(
        "resume-config",
        f"train --resume {RUN}",
        "{ws}/runs/run/config.yaml: train.l2 must be",
        {"runs/run/config.yaml": "train:\n  l2: -1\n"},
    ),
    R("evaluate-missing", "evaluate {ws}/nope", "{ws}/nope is not a run directory"),
    R(
        "evaluate-best",
        f"evaluate {RUN}",
        f"checkpoint {RUN}/checkpoints/best.pt is unreadable",
        {"runs/run/checkpoints/best.pt": b"junk"},
    ),
    R("evaluate-device", f"evaluate {RUN} --device gpu0", "is not a torch device"),
    R("recommend-suffix", f"recommend {RUN} --out {{ws}}/r.txt", "r.txt"),
    R("recommend-k", f"recommend {RUN} --out {{ws}}/r.csv --k 0", "--k must be >= 1, got 0"),
    R("recommend-batch", f"recommend {RUN} --out {{ws}}/r.csv --batch-size 0", "--batch-size"),
    R("recommend-out-dir", f"recommend {RUN} --out {{ws}}/empty", "{ws}/empty"),
    R(
        "recommend-out-below-file",
        f"recommend {RUN} --out {{ws}}/afile/r.csv",
        "{ws}/afile is a file, not a folder",
    ),
    R("recommend-user", f"recommend {RUN} --out {{ws}}/r.csv --users 999", "999"),
    R("recommend-missing-run", "recommend {ws}/nope --out {ws}/r.csv", "{ws}/nope"),
    R("export-out-file", f"export {RUN} --out {{ws}}/afile", "--out {ws}/afile: is a file"),
    R("export-missing-run", "export {ws}/nope --out {ws}/e", "{ws}/nope"),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(root: Path) -> dict[str, str]:
    """Every file (its SHA-256) and directory below ``root``."""
    out = {}
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root)
        out.update({str(rel / d) + "/": "dir" for d in dirs})
        out.update({str(rel / f): _sha(Path(here) / f) for f in files})
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A workspace: a tiny dataset (20 users x 30 items), a finished 1-epoch run of it in
    runs/run, a file, an empty directory, a grid file and a raw CSV log."""
    ws = tmp_path_factory.mktemp("base")
    rng = np.random.default_rng(0)
    lines = {"train": [], "valid_iid": [], "test_iid": [], "test_ood": []}
    for u in range(20):
        items = rng.permutation([i for i in range(30) if i % 2 == u % 2])
        lines["train"] += [f"{u} {i}" for i in items[:9]]
        lines["valid_iid"].append(f"{u} {items[9]}")
        lines["test_iid"].append(f"{u} {items[10]}")
        lines["test_ood"].append(f"{u} {items[11]}")
    lines["train"] += [f"{i % 2} {i}" for i in range(30)]  # every item in train
    tiny = ws / "tiny"
    tiny.mkdir()
    for name, rows in lines.items():
        (tiny / f"{name}.txt").write_text("\n".join(dict.fromkeys(rows)) + "\n")
    args = ["-q", "train", "--dataset", str(tiny), "--out", str(ws / "runs"), "--name", "run"]
    assert main([*args, "--epochs", "1", "--seed", "1", "--set", "train.batch_size=64"]) == 0
    (ws / "afile").write_text("a file, not a directory\n")
    (ws / "empty").mkdir()
    (ws / "grid.yaml").write_text(GRID.format(ws=ws))
    raw = ["user,item,rating"] + [
        f"u{u},i{(u * 7 + k) % 40},5" for u in range(60) for k in range(12)
    ]
    (ws / "raw.csv").write_text("\n".join(raw) + "\n")
    return ws


def _workspace(base: Path, tmp_path: Path, row: Row) -> Path:
    """A copy of the base workspace with the row's files written (paths relative to it; a
    value of None removes the file). ``{ws}`` in the base's grid is the copy."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws, symlinks=True)
    (ws / "grid.yaml").write_text(GRID.format(ws=ws))
    for rel, content in row.files.items():
        path = ws / rel
        if content is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.format(ws=ws) if "{ws}" in content else content
            content = content.encode()
        path.write_bytes(content)
    return ws


def _argv(row: Row, ws: Path) -> list[str]:
    return [a.format(ws=ws) for a in row.argv]


def _check(row: Row, ws: Path, rc: int, err: str, before: dict[str, str]) -> None:
    expect = row.expect.format(ws=ws)
    assert rc == 2, f"exit code {rc}; stderr:\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert errors, f"no error line:\n{err}"
    assert any(expect in line for line in errors), f"{expect!r} not in:\n{err}"
    if row.absent:
        assert row.absent not in err, err
    after = snapshot(ws)
    assert after == before, {
        k for k in after.keys() | before.keys() if after.get(k) != before.get(k)
    }


def test_the_corpus_holds_at_least_100_inputs():
    assert len(ROWS) >= 100
    assert len({r.id for r in ROWS}) == len(ROWS)
    assert sum(r.sub for r in ROWS) >= 10


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_refused_cleanly_and_changes_nothing(row, base, tmp_path, capsys):
    ws = _workspace(base, tmp_path, row)
    before = snapshot(ws)
    capsys.readouterr()
    try:
        rc = main(["-q", *_argv(row, ws)])
    except SystemExit as exc:  # argparse: usage and a one-line error, exit code 2
        rc = exc.code
    _check(row, ws, rc, capsys.readouterr().err, before)


SUB_ROWS = [r for r in ROWS if r.sub]


@pytest.mark.parametrize("row", SUB_ROWS, ids=[r.id for r in SUB_ROWS])
def test_bad_input_in_a_real_process(row, base, tmp_path):
    ws = _workspace(base, tmp_path, row)
    before = snapshot(ws)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "oodrec.cli", "-q", *_argv(row, ws)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    _check(row, ws, proc.returncode, proc.stderr, before)
