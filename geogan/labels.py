"""Class schemes: class values, names and colours of land-cover labels.

Masks on disk hold class *values* (IGBP codes 1-17, DFC2020 codes 1-10, or a custom scheme's
ids); 0 is nodata / unlabelled in every scheme. Models work with contiguous class *indices*
0..K-1; :meth:`ClassScheme.to_index` and :meth:`ClassScheme.to_value` convert between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

NODATA = 0


@dataclass(frozen=True)
class LandClass:
    value: int
    name: str
    colour: str  # "#rrggbb"

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.colour.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class ClassScheme:
    name: str
    classes: tuple[LandClass, ...]

    def __post_init__(self) -> None:
        values = [c.value for c in self.classes]
        if len(set(values)) != len(values):
            raise ValueError(f"scheme {self.name!r} repeats a class value: {values}")
        if any(not 1 <= v <= 255 for v in values):
            raise ValueError(f"scheme {self.name!r}: class values must be 1..255 (0 is nodata)")

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(c.value for c in self.classes)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def by_value(self, value: int) -> LandClass:
        for c in self.classes:
            if c.value == value:
                return c
        raise KeyError(f"scheme {self.name!r} has no class value {value}")

    def by_name(self, name: str) -> LandClass:
        for c in self.classes:
            if c.name.lower() == name.lower():
                return c
        raise KeyError(f"scheme {self.name!r} has no class named {name!r}; it has {self.names}")

    def to_index(self, values: np.ndarray) -> np.ndarray:
        """Class values -> indices 0..K-1; nodata and unknown values become -1."""
        lut = np.full(256, -1, dtype=np.int64)
        lut[list(self.values)] = np.arange(len(self))
        return lut[np.asarray(values).astype(np.int64).clip(0, 255)]

    def to_value(self, indices: np.ndarray) -> np.ndarray:
        """Indices 0..K-1 -> class values (uint8); -1 becomes nodata."""
        lut = np.array([NODATA, *self.values], dtype=np.uint8)
        return lut[np.asarray(indices).astype(np.int64) + 1]

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table (value -> RGBA); nodata is transparent black."""
        cmap = {NODATA: (0, 0, 0, 0)}
        cmap.update({c.value: (*c.rgb, 255) for c in self.classes})
        return cmap

    def colourise(self, values: np.ndarray) -> np.ndarray:
        """An 8-bit RGB picture (H, W, 3) of a mask of class values."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        for c in self.classes:
            lut[c.value] = c.rgb
        return lut[np.asarray(values).astype(np.int64).clip(0, 255)]

    @classmethod
    def from_yaml(cls, path: str | Path) -> ClassScheme:
        """A custom scheme from YAML: ``name:`` and ``classes:`` of ``{id, name, colour}``."""
        path = Path(path)
        try:
            doc = yaml.safe_load(path.read_text())
            classes = tuple(LandClass(int(c["id"]), str(c["name"]), str(c["colour"])) for c in doc["classes"])
            return cls(str(doc.get("name", path.stem)), classes)
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: not a class scheme ({err}); expected 'classes:' with id, name, colour"
            ) from err


IGBP = ClassScheme(
    "igbp",
    (
        LandClass(1, "Evergreen Needleleaf Forests", "#05450a"),
        LandClass(2, "Evergreen Broadleaf Forests", "#086a10"),
        LandClass(3, "Deciduous Needleleaf Forests", "#54a708"),
        LandClass(4, "Deciduous Broadleaf Forests", "#78d203"),
        LandClass(5, "Mixed Forests", "#009900"),
        LandClass(6, "Closed Shrublands", "#c6b044"),
        LandClass(7, "Open Shrublands", "#dcd159"),
        LandClass(8, "Woody Savannas", "#dade48"),
        LandClass(9, "Savannas", "#fbff13"),
        LandClass(10, "Grasslands", "#b6ff05"),
        LandClass(11, "Permanent Wetlands", "#27ff87"),
        LandClass(12, "Croplands", "#c24f44"),
        LandClass(13, "Urban and Built-up Lands", "#a5a5a5"),
        LandClass(14, "Cropland/Natural Vegetation Mosaics", "#ff6d4c"),
        LandClass(15, "Permanent Snow and Ice", "#69fff8"),
        LandClass(16, "Barren", "#f9ffa4"),
        LandClass(17, "Water Bodies", "#1c0dff"),
    ),
)

DFC2020 = ClassScheme(
    "dfc2020",
    (
        LandClass(1, "Forest", "#009900"),
        LandClass(2, "Shrubland", "#c6b044"),
        LandClass(3, "Savanna", "#fbff13"),
        LandClass(4, "Grassland", "#b6ff05"),
        LandClass(5, "Wetlands", "#27ff87"),
        LandClass(6, "Croplands", "#c24f44"),
        LandClass(7, "Urban/Built-up", "#a5a5a5"),
        LandClass(8, "Snow/Ice", "#69fff8"),
        LandClass(9, "Barren", "#f9ffa4"),
        LandClass(10, "Water", "#1c0dff"),
    ),
)

# The simplified IGBP -> DFC2020 scheme of Schmitt et al. (SEN12MS, IEEE GRSS DFC 2020).
IGBP_TO_DFC2020 = {
    1: 1, 2: 1, 3: 1, 4: 1, 5: 1,
    6: 2, 7: 2,
    8: 3, 9: 3,
    10: 4,
    11: 5,
    12: 6, 14: 6,
    13: 7,
    15: 8,
    16: 9,
    17: 10,
}  # fmt: skip

SCHEMES = {"igbp": IGBP, "dfc2020": DFC2020}


def scheme(name_or_path: str | Path) -> ClassScheme:
    """A built-in scheme by name (``igbp``, ``dfc2020``) or a custom one from a YAML file."""
    key = str(name_or_path).lower()
    if key in SCHEMES:
        return SCHEMES[key]
    path = Path(name_or_path)
    if path.suffix.lower() in {".yaml", ".yml"}:
        return ClassScheme.from_yaml(path)
    raise KeyError(f"unknown class scheme {name_or_path!r}: use igbp, dfc2020 or a YAML file")


def igbp_to_dfc2020(values: np.ndarray) -> np.ndarray:
    """Map IGBP class values to simplified DFC2020 values (unknown -> nodata)."""
    lut = np.zeros(256, dtype=np.uint8)
    for igbp, dfc in IGBP_TO_DFC2020.items():
        lut[igbp] = dfc
    return lut[np.asarray(values).astype(np.int64).clip(0, 255)]
