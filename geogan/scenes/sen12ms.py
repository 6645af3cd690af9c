"""SEN12MS-layout folders: ``ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p30.tif`` and twins.

Each S2 patch is one :class:`~geogan.scenes.Scene` of its own grid; its ``s1_*`` and ``lc_*`` twins
are found at the paths SEN12MS gives them (a missing twin leaves that role out). The split unit is
the SEN12MS scene, ``ROIs1158_spring_1``, so all patches of one scene go to the same split.
"""

from __future__ import annotations

import re
from pathlib import Path

from geogan.scenes.scene import Scene

PATCH = re.compile(r"^(ROIs\d+)_([A-Za-z]+)_s2_(\d+)_(p\d+)\.tif$")


def find_scenes(root: Path) -> list[Scene]:
    """Every S2 patch under ``root`` with its twins, in a stable order."""
    scenes = []
    for s2 in sorted(root.glob("ROIs*_*/s2_*/*.tif")):
        match = PATCH.match(s2.name)
        if not match:
            continue
        roi, season, number, patch = match.groups()
        folder = f"{roi}_{season}"
        paths = {"s2": str(s2)}
        for role in ("s1", "lc"):
            twin = root / folder / f"{role}_{number}" / f"{folder}_{role}_{number}_{patch}.tif"
            if twin.exists():
                paths[role] = str(twin)
        scenes.append(
            Scene(scene=f"{folder}_{number}", folder=folder, number=number, patch=patch, paths=paths)
        )
    if not scenes:
        raise ValueError(
            f"{root}: no SEN12MS patches found (expected ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p30.tif)"
        )
    return scenes
