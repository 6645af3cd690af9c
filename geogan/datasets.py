"""Tiles as torch datasets: normalisation, chip and geo datasets, samplers and a data module.

Everything reads a tile folder written by ``geogan tile`` (``DIR/index.gpkg``, ``DIR/stats.json``
and chips ``DIR/{ROI}_{season}/{role}_{scene}/{ROI}_{season}_{role}_{scene}_{patch}.tif``).

- :class:`Normalizer` is the one place where digital numbers become model inputs in [-1, 1] and
  model outputs become digital numbers again.
- :class:`ChipDataset` serves whole chips (a torchgeo ``NonGeoDataset``): the usual view for
  training GANs, where geometry is not needed.
- :class:`S2Tiles`, :class:`S1Tiles` and :class:`LabelTiles` are torchgeo ``RasterDataset``s over
  the same chips; :func:`geo_dataset` joins them (``IntersectionDataset``) and :func:`geo_loader`
  samples them with ``RandomGeoSampler`` (training) or ``GridGeoSampler`` (inference).
- :class:`TileDataModule` is the Lightning data module: the folder's train/val/test chips, with
  flips and 90 degree rotations applied alike to image and mask.

Splits are the tile folder's own (``split.json``, decided once by ``geogan tile``: by scene or by
spatial blocks with a gap, see :mod:`geogan.tiles`); every view here reads it, none restates it.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, overload

import lightning
import numpy as np
import rasterio
import torch
from rasterio.errors import NodataShadowWarning
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, NonGeoDataset, RasterDataset, stack_samples
from torchgeo.samplers import GeoSampler, GridGeoSampler, RandomGeoSampler

from geogan import labels
from geogan.bands import LC, TRUE_COLOUR, sensor
from geogan.labels import IGBP, ClassScheme
from geogan.tiles import MASK_ROLE, SPLITS, STATS_FILE, chips_of, read_tile_index

log = logging.getLogger(__name__)

Array = np.ndarray | torch.Tensor


# -- Normalisation --------------------------------------------------------------------------------


class Normalizer:
    """Per-band robust scaling between stored values and model inputs in [-1, 1].

    Band ``b`` maps its 1st percentile ``p01[b]`` to -1 and its 99th percentile ``p99[b]`` to +1,
    linearly. :meth:`encode` clips values outside [p01, p99] to -1 / +1 and NaN (S1 nodata) to
    -1, so such values do not come back: :meth:`decode` returns p01 / p99 for them. Inside
    [p01, p99] the round trip ``decode(encode(dn))`` gives ``dn`` back within 1 DN (in
    practice exactly). A band with p99 == p01 is scaled as if p99 were p01 + 1.
    Both methods take numpy arrays or torch tensors of shape (C, H, W) or (B, C, H, W).
    """

    def __init__(
        self,
        band_names: Sequence[str],
        lo: Sequence[float] | np.ndarray,
        hi: Sequence[float] | np.ndarray,
        integer: Sequence[bool] | np.ndarray,
    ):
        self.band_names = tuple(band_names)
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.maximum(np.asarray(hi, dtype=np.float64), self.lo + 1.0)
        self.integer = np.asarray(integer, dtype=bool)
        if not len(self.band_names) == len(self.lo) == len(self.hi) == len(self.integer):
            raise ValueError("band_names, lo, hi and integer must have one entry per band")

    @classmethod
    def from_stats(cls, path: str | Path, role: str | Sequence[str] = "s2") -> Normalizer:
        """Scaling from ``stats.json`` (``path`` is the file or its tile folder).

        ``role`` is one role (``"s2"``, ``"s1"``) or several, whose bands are then concatenated
        in that order, as :class:`ChipDataset` stacks them.
        """
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILE
        try:
            stats = json.loads(path.read_text())["roles"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a geogan stats.json ({err!r})") from err
        names: list[str] = []
        lo: list[float] = []
        hi: list[float] = []
        integer: list[bool] = []
        for r in (role,) if isinstance(role, str) else tuple(role):
            if r not in stats:
                raise ValueError(f"{path}: no statistics for role {r!r}; it has {sorted(stats)}")
            try:
                entry = stats[r]
                bands, p01, p99 = list(entry["bands"]), list(entry["p01"]), list(entry["p99"])
            except (KeyError, TypeError) as err:
                raise ValueError(f"{path}: role {r!r} lacks bands/p01/p99 ({err!r})") from err
            if not len(bands) == len(p01) == len(p99):
                raise ValueError(
                    f"{path}: role {r!r} has {len(bands)} bands but {len(p01)}/{len(p99)} percentiles"
                )
            names += bands
            lo += p01
            hi += p99
            integer += [np.dtype(sensor(r).dtype).kind in "ui"] * len(bands)
        return cls(names, lo, hi, integer)

    @classmethod
    def l1c_range(cls, count: int) -> Normalizer:
        """Without statistics: every band between 1 and 10000 (L1C reflectance x 10000), unrounded."""
        return cls([f"band{i + 1}" for i in range(count)], [1.0] * count, [10_000.0] * count, [False] * count)

    def select(self, bands: Sequence[str]) -> Normalizer:
        """The scaling of a subset of the bands, in the order given."""
        missing = [b for b in bands if b not in self.band_names]
        if missing:
            raise KeyError(f"no statistics for bands {missing}; there are {self.band_names}")
        i = [self.band_names.index(b) for b in bands]
        return Normalizer(bands, self.lo[i], self.hi[i], self.integer[i])

    @property
    def dtype(self) -> np.dtype:
        """What :meth:`decode` returns: uint16 when every band is integer (S2), else float32."""
        return np.dtype("uint16") if self.integer.all() else np.dtype("float32")

    @overload
    def _params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    @overload
    def _params(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def _params(self, x: Array) -> tuple[Array, Array]:
        if x.ndim not in (3, 4) or x.shape[-3] != len(self.band_names):
            raise ValueError(
                f"expected ({len(self.band_names)}, H, W) or (B, {len(self.band_names)}, H, W) arrays, "
                f"got {tuple(x.shape)}"
            )
        lo, hi = self.lo[:, None, None], self.hi[:, None, None]
        if isinstance(x, torch.Tensor):
            return (
                torch.as_tensor(lo, dtype=torch.float64, device=x.device),
                torch.as_tensor(hi, dtype=torch.float64, device=x.device),
            )
        return lo, hi

    def encode(self, dn: Array) -> Array:
        """Stored values (DN, dB) -> float32 in [-1, 1]; outside [p01, p99] clipped, NaN -> -1."""
        if isinstance(dn, torch.Tensor):
            t_lo, t_hi = self._params(dn)
            t = (dn.to(torch.float64) - t_lo) * (2.0 / (t_hi - t_lo)) - 1.0
            return torch.nan_to_num(t, nan=-1.0).clamp(-1.0, 1.0).to(torch.float32)
        lo, hi = self._params(dn)
        x = (np.asarray(dn, dtype=np.float64) - lo) * (2.0 / (hi - lo)) - 1.0
        return np.clip(np.nan_to_num(x, nan=-1.0), -1.0, 1.0).astype(np.float32)

    def decode(self, x: Array) -> Array:
        """Model values in [-1, 1] -> stored values (:attr:`dtype`): S2 bands rounded to uint16 DN.

        Values beyond [-1, 1] are clipped first, so the result stays within [p01, p99].
        """
        integer = self.integer[:, None, None]
        if isinstance(x, torch.Tensor):
            t_lo, t_hi = self._params(x)
            t = (x.to(torch.float64).clamp(-1.0, 1.0) + 1.0) * ((t_hi - t_lo) / 2.0) + t_lo
            t = torch.where(torch.as_tensor(integer, device=x.device), t.round().clamp(0, 65535), t)
            return t.to(torch.uint16 if self.dtype == np.uint16 else torch.float32)
        lo, hi = self._params(x)
        v = (np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) + 1.0) * ((hi - lo) / 2.0) + lo
        v = np.where(integer, np.clip(np.rint(v), 0, 65535), v)
        return v.astype(self.dtype)


# -- Masks ----------------------------------------------------------------------------------------


def mask_scheme(path: str | Path, role: str) -> ClassScheme | None:
    """The scheme of the class values in a mask chip, or None when it holds the asked scheme's.

    A ``GEOGAN_SCHEME`` tag names it (``geogan labels rasterize`` writes one); a SEN12MS ``lc``
    chip (4 bands) holds IGBP in band 1; any other labels chip is taken to hold the values of
    the scheme it is read with.
    """
    with rasterio.open(path) as src:
        name = src.tags().get("GEOGAN_SCHEME")
        count = src.count
    if name is not None:
        return labels.SCHEMES.get(name.lower(), ClassScheme(name, ()))
    if role == "lc" and count == LC.count:
        return IGBP
    return None


def mask_values(path: str | Path, role: str, target: ClassScheme) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a mask's band-1 values to class values of ``target``: the one conversion of
    masks between schemes (its source scheme from the file, :func:`mask_scheme`); a clear error
    naming the file where there is no mapping."""
    source = mask_scheme(path, role)
    if source is None or source.name == target.name:
        return lambda values: values
    try:
        labels.convert(np.zeros(1, np.uint8), source, target)
    except ValueError as err:
        raise ValueError(f"{path}: holds {source.name} classes; {err}") from None
    return lambda values: labels.convert(values, source, target)


