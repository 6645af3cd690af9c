"""Novelty and privacy: is a synthetic chip a copy of a training chip?

Distance between two chips: the root-mean-square difference of their normalised values ([-1, 1],
the real tiles' ``stats.json``) after both are area-averaged down to ``size`` x ``size`` pixels,
the smallest over the 8 flips and 90 degree rotations of the synthetic chip (a rotated copy is
still a copy). For every synthetic chip, the distance to its nearest real *training* chip; for
every real *held-out* chip (other scenes, never trained on), the same. A synthetic chip nearer to
the training set than every held-out chip is, is flagged as a copy: no real chip from elsewhere is
ever that close, so the generator has most likely reproduced what it saw.

:func:`drop_copies` takes flagged pairs out of a synthetic export folder (see there what it does
to the files).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geogan import export, labels
from geogan.evaluate.data import read_pairs_index
from geogan.files import write_text
from geogan.progress import Progress

log = logging.getLogger(__name__)

DROPPED = "dropped"


def _small(x: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).float()
    if tuple(t.shape[-2:]) != (size, size):
        t = F.adaptive_avg_pool2d(t, size)
    return t


def _views(t: torch.Tensor) -> list[torch.Tensor]:
    """The 8 symmetries of the square applied to (N, C, S, S) chips."""
    out = []
    for k in range(4):
        r = torch.rot90(t, k, dims=(-2, -1))
        out += [r, torch.flip(r, dims=(-1,))]
    return out


def nearest(
    x: np.ndarray, ref: np.ndarray, size: int = 32, symmetries: bool = True, progress: bool = False, what=""
) -> tuple[np.ndarray, np.ndarray]:
    """For each chip of ``x``, the distance to its nearest chip of ``ref`` and that chip's position."""
    r = _small(ref, size).flatten(1).double()  # float64: cdist's matrix-product form cancels in float32
    dims = r.shape[1]
    best = torch.full((len(x),), float("inf"))
    where = torch.zeros(len(x), dtype=torch.long)
    step = 64
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"nearest training chip {what}".strip(), total=len(x))
        for start in range(0, len(x), step):
            chunk = _small(x[start : start + step], size)
            for view in _views(chunk) if symmetries else [chunk]:
                d = torch.cdist(view.flatten(1).double(), r) / dims**0.5
                value, pos = d.float().min(dim=1)
                better = value < best[start : start + step]
                best[start : start + step] = torch.where(better, value, best[start : start + step])
                where[start : start + step] = torch.where(better, pos, where[start : start + step])
            bar.advance(task, len(chunk))
    return best.numpy().astype(np.float64), where.numpy()


@dataclass
class NoveltyResult:
    threshold: float  # the smallest held-out chip's distance to the training set
    synthetic: list[float]
    held_out: list[float]
    nearest_train: list[str]  # id of the nearest training chip of each synthetic chip
    copies: list[dict] = field(default_factory=list)  # {"id", "distance", "nearest"}
    size: int = 32

    def to_dict(self) -> dict:
        d = asdict(self)
        syn, held = np.asarray(self.synthetic), np.asarray(self.held_out)
        d["summary"] = {
            "synthetic_median": float(np.median(syn)),
            "held_out_median": float(np.median(held)),
            "synthetic_min": float(syn.min()),
            "held_out_min": float(held.min()),
            "copies": len(self.copies),
            "copy_fraction": len(self.copies) / len(syn),
        }
        return d


def novelty(
    synthetic_x: np.ndarray,
    synthetic_ids: list[str],
    train_x: np.ndarray,
    train_ids: list[str],
    held_out_x: np.ndarray,
    size: int = 32,
    progress: bool = True,
) -> NoveltyResult:
    """Nearest-training-chip distances of synthetic and held-out chips, and the flagged copies."""
    syn, syn_at = nearest(synthetic_x, train_x, size, progress=progress, what="(synthetic)")
    held, _ = nearest(held_out_x, train_x, size, progress=progress, what="(held-out real)")
    threshold = float(held.min())
    copies = [
        {"id": synthetic_ids[i], "distance": float(syn[i]), "nearest": train_ids[syn_at[i]]}
        for i in np.argsort(syn)
        if syn[i] < threshold
    ]
    log.info(
        "%d of %d synthetic chips are nearer a training chip than any held-out chip", len(copies), len(syn)
    )
    return NoveltyResult(
        threshold=threshold,
        synthetic=syn.tolist(),
        held_out=held.tolist(),
        nearest_train=[train_ids[i] for i in syn_at],
        copies=copies,
        size=size,
    )


