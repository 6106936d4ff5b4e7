"""How HDRM's stage 2 (``hdrm``) gets its backbone: the best checkpoint of a finished stage-1
(``hdrm_backbone``) run, checked against the data stage 2 trains on.

A stage-1 run is refused (ConfigError naming both runs' data) when its record's dataset name,
user / item counts, training-pair count or training-pair fingerprint (stage 1 writes
``train_fingerprint`` into its resolved options) differ from this run's; when it is not an
``hdrm_backbone`` run or has not finished; or when its ``model.emb_dim`` / ``model.num_layers``
differ from this run's (stage 2 implies them from the stage-1 config, so only an explicit
``--set`` can make them differ).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from oodrec.config import ExperimentConfig
from oodrec.errors import ConfigError, OodrecError
from oodrec.methods.base import MethodContext, TrainData
from oodrec.methods.hdrm_backbone import (
    HDRMBackbone,
    HDRMBackboneOptions,
    build_backbone,
    train_fingerprint,
)
from oodrec.models.hdrm import HyperbolicLightGCN
from oodrec.runs import RunDir, load_checkpoint, load_method_state

STAGE1 = "hdrm_backbone"
"""The registered name of HDRM's stage 1."""


def stage1_commands(cfg: ExperimentConfig) -> str:
    """The two commands that train stage 1 and then stage 2 for ``cfg``'s dataset and seed."""
    stage1 = replace(cfg, model=replace(cfg.model, name=STAGE1, options={}), name=None)
    out = "" if cfg.out_dir == "runs" else f" --out {cfg.out_dir}"
    run = Path(cfg.out_dir) / stage1.run_name()
    base = f"oodrec train --dataset {cfg.data.dataset} --seed {cfg.seed}{out}"
    return f"`{base} --model {STAGE1}`, then `{base} --model hdrm --set model.backbone_run={run}`"


def backbone_overrides(run: Any) -> dict[str, Any]:
    """``model.emb_dim`` and ``model.num_layers`` of the stage-1 run ``run`` (its config.yaml),
    or nothing when there is no readable run (building the method then says why)."""
    if not run or not isinstance(run, (str, Path)):
        return {}
    try:
        cfg = RunDir(run).load_config()
    except OodrecError:
        return {}
    return {"model.emb_dim": cfg.model.emb_dim, "model.num_layers": cfg.model.num_layers}


