"""The generate stage: sample trained runs and export the samples as georeferenced GeoTIFF pairs.

A run's EMA generator (:func:`geogan.training.load_generator`) samples in batches; each batch is
decoded to L1C digital numbers with the run's :class:`geogan.datasets.Normalizer` and handed to
Dask workers that write it (:func:`geogan.export.write_pairs`) while the model makes the next.
Afterwards the index, VRT mosaics and STAC catalogue are rebuilt from what is on disk.

Three kinds of image run, told apart by their task's ``conditional`` and ``outputs``:

- unconditional (MSG-StyleGAN): images only. They go onto a grid of chips laid out in rows, by
  default a clearly synthetic grid in the training tiles' CRS that starts beyond the eastern edge
  of every real chip (so it never overlaps one), or over an AOI the user gives (``grid`` file and
  ``crs``).
- conditional (SPADE, the dual GAN's stage II): an image for each mask, with that mask. Masks come
  from mask GeoTIFFs (``masks``: real mask chips or polygons rasterised onto chips; each image
  keeps its mask's CRS and transform and names the mask's chip in its tags), from the mask chips
  of a tile folder (``like``), or from a mask-GAN run (``mask_run``, stage I), whose masks go onto
  the synthetic or AOI grid like unconditional samples. ``min_class`` keeps only file masks with at
  least those class fractions, or asks the mask GAN for them.
- a mask-GAN run makes masks only: it is the ``mask_run`` of a conditional run, never the ``run``.

With file masks two levers of :mod:`geogan.layouts` change which masks the images are drawn on:
``layout`` ``warp`` or ``mosaic`` makes new layouts from them (which, being no real chip's, go onto
the synthetic or AOI grid, naming in ``GEOGAN_SOURCE_CHIP`` the chips they were made from), and
``balance`` chooses the masks for an even class mix. Both are recorded in every file's tags
(``GEOGAN_LAYOUT``, ``GEOGAN_BALANCE``), the index and the STAC items.

With any masks, ``best_of`` K makes K images of each mask and keeps the one a segmenter trained on
the real training chips agrees with most (:mod:`geogan.scoring`); each pair's ``agreement`` goes
into its tags (``GEOGAN_AGREEMENT``), the index (sortable in QGIS) and its STAC item. With a SPADE
run trained with its image encoder, ``style_from`` takes each image's style from a real training
chip drawn at random (its encoded style, sampled from the encoder's distribution) instead of from
N(0, 1); the chip is named in ``GEOGAN_STYLE_CHIP``.

Resuming: pair ``i`` is ``syn_{i:06d}`` in batch ``i // batch_size``, whose noise is seeded from
(seed, batch); with file masks, pair ``i`` takes mask ``i % masks`` of the sorted (and filtered)
list, or the ``i``-th of the choice ``layout`` and ``balance`` make from ``seed``. A batch whose
pairs all exist is skipped without running the model; a rerun with the same options writes exactly
what an uninterrupted run would have.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.transform import Affine

from geogan import cluster, export, geo, layouts, scoring
from geogan.bands import LC, S2
from geogan.config import GenerateOptions
from geogan.datasets import mask_values
from geogan.evaluate.data import split_chips
from geogan.labels import NODATA, ClassScheme, class_value, scheme
from geogan.tiles import CHIP_NAME, INDEX_FILE, MASK_ROLE, STATS_FILE, chips_of, read_tile_index
from geogan.training import TrainedGenerator, check_device, load_generator

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 10.0  # metres, S2's finest bands, when no training tiles say otherwise


@dataclass
class GenerateSummary:
    out: Path
    written: int = 0
    skipped: int = 0
    grid: str = ""
    collections: dict[str, list[Path]] = field(default_factory=dict)


def pair_id(i: int) -> str:
    return f"syn_{i:06d}"


def batch_seed(seed: int, batch: int) -> int:
    """The torch seed of batch ``batch`` of a run seeded ``seed`` (independent across both)."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def real_chips(tiles: Path) -> tuple[CRS, tuple[float, float, float, float], float]:
    """CRS, bounds (in that CRS) and pixel size in metres of the S2 chips of a tile folder.

    Where chips lie in several CRSs, the CRS of most chips is taken and all footprints are
    measured in it.
    """
    index = read_tile_index(tiles)
    chips = index[index["role"] == "s2"] if (index["role"] == "s2").any() else index
    code = chips["crs"].mode()[0]
    crs = CRS.from_user_input(code)
    first = chips[chips["crs"] == code].to_crs(crs.to_wkt()).iloc[0]
    minx, _, maxx, _ = first.geometry.bounds
    resolution = (maxx - minx) / float(first["width"])
    bounds = chips.to_crs(crs.to_wkt()).total_bounds
    return crs, (float(bounds[0]), float(bounds[1]), float(bounds[2]), float(bounds[3])), resolution


