"""The layering of docs/architecture.md, checked on every import statement of the package (lazy ones included):
each top-level module or package has a rank, every import points to a lower rank or stays inside its own package,
and no modules import each other in a circle. No exceptions are listed here; a module missing from RANKS fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "taskspec"
# lowest first; equal ranks may not import each other (docs/architecture.md, "Layers")
RANKS = {
    "errors": 0, "io_utils": 0, "demo_prompts": 0,  # base: importable anywhere, import nothing of taskspec
    "kernels": 1,
    "models": 2,
    "engine": 3,
    "data": 4, "drafters": 4,
    "tasks": 5,
    "collect": 6,
    "train": 7, "bench": 7,
    "pipeline_config": 8, "demo": 8,
    "pipeline": 9,
    "cli_commands": 10,
    "cli": 11,
    "": 12,  # taskspec/__init__.py: the public API (imported lazily, by name)
}
PURE_MODULES = ("verify.py", "tree.py", "sampling.py", "drafter.py")  # engine/ files of pure tensor code
MODEL_CODE = ("transformers", "models", "drafters", "accelerate", "peft")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """The absolute module names the file's import statements import (relative imports resolved): for `from P import
    n`, P.n when that is a module of the package (`from . import build`), else P (`from .drafters import f`)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                imported = ".".join(base + ([node.module] if node.module else []))
            else:
                imported = node.module or ""
            names.update(f"{imported}.{alias.name}" if f"{imported}.{alias.name}" in MODULES else imported
                         for alias in node.names)
    return names


def internal_imports(path: Path) -> set[str]:
    """The package's own modules a file imports; an unknown taskspec module fails, so a typo cannot hide an edge."""
    found = {name for name in imported_modules(path) if name == "taskspec" or name.startswith("taskspec.")}
    unknown = found - set(MODULES)
    assert not unknown, f"{module_name(path)} imports {sorted(unknown)}: no such module"
    return found


def top(module: str) -> str:
    """The top-level module or package a module belongs to: "" for the package itself."""
    return module.split(".")[1] if "." in module else ""


GRAPH = {name: internal_imports(path) - {name} for name, path in MODULES.items()}


def test_the_checker_sees_relative_lazy_and_package_imports():
    # the checker itself must see what it is meant to forbid
    decode = GRAPH["taskspec.engine.decode"]
    assert {"taskspec.models.causal_lm", "taskspec.engine.verify", "taskspec.engine.drafter"} <= decode
    assert "taskspec.models.cache" in GRAPH["taskspec.models.causal_lm"]  # a lazy import inside a method
    assert "taskspec.bench.runner" in GRAPH["taskspec.cli_commands"]  # `from .bench.runner import ...` in a function
    assert {"taskspec.cli", "taskspec.pipeline", "taskspec.pipeline_config", "taskspec.collect",
            "taskspec.demo", "taskspec.cli_commands"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted({top(m) for m in MODULES}), ids=lambda n: n or "taskspec")
def test_every_top_level_module_has_a_rank(name):
    assert name in RANKS, f"taskspec.{name} has no rank: add it to RANKS and to docs/architecture.md"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_or_inside_the_package(module):
    mine = top(module)
    for imported in sorted(GRAPH[module]):
        theirs = top(imported)
        assert theirs == mine or RANKS[theirs] < RANKS[mine], (
            f"{module} (rank {RANKS[mine]}) imports {imported} (rank {RANKS[theirs]}); imports must point to a lower "
            "rank (docs/architecture.md)")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as a path [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_circles_and_only_them():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles_among_modules():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " → ".join(cycle)


@pytest.mark.parametrize("filename", PURE_MODULES)
def test_pure_engine_modules_import_no_model_code(filename):
    for name in imported_modules(PACKAGE / "engine" / filename):
        parts = name.split(".")
        first = parts[1] if parts[0] == "taskspec" and len(parts) > 1 else parts[0]
        assert first not in MODEL_CODE, f"engine/{filename} imports {name}; it must stay pure tensor code"


def test_the_cli_help_needs_no_torch():
    """`taskspec --help` lists the drafter kinds and strategies without loading torch (a 3-second import)."""
    import subprocess
    import sys

    code = "import sys, taskspec.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