def mask_converter(path: str | Path, role: str, target: ClassScheme) -> Callable[[np.ndarray], np.ndarray]:
    """A function from a mask chip's band-1 values to class indices of ``target`` (-1 = nodata)."""
    values_of = mask_values(path, role, target)
    return lambda values: target.to_index(values_of(values))


def _read(path: Path, band: int | None = None) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band) if band else src.read()


# -- Chip dataset ---------------------------------------------------------------------------------

# Decoded samples a ChipDataset keeps in memory, per process (each DataLoader worker of
# `--workers N` holds its own): hundreds of 64-256 px chips fit (189 Havelland chips of 64 px:
# 46 MB), so after the first epoch training reads no file; a larger folder keeps its first chips
# up to this size and reads the rest from disk.
CACHE_BYTES = 2 * 1024**3


class ChipDataset(NonGeoDataset):
    """Whole chips of a tile folder, one sample per chip id.

    A sample is ``{"image": float32 (C, H, W) in [-1, 1], "mask": int64 (H, W), "chip": str}``:
    the bands of ``roles`` stacked in that order and normalised by :attr:`normalizer` (from
    ``stats.json``); the mask holds class *indices* 0..K-1 of :attr:`scheme`, -1 where the chip
    is nodata or its class is not in the scheme. Masks come from the ``mask_role`` chips: ``lc``
    (band 1; IGBP values in SEN12MS chips, remapped when the scheme is ``dfc2020``) or ``mask``
    (written by ``geogan labels rasterize``). Without chips of that role (or with
    ``mask_role=None``) samples have no ``"mask"``; chips lacking an image role or the mask are
    left out and logged.

    ``split`` picks the chips of one split of the tile folder (``split.json``, see
    :mod:`geogan.tiles`); None takes every chip, gap chips included. ``transforms`` is applied to
    each sample last, to a copy: decoded samples are kept in memory up to ``cache_bytes``
    (None: :data:`CACHE_BYTES`; 0 reads every sample from its files each time).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        roles: Sequence[str] = ("s2",),
        scheme: str | Path | ClassScheme = "igbp",
        mask_role: str | None = "lc",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache_bytes: int | None = None,
    ) -> None:
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.root = Path(root)
        self.roles = tuple(roles)
        self.scheme = scheme if isinstance(scheme, ClassScheme) else labels.scheme(scheme)
        self.normalizer = Normalizer.from_stats(self.root, self.roles)
        self.band_names = self.normalizer.band_names
        self.num_classes = len(self.scheme)
        self.transforms = transforms
        self.cache_bytes = CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cache: dict[int, dict[str, Any]] = {}
        self._cached = 0  # bytes

        index = read_tile_index(self.root)
        paths = index.pivot_table(index="chip", columns="role", values="path", aggfunc="first")
        need = list(self.roles)
        self.mask_role = mask_role if mask_role is not None and mask_role in paths.columns else None
        if self.mask_role:
            need.append(self.mask_role)
        missing = [r for r in self.roles if r not in paths.columns]
        if missing:
            raise ValueError(f"{self.root / 'index.gpkg'}: no chips of role(s) {missing}")
        complete = paths[need].notna().all(axis=1)
        if not complete.all():
            log.warning("%s: %d chip(s) lack one of %s and are left out", self.root, (~complete).sum(), need)
        paths = paths[complete]
        scene = index.drop_duplicates("chip").set_index("chip")["scene"]
        if split is not None:
            wanted = chips_of(self.root, split)
            paths = paths[[c in wanted for c in paths.index]]
        self.paths = paths[need].sort_index()
        self.chips = [str(c) for c in self.paths.index]
        self.scenes = sorted({scene[c] for c in self.chips})
        self._to_index = None
        if self.mask_role and len(self.paths):
            self._to_index = mask_converter(
                self.root / self.paths[self.mask_role].iloc[0], self.mask_role, self.scheme
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        cached = self._cache.get(i)
        if cached is None:
            cached = self._load(i)
            size = sum(v.nbytes for v in cached.values() if isinstance(v, torch.Tensor))
            if self._cached + size <= self.cache_bytes:
                self._cache[i] = cached
                self._cached += size
        # A copy, so that no caller or transform can change what the cache holds.
        sample = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in cached.items()}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _load(self, i: int) -> dict[str, Any]:
        row = self.paths.iloc[i]
        image = np.concatenate([_read(self.root / row[r]) for r in self.roles])
        sample: dict[str, Any] = {
            "image": torch.from_numpy(self.normalizer.encode(image)),
            "chip": self.chips[i],
        }
        if self._to_index is not None:
            sample["mask"] = torch.from_numpy(self._to_index(_read(self.root / row[self.mask_role], 1)))
        return sample


class FlipRotate:
    """Random flips and 90 degree rotations (the 8 symmetries of a square), alike for image and mask.

    Geometric only: exact permutations of pixels, so the values and classes are untouched.
    Draws from torch's global generator (seeded per DataLoader worker).
    """

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        k = int(torch.randint(4, ()))
        flip = bool(torch.randint(2, ()))
        out = dict(sample)
        for key in ("image", "mask"):
            if key in out:
                x = torch.rot90(out[key], k, dims=(-2, -1))
                out[key] = torch.flip(x, dims=(-1,)) if flip else x
        return out


# -- torchgeo GeoDatasets -------------------------------------------------------------------------


class _TileRaster(RasterDataset):
    """A torchgeo RasterDataset over the chips of one role in a tile folder."""

    role = ""

    def __init__(
        self,
        root: str | Path,
        bands: Sequence[str] | None = None,
        split: str | None = None,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        self.root = Path(root)
        self.filename_glob = f"*_{self.role}_*.tif"
        self.filename_regex = rf"^(?P<season>.+)_{self.role}_(?P<scene>[^_]+)_(?P<patch>[^_]+)\.tif$"
        super().__init__(self.root, crs=crs, res=res, bands=bands, transforms=None, cache=cache)
        self.user_transforms = transforms
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
            index = read_tile_index(self.root)
            wanted = chips_of(self.root, split)
            chip = {
                str((self.root / p).resolve()): c for p, c in zip(index["path"], index["chip"], strict=True)
            }
            keep = [chip.get(str(Path(p).resolve())) in wanted for p in self.index["filepath"]]
            self.index = self.index[keep]
            if self.index.empty:
                raise ValueError(f"{self.root}: no {self.role} chips in split {split!r}")

    def _query(self, query: Any) -> dict[str, Any]:
        with warnings.catch_warnings():
            # Chips carry a nodata value; rasterio's merge warns that it takes precedence over alpha.
            warnings.simplefilter("ignore", NodataShadowWarning)
            return RasterDataset.__getitem__(self, query)

    def _finish(self, sample: dict[str, Any]) -> dict[str, Any]:
        return self.user_transforms(sample) if self.user_transforms is not None else sample


class _ImageTiles(_TileRaster):
    def __init__(self, root: str | Path, bands: Sequence[str] | None = None, **kwargs: Any) -> None:
        self.all_bands = sensor(self.role).band_names
        super().__init__(root, bands=bands, **kwargs)
        self.normalizer = Normalizer.from_stats(self.root, self.role).select(self.bands)

    def __getitem__(self, query: Any) -> dict[str, Any]:
        sample = self._query(query)
        sample["image"] = self.normalizer.encode(sample["image"])
        return self._finish(sample)


class S2Tiles(_ImageTiles):
    """Sentinel-2 chips (13 bands, B01..B12 with B8A) as a torchgeo GeoDataset, normalised to [-1, 1].

    ``S2Tiles(root, bands=None, split=None, crs=None,
    res=None, transforms=None)``; a query returns ``{"image": float32 (C, H, W), "crs",
    "bounds"}``. Areas without chips (and nodata) read as -1.
    """

    role = "s2"
    rgb_bands = TRUE_COLOUR


class S1Tiles(_ImageTiles):
    """Sentinel-1 chips (VV, VH in dB) as a torchgeo GeoDataset, normalised to [-1, 1] (as S2Tiles)."""

    role = "s1"


class LabelTiles(_TileRaster):
    """Mask chips as a torchgeo GeoDataset: a query returns ``{"mask": int64 (H, W)}`` of class indices.

    ``role`` is ``lc`` (band 1, IGBP in SEN12MS chips) or ``mask`` (rasterised polygons);
    values become indices 0..K-1 of ``scheme`` as in :class:`ChipDataset`, -1 for nodata.
    """

    is_image = False

    def __init__(
        self, root: str | Path, role: str = "lc", scheme: str | Path | ClassScheme = "igbp", **kwargs: Any
    ) -> None:
        self.role = role
        self.scheme = scheme if isinstance(scheme, ClassScheme) else labels.scheme(scheme)
        self.all_bands = LC.band_names if role == "lc" else ("class",)
        super().__init__(root, bands=self.all_bands[:1], **kwargs)
        self._to_index = mask_converter(self.index["filepath"].iloc[0], role, self.scheme)

    def __getitem__(self, query: Any) -> dict[str, Any]:
        sample = self._query(query)
        sample["mask"] = torch.from_numpy(self._to_index(sample["mask"].numpy()))
        return self._finish(sample)


def geo_dataset(
    root: str | Path,
    roles: Sequence[str] = ("s2",),
    mask_role: str | None = "lc",
    scheme: str | Path | ClassScheme = "igbp",
    **kwargs: Any,
) -> RasterDataset | IntersectionDataset:
    """The image roles of a tile folder, and its masks when ``mask_role`` is given, as one GeoDataset.

    Image roles are intersected band-wise (``s2`` then ``s1``: 15 channels); the mask joins as
    ``"mask"``. ``kwargs`` (``split``, ``crs``, ``res``) go to each part.
    """
    kinds = {"s2": S2Tiles, "s1": S1Tiles}
    unknown = [r for r in roles if r not in kinds]
    if unknown or not roles:
        raise ValueError(f"image roles must be among {list(kinds)}, got {list(roles)}")
    dataset: RasterDataset | IntersectionDataset = kinds[roles[0]](root, **kwargs)
    for role in roles[1:]:
        dataset = IntersectionDataset(dataset, kinds[role](root, **kwargs))
    if mask_role is not None:
        dataset = IntersectionDataset(dataset, LabelTiles(root, role=mask_role, scheme=scheme, **kwargs))
    return dataset


def geo_loader(
    dataset: RasterDataset | IntersectionDataset,
    size: int = 256,
    batch_size: int = 8,
    sampler: str = "random",
    length: int | None = None,
    stride: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of ``size`` x ``size`` pixel windows, batched with torchgeo's ``stack_samples``.

    ``sampler="random"``: ``RandomGeoSampler`` draws ``length`` windows (default: about one per
    chip-sized area), seeded, for training. ``sampler="grid"``: ``GridGeoSampler`` walks every
    chip with ``stride`` (default ``size``), in order, for inference.
    """
    chosen: GeoSampler
    if sampler == "random":
        generator = torch.Generator().manual_seed(seed)
        chosen = RandomGeoSampler(dataset, size=size, length=length, generator=generator)
    elif sampler == "grid":
        chosen = GridGeoSampler(dataset, size=size, stride=stride or size)
    else:
        raise ValueError(f"sampler must be 'random' or 'grid', got {sampler!r}")
    return DataLoader(
        dataset, batch_size=batch_size, sampler=chosen, num_workers=num_workers, collate_fn=stack_samples
    )


