"""Sensor catalogue: band names, wavelengths, resolution, dtype, scale and nodata of each role.

A *role* is what a raster is to geogan: ``s2`` (Sentinel-2 L1C, 13 bands), ``s1`` (Sentinel-1
GRD VV/VH backscatter in dB) or ``lc`` (land-cover labels). Band order follows SEN12MS, which
follows the Sentinel-2 product (B8A sits between B08 and B09).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Band:
    name: str
    description: str
    wavelength_nm: float | None  # centre wavelength; None for SAR and label bands
    resolution_m: float


@dataclass(frozen=True)
class Sensor:
    role: str
    title: str
    bands: tuple[Band, ...]
    dtype: str
    nodata: float | int | None
    units: str
    scale: float  # physical value = stored value / scale

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def count(self) -> int:
        return len(self.bands)

    def index(self, name: str) -> int:
        """Position (0-based) of band ``name``; a clear error for an unknown name."""
        try:
            return self.band_names.index(name)
        except ValueError:
            raise KeyError(
                f"{self.role} has no band {name!r}; its bands are {', '.join(self.band_names)}"
            ) from None


S2 = Sensor(
    role="s2",
    title="Sentinel-2 MSI Level-1C top-of-atmosphere reflectance",
    bands=(
        Band("B01", "Coastal aerosol", 442.7, 60),
        Band("B02", "Blue", 492.4, 10),
        Band("B03", "Green", 559.8, 10),
        Band("B04", "Red", 664.6, 10),
        Band("B05", "Vegetation red edge 1", 704.1, 20),
        Band("B06", "Vegetation red edge 2", 740.5, 20),
        Band("B07", "Vegetation red edge 3", 782.8, 20),
        Band("B08", "NIR", 832.8, 10),
        Band("B8A", "Narrow NIR", 864.7, 20),
        Band("B09", "Water vapour", 945.1, 60),
        Band("B10", "SWIR cirrus", 1373.5, 60),
        Band("B11", "SWIR 1", 1613.7, 20),
        Band("B12", "SWIR 2", 2202.4, 20),
    ),
    dtype="uint16",
    nodata=0,
    units="reflectance x 10000 (L1C digital numbers)",
    scale=10000.0,
)

S1 = Sensor(
    role="s1",
    title="Sentinel-1 GRD backscatter (sigma0, dB)",
    bands=(
        Band("VV", "VV polarisation backscatter (dB)", None, 10),
        Band("VH", "VH polarisation backscatter (dB)", None, 10),
    ),
    dtype="float32",
    nodata=float("nan"),
    units="dB",
    scale=1.0,
)

LC = Sensor(
    role="lc",
    title="Land cover (SEN12MS layout: IGBP and LCCS classes from MODIS MCD12Q1)",
    bands=(
        Band("IGBP", "IGBP land-cover class", None, 500),
        Band("LCCS_LC", "LCCS land-cover class", None, 500),
        Band("LCCS_LU", "LCCS land-use class", None, 500),
        Band("LCCS_SH", "LCCS surface-hydrology class", None, 500),
    ),
    dtype="uint8",
    nodata=0,
    units="class code",
    scale=1.0,
)

SENSORS: dict[str, Sensor] = {s.role: s for s in (S2, S1, LC)}

TRUE_COLOUR = ("B04", "B03", "B02")
FALSE_COLOUR = ("B08", "B04", "B03")


def sensor(role: str) -> Sensor:
    """The catalogue entry for ``role`` (``s2``, ``s1`` or ``lc``)."""
    try:
        return SENSORS[role]
    except KeyError:
        raise KeyError(f"unknown role {role!r}; roles are {', '.join(SENSORS)}") from None


def _valid(band: np.ndarray, s: Sensor) -> np.ndarray:
    """Pixels of ``band`` that hold a value: finite and not the sensor's nodata."""
    valid = np.isfinite(band)
    if s.nodata is not None and not np.isnan(s.nodata):
        valid &= band != s.nodata
    return valid


def composite(
    image: np.ndarray,
    bands: tuple[str, str, str] = TRUE_COLOUR,
    role: str = "s2",
    percentiles: tuple[float, float] = (2.0, 98.0),
    limits: np.ndarray | None = None,
) -> np.ndarray:
    """An 8-bit RGB picture (H, W, 3) of three named bands with a per-band percentile stretch.

    ``image`` is ``(bands, H, W)`` in the role's band order (any numeric dtype). Nodata (0 for
    S2, NaN for S1) is left black and ignored by the stretch. ``limits`` ((3, 2): low and high
    value of each of the three bands, e.g. from :func:`stretch_limits` over a set of chips) puts
    several pictures on one stretch, as QGIS shows a layer, instead of each on its own.
    """
    s = sensor(role)
    if image.ndim != 3 or image.shape[0] != s.count:
        raise ValueError(f"expected ({s.count}, H, W) {role} bands, got shape {image.shape}")
    out = np.zeros((*image.shape[1:], 3), dtype=np.uint8)
    for i, name in enumerate(bands):
        band = image[s.index(name)].astype(np.float64)
        valid = _valid(band, s)
        if not valid.any():
            continue
        lo, hi = np.percentile(band[valid], percentiles) if limits is None else limits[i]
        scaled = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1) * 255
        out[..., i] = np.where(valid, scaled, 0).astype(np.uint8)
    return out


def stretch_limits(
    images: np.ndarray,
    bands: tuple[str, str, str] = TRUE_COLOUR,
    role: str = "s2",
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> np.ndarray:
    """(3, 2) low / high percentiles of three bands over a stack ``(N, bands, H, W)``, nodata left out."""
    s = sensor(role)
    out = np.zeros((3, 2))
    for i, name in enumerate(bands):
        band = images[:, s.index(name)].astype(np.float64)
        valid = _valid(band, s)
        out[i] = np.percentile(band[valid], percentiles) if valid.any() else (0, 1)
    return out
