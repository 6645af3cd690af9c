"""The package's layout: no module imports, at import time, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import geogan

ROOT = Path(geogan.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """geogan modules ``path`` imports when it is imported (not those imported inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from geogan import tiles`
    return {name for name in found if name in modules}


def test_no_import_circle_in_the_package():
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {name: top_level_imports(path, set(paths)) - {name} for name, path in paths.items()}
    circles = []

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            circles.append(trail[trail.index(name) :] + [name])
            return
        for other in sorted(graph[name]):
            if other not in done:
                visit(other, [*trail, name])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [])
    assert not circles, [" -> ".join(c) for c in circles]
    assert "geogan.scenes.scene" in graph["geogan.scenes.geotiff"]  # the check sees real imports
