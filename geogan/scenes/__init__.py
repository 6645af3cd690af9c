"""Where scenes come from: SEN12MS-layout folders and role-tagged GeoTIFFs (or any GDAL raster).

A :class:`Scene` is one unit of tiling: an S2 raster that defines the pixel grid, with optional S1
and land-cover (``lc``) rasters that are aligned onto that grid. It also carries the names its chips
get in the SEN12MS layout: ``{folder}/{role}_{number}/{folder}_{role}_{number}_{token}.tif``, where
``folder`` is two ``_``-separated words (``ROIs1158_spring``) and ``number`` and ``token`` contain no
``_``, so torchgeo can rebuild the s1/lc twin of an S2 chip by splitting its name on ``_``.
"""

from __future__ import annotations

import os
from pathlib import Path

from geogan.scenes.scene import ROLES, Scene

__all__ = ["ROLES", "Scene", "expand", "find_scenes"]


def expand(sources: list[str]) -> list[str]:
    """``sources`` with each ``@FILE`` replaced by the lines of FILE (one source a line, paths with
    spaces kept whole; blank lines and ``#`` comments skipped)."""
    out = []
    for source in sources:
        if not source.startswith("@"):
            out.append(source)
            continue
        path = Path(source[1:])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ValueError(f"{path}: cannot read this list of sources ({err.strerror or err})") from None
        out += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return out


def find_scenes(sources: list[str]) -> list[Scene]:
    """Scenes of the command-line sources: SEN12MS folders (plain paths) and ``role=PATH`` items.

    Raises ``ValueError`` naming the source for anything it cannot use (see the two readers).
    """
    from geogan.scenes import geotiff, sen12ms

    scenes: list[Scene] = []
    tagged: list[str] = []
    for source in expand(sources):
        if "=" in source.split("/")[0]:
            tagged.append(source)
        elif Path(source).is_dir():
            scenes += sen12ms.find_scenes(Path(source))
        elif Path(source).exists():
            raise ValueError(f"{source}: give the raster a role, e.g. s2={source} (roles: s2, s1, labels)")
        else:
            raise ValueError(f"{source}: no such folder (a SEN12MS folder, or s2=PATH, s1=PATH, labels=PATH)")
    scenes += geotiff.find_scenes(tagged)
    names = [s.chip_id(0, 0) for s in scenes]
    if len(set(names)) != len(names):
        raise ValueError("the sources name the same scene twice")
    seen: dict[str, str] = {}
    for scene in scenes:  # one file under two names (./a.tif and a.tif, a link) would be tiled twice
        given = scene.paths["s2"]
        real = given if given.startswith("/vsi") else os.path.realpath(given)
        if real in seen:
            raise ValueError(
                f"{given}: given twice as an s2 scene (also as {seen[real]}); give each scene once"
            )
        seen[real] = given
    return scenes
