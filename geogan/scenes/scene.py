"""A :class:`Scene`, one unit of tiling, and the SEN12MS names of its chips (see :mod:`geogan.scenes`)."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("s2", "s1", "lc")


@dataclass
class Scene:
    scene: str  # the split unit: chips of one scene all go to train or all to test
    folder: str  # output top folder, "ROI_season" for SEN12MS, "geogan_scenes" for GeoTIFFs
    number: str  # the scene token of chip file names (no "_")
    patch: str  # the SEN12MS patch token ("p30"), "" for a whole scene
    paths: dict[str, str] = field(default_factory=dict)  # role -> path or GDAL dataset name

    def token(self, row: int, col: int) -> str:
        """The last file-name token of the chip at pixel offset (row, col): ``p30-r0-c256``."""
        cell = f"r{row}-c{col}"
        return f"{self.patch}-{cell}" if self.patch else cell

    def chip_id(self, row: int, col: int) -> str:
        """The id shared by the s2/s1/lc twins of one chip."""
        return f"{self.folder}_{self.number}_{self.token(row, col)}"

    def chip_path(self, role: str, row: int, col: int) -> str:
        """The chip's path relative to the output folder, in the SEN12MS layout."""
        name = f"{self.folder}_{role}_{self.number}_{self.token(row, col)}.tif"
        return f"{self.folder}/{role}_{self.number}/{name}"