def data_identity(data: TrainData) -> dict[str, Any]:
    """What identifies the training data: name, sizes, pair count and fingerprint."""
    return {
        "dataset": data.name,
        "num_users": data.num_users,
        "num_items": data.num_items,
        "train_pairs": int(data.users.numel()),
        "train_fingerprint": train_fingerprint(data),
    }


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The same fields from a run record (None where the record lacks one)."""
    rep = record.get("data_report") or {}
    return {
        "dataset": record.get("dataset"),
        "num_users": rep.get("num_users"),
        "num_items": rep.get("num_items"),
        "train_pairs": (rep.get("sizes") or {}).get("train"),
        "train_fingerprint": (record.get("resolved_options") or {}).get("train_fingerprint"),
    }


def check_backbone_run(run: str, data: TrainData, cfg: ExperimentConfig) -> dict[str, Any]:
    """Read and check the stage-1 run ``run`` for a stage-2 run on ``data`` with ``cfg``.

    Returns:
        The stage-1 record.

    Raises:
        ConfigError: no such run, not finished, not ``hdrm_backbone``, other data, or another
            backbone shape; the message names the stage-1 run and both datasets.
    """
    rd = RunDir(Path(run).expanduser())
    where = f"model.backbone_run={run} ({rd.path.resolve()})"
    if not rd.config_path.is_file():
        raise ConfigError(
            f"{where} is not a run directory (no config.yaml); train stage 1 first: "
            f"{stage1_commands(cfg)}"
        )
    if not rd.is_finished():
        raise ConfigError(
            f"{where} has not finished (no record.json); finish it with "
            f"`oodrec train --resume {rd.path}`"
        )
    try:
        record = rd.read_record()
    except OodrecError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if record.get("model") != STAGE1:
        raise ConfigError(
            f"{where} is a {record.get('model')!r} run; HDRM's stage 2 needs a {STAGE1!r} run: "
            f"{stage1_commands(cfg)}"
        )
    theirs, ours = record_identity(record), data_identity(data)
    diffs = [
        f"{key} {theirs[key]!r} (stage 1) vs {ours[key]!r} (this run)"
        for key in ours
        if theirs[key] is not None and theirs[key] != ours[key]
    ]
    if diffs:
        raise ConfigError(
            f"{where} was trained on other data: stage-1 dataset {theirs['dataset']!r}, this "
            f"run's {ours['dataset']!r}; {'; '.join(diffs)}. Train stage 1 on this data first: "
            f"{stage1_commands(cfg)}"
        )
    model = (record.get("config") or {}).get("model") or {}
    for key in ("emb_dim", "num_layers"):
        if key in model and model[key] != getattr(cfg.model, key):
            raise ConfigError(
                f"model.{key}={getattr(cfg.model, key)} but the stage-1 backbone {where} has "
                f"{key}={model[key]}; drop the setting (stage 2 takes the stage-1 value) or "
                f"set model.{key}={model[key]}"
            )
    return record


def config_fingerprint(config: dict[str, Any]) -> str:
    """A short hash of a resolved config (as in record.json)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_stage1(run: str, ctx: MethodContext) -> tuple[HDRMBackbone, int]:
    """The stage-1 method of run ``rd`` with its best checkpoint, and that checkpoint's epoch.

    It is rebuilt on ``ctx.data``, which ``check_backbone_run`` found to be the data the run was
    trained on (same sizes and training-pair fingerprint), on ``ctx.device``.
    """
    rd = RunDir(Path(run).expanduser())
    try:
        s_cfg = rd.load_config()
        s_cfg = replace(s_cfg, train=replace(s_cfg.train, device=str(ctx.device)))
        s_ctx = MethodContext(data=ctx.data, cfg=s_cfg, device=ctx.device)
        source = HDRMBackbone.from_context(s_ctx)
        state = load_checkpoint(rd.best_ckpt, ctx.device)
        load_method_state(source, state, rd.best_ckpt)
    except OodrecError as exc:
        raise ConfigError(f"model.backbone_run={run}: {exc}") from None
    source.to(ctx.device).eval()
    return source, int(state.get("epoch", state.get("next_epoch", 0) - 1))


def load_backbone(ctx: MethodContext, opts: Any) -> tuple[HyperbolicLightGCN, dict[str, Any]]:
    """The stage-2 backbone and a summary of where it came from (for ``describe``).

    With ``opts.backbone_run``: the stage-1 run's best checkpoint, after ``check_backbone_run``.
    Without: a randomly initialised backbone (stage-1 default options) if
    ``opts.allow_untrained_backbone``, else ConfigError with the commands to run.
    """
    cfg = ctx.cfg
    if opts.backbone_run is None:
        if not opts.allow_untrained_backbone:
            raise ConfigError(
                f"model 'hdrm' (HDRM stage 2) needs a trained stage-1 backbone "
                f"(model.backbone_run); train it first: {stage1_commands(cfg)}"
            )
        d = HDRMBackboneOptions()
        info = {"run": None, "untrained": True, "c": d.c, "init_scale": d.init_scale}
        return build_backbone(ctx, d.c, d.init_scale), info
    record = check_backbone_run(opts.backbone_run, ctx.data, cfg)
    path = Path(opts.backbone_run).expanduser()
    source, epoch = _load_stage1(opts.backbone_run, ctx)
    s_opts = source.options
    backbone = build_backbone(ctx, s_opts.c, s_opts.init_scale)
    backbone.load_state_dict(source.backbone.state_dict())
    info = {
        "run": str(opts.backbone_run),
        "path": str(path.resolve()),
        "untrained": False,
        "best_epoch": epoch,
        "config_fingerprint": config_fingerprint(record.get("config") or {}),
        "c": s_opts.c,
        "init_scale": s_opts.init_scale,
        **record_identity(record),
    }
    return backbone, info


__all__ = [
    "STAGE1",
    "backbone_overrides",
    "check_backbone_run",
    "config_fingerprint",
    "data_identity",
    "load_backbone",
    "record_identity",
    "stage1_commands",
]
