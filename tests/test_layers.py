"""The package's layers only point down, and no modules import each other in a circle.

Every ``import`` of an ``oodrec`` module counts, at module level or inside a function (a lazy
import is still a dependency). The layers, bottom to top, are ``LAYERS`` below; a module may
import its own layer and the layers beneath it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "oodrec"

LAYERS: list[set[str]] = [
    {
        "_version",
        "errors",
        "ranges",
        "paths",
        "track",
        "registry",
        "seeding",
        "_threads",
        "device",
        "config",
    },
    {"data", "runs"},
    {"diffusion", "models"},
    {"eval", "samplers"},
    {"methods"},
    {"experiment"},
    {"train"},
    {"bench", "recommend"},
    {"api", "cli", "cli_bench", "cli_data", "cli_run", "__init__"},
]
"""Top-level modules and packages of ``oodrec``, by layer (the package's ``__init__``, which
re-exports the Python API, is at the top)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The ``oodrec`` modules ``path`` imports (``from oodrec.x import y`` names ``oodrec.x.y``
    when that is a module, else ``oodrec.x``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "oodrec")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "oodrec":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    top = _top(module)
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"{module}: top-level name {top!r} is in no layer of LAYERS; add it")


def _graph() -> dict[str, set[str]]:
    return {m: {t for t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_only_point_down():
    upward = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _graph().items()
        for t in sorted(targets)
        if _layer(t) > _layer(m)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


@pytest.mark.parametrize("low", ["methods", "models", "samplers", "eval", "data", "runs"])
def test_lower_layers_never_import_training_grids_or_the_cli(low):
    bad = [
        f"{m} imports {t}"
        for m, targets in _graph().items()
        if _top(m) == low
        for t in sorted(targets)
        if _top(t) in {"train", "bench", "cli", "cli_bench", "cli_data", "api", "__init__"}
    ]
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_the_check_finds_an_upward_import_and_a_circle():
    """The walker sees lazy imports and the cycle search finds a circle (so a pass means
    something)."""
    assert "oodrec.train.loop" in _imports(MODULES["oodrec.train.reload"]) or any(
        t.startswith("oodrec.methods") for t in _imports(MODULES["oodrec.train.reload"])
    )
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("oodrec.train.loop") > _layer("oodrec.methods.lightgcn")


def test_no_source_file_over_600_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, f"files over 600 lines: {long}"
