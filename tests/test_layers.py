"""The package's layers point one way (docs/ARCHITECTURE.md): checked on the import
statements of every module, lazy (function-level) imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "switchnerf"

# Layer of each top-level part of the package; a module may import its own layer and below.
LAYER = {
    "errors": 0, "io_utils": 0, "config": 0, "ops": 0,
    "scene": 1,
    "encoding": 2,
    "moe": 3, "model": 3,
    "render": 4,
    "train": 5,
    "viewer": 6, "video": 6, "export": 6,
    "cli": 7, "__main__": 8,
}
# Leaves import nothing of the package but each other's errors.
LEAF_ALLOWED = {"ops": {"ops", "errors"}, "errors": {"errors"}, "io_utils": {"io_utils", "errors"},
                "config": {"config", "errors"}}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported switchnerf module) of every import in the file."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts)
    if here[-1] == "__init__":
        here = here[:-1]
        base_pkg = here
    else:
        base_pkg = here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = base_pkg[:len(base_pkg) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] if node.module or not node.level else [
                f"{name}.{a.name}" for a in node.names]
            out += [(node.lineno, n) for n in names if n.startswith("switchnerf")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("switchnerf")]
    return out


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_part_has_a_layer():
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert parts - {"__init__"} <= set(LAYER), parts - set(LAYER)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own == "__init__":
        return
    bad = []
    for line, module in _imports(path):
        target = _part(module)
        if not target:
            continue
        if own in LEAF_ALLOWED and target not in LEAF_ALLOWED[own]:
            bad.append(f"line {line}: {module} (a leaf imports only {sorted(LEAF_ALLOWED[own])})")
        elif LAYER[target] > LAYER[own]:
            bad.append(f"line {line}: {module} ({target} is above {own})")
    assert not bad, f"{path.relative_to(PACKAGE)} imports upwards: " + "; ".join(bad)
