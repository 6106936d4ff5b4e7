"""Seconds per epoch when another process competes for the cores, for each thread setting.

Runs ``oodrec speed`` in a fresh subprocess for every (sampler, setting, load) and prints the
median seconds per epoch and per evaluation. Loads: ``idle`` and ``busy`` (one competing
process spinning ``while True: pass`` for the whole measurement). Settings:

* ``default``: what ``oodrec`` does by itself (spinning OpenMP threads when the machine is idle
  at start, ``OMP_WAIT_POLICY=PASSIVE`` when another process is busy; torch's threads);
* ``threads=1``: ``--set train.threads=1``;
* ``threads=auto``: ``--set train.threads=auto`` (cores minus the load average);
* ``spin``: ``OMP_WAIT_POLICY=ACTIVE`` (spinning OpenMP threads, the behaviour before the
  default changed);
* ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at once at every barrier);
* ``spincount=N``: ``GOMP_SPINCOUNT=N`` (a bounded spin: a waiting thread spins N iterations,
  then sleeps).

With ``--reference PATH`` (``../shared/bench/ref_lgcn.py``) the plain reference LightGCN epoch
is timed under each load too (in its own environment, spinning OpenMP), and every row gains its
ratio to the reference under the same load, and to its own idle time.

Inherited ``OMP_WAIT_POLICY`` / ``OMP_NUM_THREADS`` / ``GOMP_SPINCOUNT`` are removed so that every
setting is measured as named. Run it on an otherwise idle machine.

Usage::

    OODREC_DATA=../shared/data python benchmarks/contention.py --dataset food --repeats 3
    python benchmarks/contention.py --dataset synthetic --repeats 1 --samplers rns \\
        --settings default --loads idle                           # a smoke check
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

SETTINGS = {
    "default": ([], {}),
    "threads=1": (["--set", "train.threads=1"], {}),
    "threads=auto": (["--set", "train.threads=auto"], {}),
    "spin": ([], {"OMP_WAIT_POLICY": "ACTIVE"}),
    "passive": ([], {"OMP_WAIT_POLICY": "PASSIVE"}),
}
INHERITED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")


def setting_of(name: str) -> tuple[list[str], dict[str, str]]:
    """CLI arguments and environment of a setting name (``SETTINGS`` or ``spincount=N``)."""
    if name.startswith("spincount="):
        return [], {"GOMP_SPINCOUNT": name.split("=", 1)[1]}
    return SETTINGS[name]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED}
    env.update(extra)
    return env


def busy_while(cmd: list[str], load: str, env: dict[str, str], timeout: int):
    """Run ``cmd`` under ``load`` (``busy``: one spinning competitor); its CompletedProcess."""
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
    try:
        if busy is not None:
            time.sleep(1.0)  # let the competitor take its core
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def reference(load: str, args: argparse.Namespace) -> float:
    """Median seconds per epoch of the plain reference script under ``load``."""
    data_dir = args.data_dir or os.environ.get("OODREC_DATA", "")
    cmd = [sys.executable, args.reference, data_dir, args.dataset, str(args.repeats)]
    out = busy_while(cmd, load, clean_env({}), args.timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


LOADS = ("idle", "busy")
BUSY = "while True: pass"


def _median(label: str, text: str) -> float | None:
    m = re.search(rf"{label} seconds.*?: median ([0-9.]+)", text)
    return float(m.group(1)) if m else None


def measure(sampler: str, setting: str, load: str, args: argparse.Namespace) -> dict:
    """One ``oodrec speed`` run; returns its medians and the thread line it printed."""
    extra, env_extra = setting_of(setting)
    cmd = [sys.executable, "-m", "oodrec.cli", "-q", "speed", "--dataset", args.dataset]
    cmd += ["--sampler", sampler, "--repeats", str(args.repeats), *extra]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    out = busy_while(cmd, load, clean_env(env_extra), args.timeout)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    threads = next((ln for ln in out.stdout.splitlines() if ln.startswith("threads=")), "")
    return {
        "epoch": _median("epoch", out.stdout),
        "eval": _median("eval", out.stdout),
        "threads": threads.split()[0].split("=")[1] if threads else "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="food")
    parser.add_argument("--data-dir")
    parser.add_argument("--samplers", nargs="+", default=["cnsdiff", "rns"])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTINGS),
        help=f"of {', '.join(SETTINGS)} and spincount=N (default: all but spincount)",
    )
    parser.add_argument("--reference", help="path of ref_lgcn.py: time it too, print ratios")
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per run (median)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per speed run")
    args = parser.parse_args()
    for name in args.settings:
        if name not in SETTINGS and not re.fullmatch(r"spincount=[0-9]+", name):
            parser.error(
                f"--settings: unknown {name!r} (one of {', '.join(SETTINGS)}, spincount=N)"
            )

    refs = {load: reference(load, args) for load in args.loads} if args.reference else {}
    for load, sec in refs.items():
        print(f"# reference {load}: {sec:.3f} s/epoch", file=sys.stderr, flush=True)
    rows = []
    for sampler in args.samplers:
        for setting in args.settings:
            for load in args.loads:
                res = measure(sampler, setting, load, args)
                rows.append((sampler, setting, load, res))
                print(f"# {sampler} {setting} {load}: {res}", file=sys.stderr, flush=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"dataset={args.dataset} repeats={args.repeats} cores={cores}")
    if refs:
        shown = ", ".join(f"{load} {sec:.3f}" for load, sec in refs.items())
        print(f"reference ({args.reference}) s/epoch: {shown}")
    print(
        "| sampler | setting | load | threads | s/epoch (median) | s/eval (median) "
        "| / reference, same load | / own idle |"
    )
    print("|---|---|---|--:|--:|--:|--:|--:|")
    idle = {(s, st): r["epoch"] for s, st, ld, r in rows if ld == "idle"}
    for sampler, setting, load, res in rows:
        epoch = "–" if res["epoch"] is None else f"{res['epoch']:.3f}"
        ev = "–" if res["eval"] is None else f"{res['eval']:.3f}"
        ref = refs.get(load)
        vs_ref = f"{res['epoch'] / ref:.2f}x" if ref and res["epoch"] else "–"
        own = idle.get((sampler, setting))
        vs_idle = f"{res['epoch'] / own:.2f}x" if own and res["epoch"] else "–"
        print(
            f"| {sampler} | {setting} | {load} | {res['threads']} | {epoch} | {ev} "
            f"| {vs_ref} | {vs_idle} |"
        )


if __name__ == "__main__":
    main()
