"""The dependency rule of docs/architecture.md, checked on the import statements of the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "taskspec"
ENGINE_FORBIDDEN = ("bench", "cli", "data", "train", "serve", "tasks")
PURE_MODULES = ("verify.py", "tree.py", "sampling.py")  # pure tensor code: no model code at all
MODEL_CODE = ("transformers", "models", "drafters", "accelerate", "peft")


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported by a file of the package (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_imported_modules_resolves_relative_imports(tmp_path):
    # the checker itself must see what it is meant to forbid
    names = imported_modules(PACKAGE / "engine" / "decode.py")
    assert "taskspec.models.causal_lm" in names and "taskspec.engine.verify" in names


@pytest.mark.parametrize("path", sorted((PACKAGE / "engine").glob("*.py")), ids=lambda p: p.name)
def test_engine_does_not_import_outer_layers(path):
    for name in imported_modules(path):
        parts = name.split(".")
        assert not (parts[0] == "taskspec" and len(parts) > 1 and parts[1] in ENGINE_FORBIDDEN), \
            f"engine/{path.name} imports {name}; the engine must not depend on {ENGINE_FORBIDDEN}"


@pytest.mark.parametrize("filename", PURE_MODULES)
def test_pure_engine_modules_import_no_model_code(filename):
    for name in imported_modules(PACKAGE / "engine" / filename):
        parts = name.split(".")
        top = parts[1] if parts[0] == "taskspec" and len(parts) > 1 else parts[0]
        assert top not in MODEL_CODE, f"engine/{filename} imports {name}; it must stay pure tensor code"