def plan_grid(options: GenerateOptions, size: int, tiles: Path | None) -> geo.ChipGrid:
    """Where the samples go: over ``options.grid`` (an AOI), else beside the real chips."""
    indexed = tiles if tiles is not None and (tiles / INDEX_FILE).is_file() else None
    if options.grid is not None:
        resolution = real_chips(indexed)[2] if indexed is not None else DEFAULT_RESOLUTION
        return geo.aoi_chips(options.grid, options.n, size, resolution, options.crs)
    if indexed is None:
        raise FileNotFoundError(
            f"{tiles}/index.gpkg: the training tiles are needed to place samples beside them; "
            "pass --tiles DIR, or --grid AOI.gpkg --crs EPSG:XXXX"
        )
    crs, bounds, resolution = real_chips(indexed)
    return geo.chips_beside(options.n, size, resolution, crs, bounds)


def _run_folder(trained: TrainedGenerator) -> Path:
    return Path(trained.checkpoint).parent.parent


def _check_run(trained: TrainedGenerator) -> None:
    run = _run_folder(trained)
    if "image" not in type(trained.task).outputs:
        raise ValueError(
            f"{run}: a {trained.task.name} run makes masks, not images; pass it as --mask-run RUN "
            "with an image run (e.g. spade) as --run"
        )
    if trained.normalizer is None:
        raise FileNotFoundError(
            f"{run}/stats.json: missing; without it samples cannot become digital numbers"
        )
    if tuple(trained.data.band_names[: S2.count]) != S2.band_names:
        raise ValueError(
            f"{run}: the model makes bands {', '.join(trained.data.band_names)}; "
            f"generate writes Sentinel-2 images ({', '.join(S2.band_names)} first)"
        )


def _check_mask_source(options: GenerateOptions, trained: TrainedGenerator) -> None:
    run, task = _run_folder(trained), trained.task
    given = next((f for f in ("masks", "like", "mask_run") if getattr(options, f) is not None), None)
    flag = given and "--" + given.replace("_", "-")
    if type(task).conditional and given is None:
        raise ValueError(
            f"{run}: a {task.name} run makes images from masks; give them with --masks DIR, "
            "--like TILES or --mask-run RUN"
        )
    if not type(task).conditional and given is not None:
        raise ValueError(
            f"{run}: a {task.name} run makes images without masks; {flag} needs a conditional run"
        )
    if not type(task).conditional and options.min_class:
        raise ValueError(f"{run}: --min-class needs a conditional run with masks; {task.name} takes none")
    if not type(task).conditional and options.style_from is not None:
        raise ValueError(
            f"{run}: --style-from gives styles to images drawn from masks; {task.name} takes none"
        )
    if not type(task).conditional and options.best_of > 1:
        raise ValueError(
            f"{run}: --best-of scores images against their masks; a {task.name} run makes no masks"
        )