# -- Lightning data module ------------------------------------------------------------------------


class TileDataModule(lightning.LightningDataModule):
    """Chips of a tile folder for Lightning: the folder's own train/val/test split.

    Batches are ``{"image": (B, C, H, W) float32, "mask": (B, H, W) int64, "chip": [str]}`` as
    :class:`ChipDataset` makes them; training samples get :class:`FlipRotate` when ``augment``.
    The split is the tile folder's (``split.json``); shuffling is seeded with ``seed``.
    """

    def __init__(
        self,
        root: str | Path,
        roles: Sequence[str] = ("s2",),
        scheme: str | Path = "igbp",
        mask_role: str | None = "lc",
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.roles = tuple(roles)
        self.scheme = scheme
        self.mask_role = mask_role
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.datasets: dict[str, ChipDataset] = {}

    def _dataset(self, split: str) -> ChipDataset:
        if split not in self.datasets:
            self.datasets[split] = ChipDataset(
                self.root,
                split=split,
                roles=self.roles,
                scheme=self.scheme,
                mask_role=self.mask_role,
                transforms=FlipRotate() if self.augment and split == "train" else None,
            )
            log.info(
                "%s split: %d chips from %d scene(s)",
                split,
                len(self.datasets[split]),
                len(self.datasets[split].scenes),
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, SPLITS) if stage else SPLITS:
            self._dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


__all__ = [
    "MASK_ROLE",
    "ChipDataset",
    "FlipRotate",
    "LabelTiles",
    "Normalizer",
    "S1Tiles",
    "S2Tiles",
    "TileDataModule",
    "geo_dataset",
    "geo_loader",
    "mask_converter",
    "mask_scheme",
]
