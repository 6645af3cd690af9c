"""Tile folders of procedural scenes for tests: real GeoTIFFs, tiled by the real tile stage."""

from __future__ import annotations

from pathlib import Path

from distributed import Client

from geogan import sample
from geogan.config import TileOptions
from geogan.tiling import tile


def make_tiles(
    root: Path,
    scenes: int,
    seed: int = 11,
    patches_per_side: int = 2,
    patch_size: int = 64,
    chip: int = 32,
    **options,
) -> Path:
    """``scenes`` procedural scenes of ``patches_per_side``^2 patches, cut into ``chip`` px chips;
    ``options``: more TileOptions (the split's, say)."""
    sample.write_sen12ms(
        root / "src", scenes=scenes, patches_per_side=patches_per_side, patch_size=patch_size, seed=seed
    )
    tile_options = TileOptions(
        sources=[str(root / "src")], out=root / "tiles", size=chip, min_valid=0.0, **options
    )
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        tile(tile_options, client=client, progress=False)
    return root / "tiles"