def parse_class_min(min_class: dict[str, float], classes: ClassScheme) -> dict[int, float]:
    """``{class name or value: fraction}`` -> ``{class index of classes: fraction}``, checked."""
    out: dict[int, float] = {}
    for label, fraction in min_class.items():
        value = class_value(label, classes)
        if value is None:
            raise ValueError(
                f"--min-class {label}={fraction}: {classes.name} has no class {label!r}; "
                f"its classes are {', '.join(classes.names)}"
            )
        out[classes.values.index(value)] = float(fraction)
    if sum(out.values()) > 1 + 1e-9:
        raise ValueError(f"--min-class: the fractions add up to {sum(out.values()):.2f} > 1")
    return out


# --- masks from files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskFile:
    """A mask GeoTIFF to condition on and the id of the chip it came from."""

    path: Path
    chip: str


def chip_id(path: Path) -> str:
    """The tile index's chip id of a chip file (``ROIs1158_spring_lc_1_p30.tif`` ->
    ``ROIs1158_spring_1_p30``), else the file's stem."""
    match = CHIP_NAME.match(path.name)
    if match is None:
        return path.stem
    return f"{match['season']}_{match['scene']}_{match['patch']}"


def mask_files(folder: Path) -> list[MaskFile]:
    """The mask GeoTIFFs under ``folder`` (any depth), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of mask GeoTIFFs")
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith(".")
    )
    if not paths:
        raise ValueError(f"{folder}: holds no mask GeoTIFFs (*.tif)")
    return [MaskFile(p, chip_id(p)) for p in paths]


def tile_masks(tiles: Path, role: str | None, split: str = "all") -> list[MaskFile]:
    """The mask chips of a tile folder: role ``role``, else ``mask`` chips if any, else ``lc``; of
    one split of the folder (``split.json``), or of every chip (``all``)."""
    index = read_tile_index(tiles)
    if split != "all":
        index = index[index["chip"].isin(chips_of(tiles, split))]
        if index.empty:
            raise ValueError(f"{Path(tiles) / 'split.json'}: no chips in the {split} split")
    roles = set(index["role"])
    if role is None:
        role = next((r for r in (MASK_ROLE, "lc") if r in roles), None)
    if role is None or role not in roles:
        raise ValueError(
            f"{Path(tiles) / 'index.gpkg'}: no mask chips (role {role or 'mask or lc'}); "
            f"it has roles {', '.join(sorted(roles))}"
        )
    chips = index[index["role"] == role].sort_values("chip")
    return [MaskFile(Path(tiles) / p, str(c)) for p, c in zip(chips["path"], chips["chip"], strict=True)]


@dataclass(frozen=True)
class Mask:
    indices: np.ndarray  # (H, W) class indices of the run's scheme, -1 = nodata
    crs: CRS
    transform: Affine


def read_mask(item: MaskFile, classes: ClassScheme) -> Mask:
    """A mask GeoTIFF's band 1 as class indices of ``classes``; a clear error if it is not one.

    Values are taken as ``classes``' own unless the file says otherwise: a ``GEOGAN_SCHEME`` tag,
    or a 4-band SEN12MS ``lc`` chip (IGBP), converted where a mapping exists (IGBP -> DFC2020).
    """
    path = item.path
    try:
        with rasterio.open(path) as src:
            values, crs, transform, count = src.read(1), src.crs, src.transform, src.count
            kind = src.dtypes[0]
    except rasterio.RasterioIOError as err:
        raise ValueError(f"{path}: not a readable mask GeoTIFF ({err})") from None
    if crs is None:
        raise ValueError(f"{path}: the mask has no CRS; generated images keep their mask's georeference")
    if np.dtype(kind).kind not in "ui":
        raise ValueError(f"{path}: mask values must be integer class values, not {kind}")
    values = mask_values(path, "lc" if count == LC.count else MASK_ROLE, classes)(values)
    unknown = sorted(set(np.unique(values).tolist()) - {NODATA, *classes.values})
    if unknown:
        raise ValueError(
            f"{path}: mask values {unknown[:10]} are not classes of the run's scheme {classes.name!r}"
        )
    return Mask(classes.to_index(values), crs, transform)


def fractions(indices: np.ndarray, k: int) -> np.ndarray:
    """Each class's share of a mask's pixels (nodata included in the total)."""
    return layouts.class_counts([indices], k)[0] / indices.size


def select_masks(items: list[MaskFile], classes: ClassScheme, class_min: dict[int, float]) -> list[MaskFile]:
    """The masks holding at least ``class_min`` of each class (all of them when it is empty)."""
    if not class_min:
        return items
    kept = []
    for item in items:
        share = fractions(read_mask(item, classes).indices, len(classes))
        if all(share[k] >= f - 1e-9 for k, f in class_min.items()):
            kept.append(item)
    if not kept:
        need = ", ".join(f"{classes.classes[k].name} >= {f:.0%}" for k, f in class_min.items())
        raise ValueError(f"none of the {len(items)} masks holds {need}")
    log.info("%d of %d masks hold the --min-class fractions", len(kept), len(items))
    return kept


# --- sampling ------------------------------------------------------------------------------------


def _device(trained: TrainedGenerator) -> torch.device:
    return next(trained.generator.parameters()).device


def _decode(trained: TrainedGenerator, images: torch.Tensor) -> np.ndarray:
    assert trained.normalizer is not None  # _check_run refuses a run without stats.json
    normalizer = trained.normalizer.select(S2.band_names)
    x = images[:, : S2.count].float()
    if x.device.type == "cuda":  # there: a fraction of the CPU's float64 time, and uint16 to copy back
        return normalizer.decode(x).cpu().numpy()
    return normalizer.decode(x.cpu().numpy())  # on a CPU NumPy's decode takes half torch's time


@dataclass(frozen=True)
class Styles:
    """Style vectors of real chips, from a SPADE run's image encoder (``--style-from``)."""

    mu: torch.Tensor  # (N, z_dim)
    std: torch.Tensor  # (N, z_dim)
    chips: list[str]

    def draw(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """``n`` styles, each of a chip drawn at random (torch's seeded generator), and the chips."""
        rows = torch.randint(len(self.chips), (n,))
        z = self.mu[rows] + torch.randn(n, self.mu.shape[1]).to(self.mu.device) * self.std[rows]
        return z, [self.chips[int(r)] for r in rows]


def read_styles(tiles: Path, trained: TrainedGenerator) -> Styles:
    """The styles of ``tiles``' real training chips, encoded by ``trained``'s image encoder."""
    if trained.encoder is None:
        raise ValueError(
            f"{_run_folder(trained)}: --style-from needs a SPADE run trained with its image encoder "
            "(geogan train spade --encoder); this run has none"
        )
    if trained.data.channels != S2.count:
        raise ValueError(
            f"{_run_folder(trained)}: --style-from encodes Sentinel-2 chips; this run's encoder takes "
            f"{trained.data.channels} bands ({', '.join(trained.data.band_names)})"
        )
    assert trained.normalizer is not None  # _check_run refuses a run without stats.json
    classes = scheme(trained.options.scheme)
    role = getattr(trained.options, "mask_role", None)
    real = split_chips(
        tiles, "real train", {"train"}, classes, role, trained.normalizer.select(S2.band_names)
    )
    if real is None:
        raise ValueError(f"{Path(tiles) / 'split.json'}: no chips in the train split to take styles from")
    x, chips = real.x, real.ids
    device = next(trained.encoder.parameters()).device
    with torch.no_grad():
        parts = [trained.encoder(torch.from_numpy(x[i : i + 64]).to(device)) for i in range(0, len(x), 64)]
    mu = torch.cat([m for m, _ in parts]).float()
    std = torch.exp(0.5 * torch.cat([v for _, v in parts]).float())
    log.info("styles of %d real training chips of %s", len(chips), tiles)
    return Styles(mu, std, chips)


Draw = Callable[[torch.Tensor], tuple[np.ndarray, list[float | None], list[str | None]]]


def _draw(
    trained: TrainedGenerator,
    masks: torch.Tensor,
    k: int = 1,
    judge: scoring.Scorer | None = None,
    styles: Styles | None = None,
) -> tuple[np.ndarray, list[float | None], list[str | None]]:
    """A conditional run's images (DN) for ``masks`` (B, H, W), each the best of ``k`` by ``judge``
    (one each without), with each image's agreement and the chip whose style it took."""
    n, k = len(masks), k if judge is not None else 1
    batch: dict[str, torch.Tensor] = {"mask": masks.to(_device(trained)).repeat(k, 1, 1)}
    chips: list[str | None] = [None] * (k * n)
    if styles is not None:
        batch["style"], drawn = styles.draw(k * n)
        chips = list(drawn)
    images = trained.sample(batch)["image"]
    if judge is None:
        return _decode(trained, images), [None] * n, chips
    kept, scores, best = scoring.best_of(images, batch["mask"], k, judge)
    return _decode(trained, kept), scores, [chips[b * n + i] for i, b in enumerate(best)]


def drawer(
    trained: TrainedGenerator,
    options: GenerateOptions,
    judge: scoring.Scorer | None = None,
    styles: Styles | None = None,
) -> Draw:
    """:func:`_draw` with the run's --best-of, scorer and styles."""
    return functools.partial(_draw, trained, k=options.best_of, judge=judge, styles=styles)


def _pending(options: GenerateOptions, summary: GenerateSummary) -> Iterator[tuple[int, list[int]]]:
    """(batch seed, pair numbers) of each batch not yet wholly on disk."""
    for start in range(0, options.n, options.batch_size):
        ids = list(range(start, min(start + options.batch_size, options.n)))
        if all(export.pair_written(options.out, pair_id(i)) for i in ids):
            summary.skipped += len(ids)
            continue
        yield batch_seed(options.seed, start // options.batch_size), ids


def sample_batches(
    trained: TrainedGenerator,
    grid: geo.ChipGrid,
    options: GenerateOptions,
    summary: GenerateSummary,
    mask_model: TrainedGenerator | None = None,
    class_min: dict[int, float] | None = None,
    draw: Draw | None = None,
) -> Iterator[list[export.Pair]]:
    """Batches of pairs from an unconditional run, or a conditional one fed by a mask run, on ``grid``."""
    classes = scheme(trained.options.scheme)
    size = grid.size
    for seed, ids in _pending(options, summary):
        torch.manual_seed(seed)
        n = len(ids)
        scores: list[float | None] = [None] * n
        style: list[str | None] = [None] * n
        values: list[np.ndarray | None] | np.ndarray = [None] * n
        if mask_model is None:
            empty = torch.zeros(n, trained.data.channels, size, size, device=_device(trained))
            images = _decode(trained, trained.sample({"image": empty})["image"])
        else:
            empty = torch.zeros(n, 1, size, size, device=_device(mask_model))
            masks = mask_model.sample({"image": empty, "class_min": class_min or {}})["mask"]
            assert draw is not None  # given with a mask model
            images, scores, style = draw(masks)
            values = classes.to_value(masks.cpu().numpy())
        yield _on_grid(ids, grid, seed, images, values, scores, style)


def _on_grid(
    ids: list[int],
    grid: geo.ChipGrid,
    seed: int,
    images: np.ndarray,
    values: list[np.ndarray | None] | np.ndarray,
    scores: list[float | None],
    style: list[str | None],
    sources: list[str] | None = None,
) -> list[export.Pair]:
    """Pairs ``ids`` on their chips of ``grid`` (samples of no real chip's mask)."""
    return [
        export.Pair(
            pair_id(i),
            images[k],
            values[k],
            grid.crs,
            grid.transforms[i],
            seed,
            source_chip=None if sources is None else sources[k],
            agreement=scores[k],
            style_chip=style[k],
        )
        for k, i in enumerate(ids)
    ]


def conditional_batches(
    trained: TrainedGenerator,
    items: list[MaskFile],
    options: GenerateOptions,
    summary: GenerateSummary,
    order: np.ndarray | None = None,
    read: list[Mask] | None = None,
    draw: Draw | None = None,
) -> Iterator[list[export.Pair]]:
    """Batches of pairs from a conditional run, pair ``i`` on mask ``order[i]``'s grid (default
    ``i % len(items)``); the masks are read batch by batch unless ``read`` holds them all."""
    classes = scheme(trained.options.scheme)
    draw = draw or drawer(trained, options)
    for seed, ids in _pending(options, summary):
        torch.manual_seed(seed)
        rows = [i % len(items) if order is None else int(order[i]) for i in ids]
        chosen = [items[j] for j in rows]
        masks = [read[j] for j in rows] if read is not None else [read_mask(item, classes) for item in chosen]
        images: dict[int, np.ndarray] = {}  # by position in ids, filled for every k below
        scores: dict[int, float | None] = {}
        style: dict[int, str | None] = {}
        # Masks of one size are sampled together, sizes in order of first appearance.
        for shape in dict.fromkeys(m.indices.shape for m in masks):
            group = [k for k, m in enumerate(masks) if m.indices.shape == shape]
            batch = torch.from_numpy(np.stack([masks[k].indices for k in group])).to(_device(trained))
            try:
                made, agreement, styled = draw(batch)
            except (ValueError, RuntimeError) as err:
                names = ", ".join(str(chosen[k].path) for k in group[:3])
                raise ValueError(
                    f"{names}: the {trained.task.name} model cannot make {shape[1]} x {shape[0]} px "
                    f"images ({err})"
                ) from None
            for k, image, score, chip in zip(group, made, agreement, styled, strict=True):
                images[k], scores[k], style[k] = image, score, chip
        yield [
            export.Pair(
                pair_id(i),
                images[k],
                classes.to_value(masks[k].indices),
                masks[k].crs,
                masks[k].transform,
                seed,
                source_chip=chosen[k].chip,
                agreement=scores[k],
                style_chip=style[k],
            )
            for k, i in enumerate(ids)
        ]


def stacked(masks: list[Mask], source: Path | None) -> np.ndarray:
    """(N, H, W) class indices of masks of one size, for --layout."""
    shapes = sorted({m.indices.shape for m in masks})
    if len(shapes) > 1:
        raise ValueError(f"{source}: --layout needs masks of one size; found {shapes}")
    return np.stack([m.indices for m in masks])


def mask_picks(masks: list[Mask], options: GenerateOptions, k: int) -> np.ndarray:
    """(n, parts) rows of ``masks`` each pair is made from (4 for a mosaic, else 1)."""
    parts = 4 if options.layout == "mosaic" else 1
    if options.balance:
        counts = layouts.class_counts([m.indices for m in masks], k)
        picks = layouts.balanced_picks(counts, counts.sum(0), options.n * parts)
    elif parts == 1:
        picks = np.arange(options.n) % len(masks)
    else:
        picks = np.random.default_rng(options.seed).integers(len(masks), size=options.n * parts)
    return picks.reshape(options.n, parts)


def layout_batches(
    trained: TrainedGenerator,
    items: list[MaskFile],
    masks: np.ndarray,
    picks: np.ndarray,
    grid: geo.ChipGrid,
    options: GenerateOptions,
    summary: GenerateSummary,
    draw: Draw,
) -> Iterator[list[export.Pair]]:
    """Batches of pairs on new layouts (--layout warp / mosaic) of the masks, on ``grid``."""
    classes = scheme(trained.options.scheme)
    for seed, ids in _pending(options, summary):
        torch.manual_seed(seed)
        chosen = torch.from_numpy(masks[picks[ids]])  # (n, parts, H, W)
        made = layouts.mosaic(chosen) if options.layout == "mosaic" else layouts.warp(chosen[:, 0])
        images, scores, style = draw(made)
        values = classes.to_value(made.numpy())
        sources = ["+".join(items[j].chip for j in picks[i]) for i in ids]
        yield _on_grid(ids, grid, seed, images, values, scores, style, sources)


def _load_mask_run(options: GenerateOptions, trained: TrainedGenerator) -> TrainedGenerator:
    assert options.mask_run is not None  # called only with --mask-run
    masks = load_generator(options.mask_run, device=options.device)
    run = Path(options.mask_run)
    if "mask" not in type(masks.task).outputs or "image" in type(masks.task).outputs:
        raise ValueError(f"{run}: --mask-run needs a mask-GAN run (stage I); this is a {masks.task.name} run")
    ours, theirs = scheme(trained.options.scheme), scheme(masks.options.scheme)
    if ours != theirs:
        raise ValueError(
            f"{run}: its masks are {theirs.name} classes, but {_run_folder(trained)} "
            f"was trained on {ours.name}"
        )
    return masks


def _check_out(out: Path, provenance: export.Provenance) -> None:
    """Refuse an output folder holding pairs of another model or recipe (layout, levers, scorer): resuming
    would mix the two."""
    images = sorted((Path(out) / "images").glob("*.tif"))[:1]
    if not images:
        return
    try:
        with rasterio.open(images[0]) as src:
            tags = src.tags()
    except rasterio.RasterioIOError:
        return  # not one of ours to judge; the pair is written again if it is one
    mine = {
        "GEOGAN_CHECKPOINT_SHA256": provenance.checkpoint_sha256,
        "GEOGAN_MASK_CHECKPOINT_SHA256": provenance.mask_checkpoint_sha256 or "",
        "GEOGAN_LAYOUT": provenance.layout or "",
        "GEOGAN_BALANCE": "even" if provenance.balance else "",
        "GEOGAN_BEST_OF": str(provenance.best_of) if provenance.best_of > 1 else "",
        "GEOGAN_SCORER_SHA256": provenance.scorer_sha256 or "",
        "GEOGAN_STYLES": provenance.styles or "",
    }
    for tag, sha in mine.items():
        if tags.get(tag, "") != sha:
            raise ValueError(
                f"{out}: holds pairs made another way ({images[0].name}: {tag.lower()} "
                f"{tags.get(tag, '')[:12] or 'none'}, this run {sha[:12] or 'none'}); generate into a "
                "new folder, or empty this one first (a re-run with the same model and options resumes)"
            )


def _attribution(tiles: Path | None) -> tuple[str, ...]:
    """The training data's attribution, as its tile folder's ``stats.json`` records it."""
    if tiles is None:
        return ()
    try:
        return tuple(json.loads((Path(tiles) / STATS_FILE).read_text()).get("attribution", ()))
    except (TypeError, OSError, ValueError):  # no tile folder, or one from before attributions
        return ()


def _tiles_of(options: GenerateOptions, trained: TrainedGenerator) -> Path | None:
    """The training tiles the synthetic grid is placed beside."""
    tiles = options.tiles or trained.options.tiles
    return Path(tiles) if tiles else None


def _scorer_recipe(options: GenerateOptions, trained: TrainedGenerator) -> scoring.Recipe:
    """What --best-of's segmenter is trained on: the run's real training tiles."""
    tiles = _tiles_of(options, trained)
    if tiles is None or not (tiles / INDEX_FILE).is_file():
        raise FileNotFoundError(
            f"{tiles or _run_folder(trained)}: --best-of trains its scorer on the real training chips; "
            "pass their tile folder with --tiles DIR"
        )
    assert trained.normalizer is not None  # _check_run refuses a run without stats.json
    return scoring.recipe(
        tiles,
        scheme(trained.options.scheme),
        getattr(trained.options, "mask_role", None),
        trained.normalizer.select(S2.band_names),
        options.scorer_steps,
        options.device,
    )


def generate(options: GenerateOptions, client=None) -> GenerateSummary:
    """Sample ``options.n`` pairs from a trained run into ``options.out``; see the module doc."""
    options = options.model_copy(update={"device": check_device(options.device)})
    trained = load_generator(options.run, options.checkpoint, device=options.device)
    _check_run(trained)
    _check_mask_source(options, trained)
    classes = scheme(trained.options.scheme)
    class_min = parse_class_min(options.min_class, classes)
    model = f"{trained.task.name} step {trained.step}"
    mask_model = None
    items: list[MaskFile] = []
    if options.mask_run is not None:
        mask_model = _load_mask_run(options, trained)
        model = f"{mask_model.task.name} step {mask_model.step} + {model}"
    elif options.masks is not None or options.like is not None:
        if options.masks is not None:
            items = mask_files(options.masks)
        else:
            assert options.like is not None  # the elif: --masks or --like
            items = tile_masks(options.like, getattr(trained.options, "mask_role", None), options.like_split)
        items = select_masks(items, classes, class_min)
    plan = _scorer_recipe(options, trained) if options.best_of > 1 else None
    styles = read_styles(options.style_from, trained) if options.style_from is not None else None
    provenance = export.Provenance(
        model=model,
        checkpoint_sha256=trained.sha256,
        scheme=classes,
        mask_checkpoint_sha256=mask_model.sha256 if mask_model is not None else None,
        attribution=_attribution(_tiles_of(options, trained)),
        layout=options.layout if items and options.layout != "as-is" else None,
        balance=options.balance,
        best_of=options.best_of,
        scorer_sha256=plan.fingerprint if plan is not None else None,
        styles=str(options.style_from) if options.style_from is not None else None,
    )
    _check_out(options.out, provenance)  # before the scorer is trained and saved into the folder
    judge = scoring.scorer(plan, Path(options.out) / ".geogan") if plan is not None else None
    provenance = replace(provenance, scorer=judge.description if judge is not None else None)
    draw = drawer(trained, options, judge, styles)
    source = options.masks or options.like
    read: list[Mask] = []
    if items and (options.layout != "as-is" or options.balance):  # the levers look at every mask once
        read = [read_mask(item, classes) for item in items]
    if items and options.layout != "as-is":
        masks = stacked(read, source)
        grid = plan_grid(options, masks.shape[-1], _tiles_of(options, trained))
        summary = GenerateSummary(
            out=options.out,
            grid=f"{grid.crs.to_string()}, {len(grid.transforms)} chips "
            f"({options.layout} of {len(items)} masks)",
        )
        picks = mask_picks(read, options, len(classes))
        batches = layout_batches(trained, items, masks, picks, grid, options, summary, draw)
    elif items:
        summary = GenerateSummary(out=options.out, grid=f"the grids of {len(items)} masks in {source}")
        if options.balance:
            order = mask_picks(read, options, len(classes))[:, 0]
            batches = conditional_batches(trained, items, options, summary, order, read, draw)
        else:
            batches = conditional_batches(trained, items, options, summary, draw=draw)
    else:
        grid = plan_grid(options, trained.data.resolution, _tiles_of(options, trained))
        summary = GenerateSummary(
            out=options.out, grid=f"{grid.crs.to_string()}, {len(grid.transforms)} chips"
        )
        batches = sample_batches(trained, grid, options, summary, mask_model, class_min, draw)
    log.info(
        "read %s (%s); writing %d pairs into %s on %s",
        trained.checkpoint,
        model,
        options.n,
        options.out,
        summary.grid,
    )
    options.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if client is None:
            client = stack.enter_context(cluster.client(options.scheduler, options.workers))
        summary.written = export.write_pairs(options.out, batches, provenance, client, total=options.n)
    log.info("wrote %d pairs, skipped %d already on disk", summary.written, summary.skipped)
    summary.collections = export.write_collections(options.out, provenance)
    return summary
