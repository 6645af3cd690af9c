"""Procedural SEN12MS-like scenes for the demo and the tests.

No real imagery ships with geogan, so the demo builds its own: deterministic (seeded) scenes of a
peatland landscape in the Flow Country of northern Scotland, in UTM zone 30N (EPSG:32630) at 10 m.
Land cover comes in spatially coherent patches (smoothed random fields, lakes with peat around
them); Sentinel-2 L1C digital numbers follow typical top-of-atmosphere reflectance signatures of
each class (water, conifer forest, grassland, cropland, bare soil, built-up, wetland/peat), with
within-class texture and the coarser 20 m / 60 m bands blurred as in the L1C product; Sentinel-1
VV/VH backscatter in dB follows each class's typical level with multiplicative speckle.

The values are plausible, not measured: use them to see the pipeline work, never to learn about
a real place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine
from scipy.ndimage import gaussian_filter

from geogan.bands import LC, S1, S2
from geogan.geo import write_raster
from geogan.progress import track

CRS_DEMO = CRS.from_epsg(32630)
ORIGIN = (440_000.0, 6_490_000.0)  # upper-left corner of scene 1 (Flow Country, UTM 30N)
RESOLUTION = 10.0
SEASON = "ROIs1158_spring"  # a SEN12MS season folder name; torchgeo expects these four
SEASONS = ("ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter")


@dataclass(frozen=True)
class DemoClass:
    key: str
    igbp: int
    lccs: tuple[int, int, int]  # LCCS land cover, land use, surface hydrology
    s2: tuple[int, ...]  # 13 band means, L1C digital numbers (reflectance x 10000)
    s1: tuple[float, float]  # VV, VH means in dB


#                            B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09 B10   B11   B12
DEMO_CLASSES = (
    DemoClass(
        "water",
        17,
        (3, 3, 3),
        (1310, 1060, 820, 560, 460, 390, 370, 340, 310, 120, 12, 130, 90),
        (-20.0, -27.0),
    ),
    DemoClass(
        "forest",
        1,
        (11, 10, 10),
        (1240, 930, 820, 560, 930, 1950, 2450, 2650, 2750, 880, 18, 1450, 700),
        (-7.5, -13.0),
    ),
    DemoClass(
        "grassland",
        10,
        (31, 30, 30),
        (1300, 1040, 1040, 900, 1400, 2350, 2800, 3000, 3100, 980, 22, 2300, 1400),
        (-11.0, -18.0),
    ),
    DemoClass(
        "cropland",
        12,
        (31, 36, 30),
        (1320, 1080, 1100, 1050, 1500, 2200, 2600, 2800, 2900, 950, 22, 2500, 1700),
        (-10.0, -16.5),
    ),
    DemoClass(
        "bare soil",
        16,
        (1, 1, 1),
        (1500, 1400, 1600, 1900, 2100, 2300, 2450, 2600, 2700, 900, 28, 3300, 2800),
        (-13.0, -22.0),
    ),
    DemoClass(
        "built-up",
        13,
        (1, 9, 1),
        (1600, 1500, 1500, 1600, 1750, 1950, 2100, 2200, 2250, 760, 30, 2500, 2200),
        (-3.0, -10.0),
    ),
    DemoClass(
        "wetland/peat",
        11,
        (32, 30, 50),
        (1250, 950, 860, 680, 1000, 1650, 1950, 2150, 2200, 690, 16, 1150, 560),
        (-12.0, -19.5),
    ),
)

# Where each S2 band is coarser than 10 m, the L1C product is resampled: blur it accordingly.
_BLUR = {60: 2.5, 20: 0.9, 10: 0.0}


@dataclass(frozen=True)
class SceneArrays:
    s2: np.ndarray  # (13, H, W) uint16
    s1: np.ndarray  # (2, H, W) float32 dB
    lc: np.ndarray  # (4, H, W) uint8: IGBP, LCCS_LC, LCCS_LU, LCCS_SH


def _field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation."""
    f = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-12)


def landcover(size: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) IGBP class values in coherent patches: lakes, peat around them, forest blocks..."""
    wet = _field(rng, size, size / 8)
    scores = []
    for cls in DEMO_CLASSES:
        f = _field(rng, size, size / 14)
        if cls.key == "wetland/peat":
            f = f + 1.2 * wet + 0.6
        elif cls.key == "forest":
            f = f + 0.3
        elif cls.key in ("bare soil", "cropland"):
            f = f - 0.6 * wet - 0.2
        elif cls.key == "built-up":
            f = f - 0.8 * wet - 0.7
        elif cls.key == "water":
            f = np.full_like(f, -np.inf)  # water is placed by the wetness threshold below
        scores.append(f)
    igbp = np.array([c.igbp for c in DEMO_CLASSES], dtype=np.uint8)
    out = igbp[np.argmax(np.stack(scores), axis=0)]
    out[wet > 1.5] = DEMO_CLASSES[0].igbp
    # Fields and plantations have straight edges: square up cropland and forest blocks.
    block = 32
    for key in ("cropland", "forest"):
        code = next(c.igbp for c in DEMO_CLASSES if c.key == key)
        h = size // block
        share = (out[: h * block, : h * block] == code).reshape(h, block, h, block).mean((1, 3))
        keep = np.kron(share > 0.5, np.ones((block, block), dtype=bool))
        grid = out[: h * block, : h * block]
        grid[(grid == code) & ~keep] = next(c.igbp for c in DEMO_CLASSES if c.key == "grassland")
        grid[keep & (grid != DEMO_CLASSES[0].igbp)] = code
    return out


def s2_image(igbp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(13, H, W) uint16 L1C digital numbers for a land-cover map of IGBP values."""
    size = igbp.shape[0]
    means = np.zeros((S2.count, *igbp.shape), dtype=np.float64)
    for cls in DEMO_CLASSES:
        means[:, igbp == cls.igbp] = np.asarray(cls.s2, dtype=np.float64)[:, None]
    brightness = 1 + 0.07 * _field(rng, size, 6) + 0.03 * _field(rng, size, 1.5)
    vigour = 0.06 * _field(rng, size, 10)  # red-edge/NIR variation within vegetation
    nir = np.array([b.wavelength_nm is not None and 700 < b.wavelength_nm < 1000 for b in S2.bands])
    image = means * brightness
    image[nir] *= 1 + vigour
    image *= 1 + 0.015 * rng.standard_normal(image.shape)
    for i, band in enumerate(S2.bands):
        sigma = _BLUR[int(band.resolution_m)]
        if sigma:
            image[i] = gaussian_filter(image[i], sigma)
    return np.clip(np.rint(image), 1, 65535).astype(np.uint16)


