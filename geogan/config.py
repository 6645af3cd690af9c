"""Pydantic models of stage options and pipeline files.

Each stage has one options model here. Its CLI command builds the model from its options and a
pipeline file (``geogan run``) builds the same model from YAML, so the two never drift apart.
Unknown fields are errors, so a typo in a pipeline file is reported, not ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StageOptions(BaseModel):
    """Base of every stage's options: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DemoOptions(StageOptions):
    out: Path = Field(Path("geogan-demo"), description="folder the demo writes into")
    input: Path | None = Field(
        None, description="a SEN12MS-layout folder of real scenes to use instead of procedural ones"
    )
    scenes: int = Field(3, ge=1, le=50, description="procedural scenes to make")
    seed: int = Field(0, description="seed of the procedural scenes")


class TileOptions(StageOptions):
    """``geogan tile``: cut scenes into chips in the SEN12MS layout, with an index and band stats."""

    sources: list[str] = Field(
        ..., min_length=1, description="SEN12MS folders, or s2=PATH / s1=PATH / labels=PATH (globs allowed)"
    )
    out: Path = Field(..., description="folder the chips, index.gpkg and stats.json are written into")
    size: int = Field(256, ge=16, le=4096, description="chip width and height in pixels")
    stride: int | None = Field(None, ge=1, description="pixels between chip origins (default: size)")
    edge: Literal["drop", "pad"] = Field(
        "drop", description="chips that would cross the scene edge: drop them, or pad with nodata"
    )
    min_valid: float = Field(0.9, ge=0.0, le=1.0, description="drop chips with a smaller valid fraction")
    test_fraction: float = Field(0.2, ge=0.0, le=1.0, description="share of scenes in the test split")
    workers: int = Field(2, ge=1, description="Dask worker processes of the local cluster")
    threads: int = Field(1, ge=1, description="threads per Dask worker")
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler to use instead")


class TrainOptions(StageOptions):
    """What every training run shares: data, schedule, optimiser, augmentation, outputs."""

    tiles: Path | None = Field(None, description="tile folder written by `geogan tile`")
    out: Path = Field(Path("geogan-run"), description="run folder: config, checkpoints, samples, logs")
    split: Literal["train", "val", "test"] | None = Field("train", description="tile split to train on")
    roles: tuple[Literal["s2", "s1"], ...] = Field(("s2",), description="rasters stacked as model bands")
    scheme: str = Field("igbp", description="class scheme of the masks (igbp, dfc2020 or a YAML file)")
    steps: int = Field(10_000, ge=1, description="optimiser steps to train for (in total, across resumes)")
    batch_size: int = Field(16, ge=2, description="tiles per step (over all devices)")
    seed: int = Field(0, description="seed of weights, data order, noise and augmentation")
    lr_g: float = Field(0.002, gt=0, description="generator learning rate (Adam)")
    lr_d: float = Field(0.002, gt=0, description="discriminator learning rate (Adam)")
    betas: tuple[float, float] = Field((0.0, 0.99), description="Adam betas")
    r1_gamma: float = Field(10.0, ge=0, description="weight of the R1 gradient penalty on real tiles")
    r1_every: int = Field(16, ge=1, description="lazy regularisation: R1 every this many steps")
    ema_images: int = Field(10_000, ge=1, description="images over which the generator EMA halves")
    augment: tuple[Literal["translation", "cutout", "flip", "rot90"], ...] = Field(
        ("translation", "cutout", "flip", "rot90"),
        description="differentiable augmentations for the discriminator (same on all bands)",
    )
    augment_p: float = Field(1.0, ge=0, le=1, description="probability of each augmentation per tile")
    ada_target: float | None = Field(
        None, gt=0, lt=1, description="adapt augment_p so the mean sign of D(real) meets this (ADA)"
    )
    ada_images: int = Field(100_000, ge=1, description="images over which ADA may move p from 0 to 1")
    sample_every: int = Field(500, ge=1, description="steps between PNG sample grids")
    samples: int = Field(16, ge=1, le=256, description="tiles in each sample grid")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept in the run folder")
    log_every: int = Field(10, ge=1, description="steps between metric log lines (CSV, TensorBoard)")
    devices: int = Field(1, ge=1, description="GPUs to train on (DDP through Lightning Fabric if > 1)")
    precision: Literal["auto", "32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, float32 on CPU"
    )
    workers: int = Field(0, ge=0, description="data-loading worker processes")


class MSGStyleGANOptions(TrainOptions):
    """MSG-StyleGAN: unconditional multi-band tiles, an image out of every generator block."""

    resolution: int = Field(256, ge=8, le=1024, description="tile size in pixels (a power of two)")
    z_dim: int = Field(512, ge=1, description="latent size")
    w_dim: int = Field(512, ge=1, description="style size")
    mapping_layers: int = Field(8, ge=1, description="layers of the mapping network")
    channel_base: int = Field(16_384, ge=1, description="feature maps at resolution r: base / r ...")
    channel_max: int = Field(512, ge=1, description="... capped at this")
    combine: Literal["simple", "lin_cat", "cat_lin"] = Field(
        "cat_lin", description="how the discriminator joins each scale's image to its features (MSG-GAN)"
    )
    mbstd_group: int = Field(4, ge=1, description="group size of the minibatch standard deviation")

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"resolution must be a power of two, got {value}")
        return value


class RasterizeOptions(StageOptions):
    """``geogan labels rasterize``: burn the analyst's polygons onto every chip as mask chips."""

    polygons: Path = Field(..., description="polygon layer: GeoPackage, Shapefile, GeoJSON... in any CRS")
    tiles: Path = Field(..., description="tile folder written by `geogan tile`")
    column: str = Field(..., description="attribute holding each polygon's class (an id or a name)")
    scheme: str = Field("igbp", description="class scheme: igbp, dfc2020 or a YAML file (id, name, colour)")
    background: str | None = Field(
        None, description="class (id or name) of pixels outside every polygon; default 0 = unlabelled"
    )
    all_touched: bool = Field(False, description="burn every pixel a polygon touches, not only centres")
