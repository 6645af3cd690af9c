"""environment.yml lists the same dependencies as pyproject.toml, so conda users get what pip users get."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
# conda-forge names where they differ from PyPI's
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    if any(r.startswith("dask[distributed]") for r in project["dependencies"]):
        wanted.add("distributed")
    wanted = {CONDA_NAMES.get(n, n) for n in wanted}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    listed = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    assert wanted - listed == set(), "in pyproject.toml but not environment.yml"
    assert listed - wanted - {"python", "pip", "gdal"} == set(), "in environment.yml but not pyproject.toml"


def test_package_is_geogan_alone():
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["geogan*"]


# import name -> distribution, where the two differ
DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "rio_cogeo": "rio-cogeo",
    "odc": "odc-stac",
    "pystac_client": "pystac-client",
    "segmentation_models_pytorch": "segmentation-models-pytorch",
}


def _imports(folder: Path) -> set[str]:
    import ast
    import sys

    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"geogan"}


def test_the_qgis_plugin_imports_nothing_but_qgis_and_the_standard_library():
    """The plugin runs in QGIS's Python, which has no geogan and none of its dependencies."""
    import ast
    import sys

    for path in (ROOT / "geogan_processing").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else (
                    [node.module]
                    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    else []
                )
            )
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ("qgis", "processing"), (path, name)


def test_every_package_geogan_imports_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r).replace("_", "-") for r in project["dependencies"]}
    declared |= {"distributed"}  # dask[distributed]
    for extra in project["optional-dependencies"].values():
        declared |= {_name(r).replace("_", "-") for r in extra}
    used = {DISTRIBUTIONS.get(m, m).replace("_", "-") for m in _imports(ROOT / "geogan")}
    assert used - declared == set(), "imported by geogan but not declared in pyproject.toml"