def s1_image(igbp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(2, H, W) float32 VV/VH backscatter in dB, with multiplicative speckle (ENL 4.4)."""
    size = igbp.shape[0]
    db = np.zeros((S1.count, *igbp.shape), dtype=np.float64)
    for cls in DEMO_CLASSES:
        db[:, igbp == cls.igbp] = np.asarray(cls.s1)[:, None]
    db += 1.0 * _field(rng, size, 5)
    enl = 4.4
    linear = 10 ** (db / 10) * rng.gamma(enl, 1 / enl, size=db.shape)
    return (10 * np.log10(linear)).astype(np.float32)


def lc_image(igbp: np.ndarray) -> np.ndarray:
    """(4, H, W) uint8 SEN12MS land-cover bands: IGBP, LCCS_LC, LCCS_LU, LCCS_SH."""
    out = np.zeros((LC.count, *igbp.shape), dtype=np.uint8)
    out[0] = igbp
    for cls in DEMO_CLASSES:
        where = igbp == cls.igbp
        for band, code in enumerate(cls.lccs, start=1):
            out[band][where] = code
    return out


def make_scene(size: int = 512, seed: int = 0) -> SceneArrays:
    """One co-registered S2/S1/land-cover scene of ``size`` x ``size`` pixels."""
    rng = np.random.default_rng(seed)
    igbp = landcover(size, rng)
    return SceneArrays(s2=s2_image(igbp, rng), s1=s1_image(igbp, rng), lc=lc_image(igbp))


def scene_transform(scene: int, size: int) -> Affine:
    """The geotransform of procedural scene ``scene`` (1-based): scenes sit side by side, apart."""
    x0 = ORIGIN[0] + (scene - 1) * (size + 256) * RESOLUTION
    return Affine(RESOLUTION, 0.0, x0, 0.0, -RESOLUTION, ORIGIN[1])


def write_sen12ms(
    root: str | Path,
    scenes: int = 3,
    patches_per_side: int = 2,
    patch_size: int = 256,
    seed: int = 0,
    season: str = SEASON,
    progress: bool = False,
) -> list[Path]:
    """Write procedural scenes in the SEN12MS layout; return the S2 patch paths.

    ``root/ROIs1158_spring/s2_1/ROIs1158_spring_s2_1_p1.tif`` with its ``s1_1`` and ``lc_1``
    twins, ``patches_per_side**2`` adjacent patches a scene, each with its own georeference.
    A scene whose files all exist already is skipped (files are written atomically), so an
    interrupted run resumes where it stopped.
    """
    root = Path(root)
    size = patches_per_side * patch_size
    written = []
    ids = range(1, scenes + 1)
    for scene in track(ids, description="procedural scenes") if progress else ids:
        names = [
            root / season / f"{role}_{scene}" / f"{season}_{role}_{scene}_p{p + 1}.tif"
            for p in range(patches_per_side**2)
            for role in ("s2", "s1", "lc")
        ]
        if all(n.exists() for n in names):
            written += [n for n in names if n.parent.name.startswith("s2_")]
            continue
        arrays = make_scene(size, seed=seed * 1000 + scene)
        base = scene_transform(scene, size)
        tags = {"GEOGAN_SOURCE": "geogan.sample (procedural)", "GEOGAN_SEED": str(seed)}
        for p in range(patches_per_side**2):
            r, c = divmod(p, patches_per_side)
            rows = slice(r * patch_size, (r + 1) * patch_size)
            cols = slice(c * patch_size, (c + 1) * patch_size)
            transform = base @ Affine.translation(c * patch_size, r * patch_size)
            for sensor, data in ((S2, arrays.s2), (S1, arrays.s1), (LC, arrays.lc)):
                name = f"{season}_{sensor.role}_{scene}_p{p + 1}.tif"
                path = root / season / f"{sensor.role}_{scene}" / name
                write_raster(path, data[:, rows, cols], sensor, transform, CRS_DEMO, tags=tags)
                if sensor is S2:
                    written.append(path)
    return written


def write_scene(out_dir: str | Path, size: int = 1024, seed: int = 0) -> dict[str, Path]:
    """Write one whole procedural scene as three GeoTIFFs (``s2.tif``, ``s1.tif``, ``lc.tif``)."""
    out_dir = Path(out_dir)
    arrays = make_scene(size, seed=seed)
    transform = scene_transform(1, size)
    tags = {"GEOGAN_SOURCE": "geogan.sample (procedural)", "GEOGAN_SEED": str(seed)}
    return {
        sensor.role: write_raster(
            out_dir / f"{sensor.role}.tif", data, sensor, transform, CRS_DEMO, tags=tags
        )
        for sensor, data in ((S2, arrays.s2), (S1, arrays.s1), (LC, arrays.lc))
    }
