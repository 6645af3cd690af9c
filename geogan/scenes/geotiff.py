"""GeoTIFF scenes (or any raster GDAL opens: VRTs, ``/vsicurl/`` URLs) given with a role each.

Sources are read in order: ``s2=PATH`` starts a scene, and the ``s1=PATH`` and ``labels=PATH`` after
it belong to that scene. A local path may be a glob: an ``s2=`` glob makes one scene per file, and
the ``s1=`` / ``labels=`` globs after it must match as many files, paired in sorted order.

Chips of these scenes are named ``geogan_scenes/s2_{name}/geogan_scenes_s2_{name}_r0-c256.tif``,
where ``name`` is the S2 file's stem with every character other than letters, digits and ``-``
replaced by ``-`` (so ``T30VVJ_20230601.tif`` gives ``T30VVJ-20230601``); a second scene with the
same stem gets ``-2``, ``-3``... in the order given. The scene name is also the split unit.
"""

from __future__ import annotations

import glob
import re
from pathlib import PurePosixPath

from geogan.scenes.scene import Scene

FOLDER = "geogan_scenes"
ROLE_OF = {"s2": "s2", "s1": "s1", "labels": "lc", "lc": "lc"}


def _expand(role: str, path: str) -> list[str]:
    if path.startswith("/vsi") or not any(ch in path for ch in "*?["):
        return [path]
    found = sorted(glob.glob(path))
    if not found:
        raise ValueError(f"{role}={path}: the glob matches no file")
    return found


def _name(path: str, taken: set[str]) -> str:
    stem = PurePosixPath(path.rstrip("/")).name.split(".")[0] or "scene"
    base = re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "scene"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def find_scenes(sources: list[str]) -> list[Scene]:
    """Scenes of ``role=PATH`` items (roles ``s2``, ``s1``, ``labels``)."""
    groups: list[dict[str, list[str]]] = []
    for source in sources:
        role, _, path = source.partition("=")
        if role not in ROLE_OF:
            raise ValueError(f"{source}: unknown role {role!r}; roles are s2, s1, labels")
        if not path:
            raise ValueError(f"{source}: no path after {role}=")
        role = ROLE_OF[role]
        if role == "s2":
            groups.append({"s2": _expand(role, path)})
        elif not groups:
            raise ValueError(f"{source}: give the scene's s2=PATH before its {role}")
        elif role in groups[-1]:
            raise ValueError(f"{source}: the scene of {groups[-1]['s2'][0]} already has a {role} raster")
        else:
            groups[-1][role] = _expand(role, path)
    scenes: list[Scene] = []
    taken: set[str] = set()
    for group in groups:
        s2s = group["s2"]
        for role, files in group.items():
            if len(files) != len(s2s):
                raise ValueError(
                    f"{role}: {len(files)} files do not pair with the {len(s2s)} s2 files of {s2s[0]}"
                )
        for i, s2 in enumerate(s2s):
            name = _name(s2, taken)
            paths = {role: group[role][i] for role in group}
            scenes.append(Scene(scene=name, folder=FOLDER, number=name, patch="", paths=paths))
    return scenes
