"""The layering of docs/architecture.md, read from the source: every import in bigtrain/ (module level
and inside functions) goes to the same floor or one below, no two packages import each other,
directly or around a circle, and within a package no modules do but the family registry's."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "bigtrain"

# Floor of each package (or top-level module) of bigtrain, bottom up: docs/architecture.md's table.
FLOORS = {"config": 0, "_version": 0, "console": 0, "ops": 0,
          "checkpoint": 1, "data": 1, "distributed": 1,
          "models": 2, "losses": 2, "metrics": 2,
          "train": 3,
          "export": 4, "slurm": 4,
          "cli": 5, "bench": 5, "__init__": 5, "__main__": 5}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, 'file:line') for every import of bigtrain in bigtrain/."""
    out = []
    modules = {".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in ROOT.rglob("*.py")}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                # `from pkg import mod` imports the module pkg.mod (and pkg's __init__ first, which
                # is what `from pkg import name` imports).
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            out += [(module, n, f"{rel}.py:{node.lineno}") for n in names if n.split(".")[0] == "bigtrain"]
    return out


def test_no_import_goes_up_a_floor():
    up = [f"{where}: {a} imports {b}" for a, b, where in _imports()
          if FLOORS[_unit(b)] > FLOORS[_unit(a)]]
    assert not up, "\n".join(up)


def test_no_two_packages_import_each_other():
    edges: dict[str, set[str]] = {}
    for a, b, _ in _imports():
        if _unit(a) != _unit(b):
            edges.setdefault(_unit(a), set()).add(_unit(b))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            n = todo.pop()
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                todo += edges.get(n, ())
        return False

    circles = sorted(f"{a} -> {b} -> ... -> {a}" for a, targets in edges.items() for b in targets if reaches(b, a))
    assert not circles, "\n".join(circles)


def test_every_package_has_a_floor():
    assert {_unit(a) for a, _, _ in _imports()} <= set(FLOORS)


def test_no_module_circle_but_the_family_registrys():
    edges: dict[str, set[str]] = {}
    for a, b, _ in _imports():
        edges.setdefault(a, set()).add(b)
    on_circle = set()
    for start in edges:
        seen, todo = set(), list(edges[start])
        while todo:
            n = todo.pop()
            if n == start:
                on_circle.add(start)
                break
            if n not in seen:
                seen.add(n)
                todo += edges.get(n, ())
    # models/registry.py imports the family packages, whose __init__ registers with it.
    registry = {"bigtrain.models.registry", "bigtrain.models.stylegan2", "bigtrain.models.progan",
                "bigtrain.models.biggan"}
    assert on_circle <= registry, sorted(on_circle - registry)
