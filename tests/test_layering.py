"""The package's import graph flows one way (data → models → detectors → metrics → runner → cli): no cycles,
detectors never import train/ or runner/, and the runner names no detector class."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import oodbench.detectors as detectors
from oodbench.paths import REPO_ROOT

PKG = REPO_ROOT / "oodbench"


def _module(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every oodbench module ``path`` imports, at any depth of the file (lazy imports included)."""
    me, out = _module(path), set()
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("oodbench")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("oodbench"):
                out.add(base)
                out |= {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            out.add("__import__")
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} | ({"__import__"} & _imports(p))
            for m, p in files.items()}


def test_no_import_cycles_and_no_hidden_imports():
    graph = _graph()
    assert not [m for m, deps in graph.items() if "__import__" in deps]
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph[m]:
            if d not in graph:  # a package __init__ re-export resolves to a module we also walk
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d] if d in stack else [m, d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package's __init__ importing its own submodules is not a cycle of the layers
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not real, real


LAYERS = ("data", "models", "detectors", "metrics", "store", "runner", "train", "tables", "api", "cli")
# what each layer must never import (data flows one way: data → models → detectors → metrics → store → runner →
# tables / train → api → cli; `tables` reads results through `store` and statistics from `metrics` only)
BANNED = {
    "data": LAYERS[1:],
    "models": LAYERS[2:],
    "detectors": LAYERS[3:],
    "metrics": LAYERS[4:],
    "store": LAYERS[5:],
    "runner": ("train", "tables", "api", "cli"),
    "train": ("tables", "api", "cli"),
    "tables": ("models", "detectors", "runner", "train", "api", "cli"),
    "api": ("cli", "train"),
}


def test_lower_layers_never_import_upper_ones():
    for layer, banned in BANNED.items():
        files = [PKG / f"{layer}.py"] if (PKG / f"{layer}.py").is_file() else (PKG / layer).rglob("*.py")
        for path in files:
            bad = [i for i in _imports(path) if any(i == f"oodbench.{b}" or i.startswith(f"oodbench.{b}.")
                                                    for b in banned)]
            assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad}"


def test_nothing_imports_the_command_line():
    """``cli`` is the top: only the entry points (``__main__``, ``run.py``) import it."""
    users = [m for m, p in {_module(p): p for p in PKG.rglob("*.py")}.items()
             if m not in ("oodbench.cli", "oodbench.__main__") and "oodbench.cli" in _imports(p)]
    assert not users, users


def test_runner_names_no_detector_class():
    names = {n for n, obj in vars(detectors).items() if inspect.isclass(obj)} - {
        "Detector", "FeatureDetector", "LogitDetector", "ModelDetector", "FitData", "PerSetData"}
    for path in (PKG / "runner").rglob("*.py"):
        used = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name | ast.Attribute):
                used.add(node.id if isinstance(node, ast.Name) else node.attr)
            used |= {a.name for a in node.names} if isinstance(node, ast.ImportFrom) else set()
        assert not used & names, f"{path.relative_to(REPO_ROOT)} names {sorted(used & names)}"