def _pair_files(folder: Path, image: str, mask: str) -> list[Path]:
    """Every file of one pair: image and mask GeoTIFFs and their side-cars that exist."""
    files = []
    for rel in (image, mask):
        if not rel:
            continue
        tif = folder / rel
        files += [p for p in (tif, tif.with_suffix(".qml"), Path(f"{tif}.aux.xml")) if p.exists()]
    return files


def drop_copies(folder: str | Path, ids: list[str], scheme: str = "igbp") -> dict:
    """Take the pairs ``ids`` out of synthetic export folder ``folder``; a record of what moved.

    What happens to the files: each pair's image and mask GeoTIFFs and their ``.qml`` /
    ``.tif.aux.xml`` side-cars are *moved* (``os.replace``, one atomic rename each, nothing is
    deleted) into ``folder/dropped/images/`` and ``folder/dropped/masks/``; then ``index.gpkg``,
    the VRT mosaics and the STAC catalogue are rebuilt from the pairs left on disk
    (:func:`geogan.export.write_collections`, each file written to a temporary name and renamed),
    so no collection lists a dropped pair. ``folder/dropped/copies.json`` (written first, atomically)
    lists what was dropped and why; an interrupted drop is finished by running it again. To undo,
    move the files back and rebuild the collections (or rerun ``geogan evaluate`` without
    ``--drop-copies`` after moving them).
    """
    folder = Path(folder)
    if not ids:
        return {"dropped": [], "moved": []}
    index = read_pairs_index(folder)
    rows = index[index["id"].isin(ids)]
    unknown = sorted(set(ids) - set(rows["id"]))
    if unknown:
        raise ValueError(f"{folder / export.INDEX}: lists no pairs {unknown}")
    dropped = folder / DROPPED
    dropped.mkdir(exist_ok=True)
    record_path = dropped / "copies.json"
    previous = json.loads(record_path.read_text()) if record_path.exists() else {"dropped": []}
    record = {
        "dropped": sorted(set(previous["dropped"]) | set(ids)),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "why": "nearer a training chip than any held-out real chip (geogan evaluate --drop-copies)",
    }
    write_text(record_path, json.dumps(record, indent=2))
    moved = []
    for row in rows.itertuples():
        for path in _pair_files(folder, row.image, row.mask if isinstance(row.mask, str) else ""):
            target = dropped / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target.relative_to(folder).as_posix())
    remaining = export.read_records(folder)
    if remaining:
        export.write_collections(folder, _provenance(remaining[0], scheme))
    else:
        log.warning("%s: every pair was dropped; index.gpkg, VRTs and STAC are left as they were", folder)
    log.info("dropped %d pairs from %s (files moved to %s)", len(rows), folder, dropped)
    return {"dropped": sorted(rows["id"]), "moved": moved}


def _provenance(record: export.PairRecord, scheme: str) -> export.Provenance:
    """The provenance of an export folder, read back from one pair's tags."""
    name = scheme
    if record.mask is not None:
        import rasterio

        with rasterio.open(record.mask) as src:
            name = src.tags().get("GEOGAN_SCHEME", scheme)
    try:
        chosen = labels.scheme(name)
    except KeyError:
        chosen = labels.scheme(scheme)
    return export.Provenance(
        model=record.tags.get("GEOGAN_MODEL", ""),
        checkpoint_sha256=record.tags.get("GEOGAN_CHECKPOINT_SHA256", ""),
        scheme=chosen,
    )
