"""The package's layers only point down: no module imports one from a layer above it (nor, within a layer,
another package of that layer), so that each concern has one home and no import cycle can form."""

from __future__ import annotations

import ast
from pathlib import Path

import cpcl

# lowest first; a module may import its own package and any package of a lower layer
LAYERS = [
    {"cpcl.version", "cpcl.errors"},
    {"cpcl.io", "cpcl.config", "cpcl.registry", "cpcl.threads", "cpcl.timing"},
    {"cpcl.data"},
    {"cpcl.model", "cpcl.clustering", "cpcl.losses", "cpcl.memory"},
    {"cpcl.evaluation"},
    {"cpcl.views"},
    {"cpcl.engine", "cpcl.retrieval"},
    {"cpcl.demo", "cpcl.selection"},
    {"cpcl.cli"},
    {"cpcl.__main__"},
]
ROOT = Path(cpcl.__file__).parent


def _unit(module: str) -> str:
    """The layer unit a module belongs to: its top-level package or module under cpcl."""
    return ".".join(module.split(".")[:2])


def _layer(unit: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit in units)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names if node.module == "cpcl"}
    return {n for n in names if n.startswith("cpcl.")}


def test_every_module_has_a_layer():
    units = {_unit("cpcl." + ".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in ROOT.rglob("*.py")
             if p.name != "__init__.py" or p.parent != ROOT}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_imports_point_down():
    wrong = []
    for path in ROOT.rglob("*.py"):
        if path == ROOT / "__init__.py":  # the package root re-exports the public API lazily
            continue
        module = "cpcl." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        here = _unit(module)
        for name in _imports(path):
            there = _unit(name)
            if there == here:
                continue
            if _layer(there) >= _layer(here):
                wrong.append(f"{module} imports {name} (layer {_layer(there)} >= {_layer(here)})")
    assert not wrong, "\n".join(sorted(wrong))
