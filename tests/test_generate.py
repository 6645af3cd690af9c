"""geogan generate: a real tiny trained run sampled into COG files beside (never over) the real chips."""

from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from distributed import Client
from pydantic import ValidationError
from qgis_tools import needs_qgis, run_algorithm, unique_values
from rasterio.transform import array_bounds
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box
from typer.testing import CliRunner

from geogan import sample, scoring
from geogan.bands import S2
from geogan.cli import app
from geogan.config import GenerateOptions, TileOptions
from geogan.export import pair_paths, validate_stac
from geogan.generate import batch_seed, generate, read_styles
from geogan.labels import IGBP, rasterize
from geogan.models.options import MaskGANOptions, MSGStyleGANOptions, SpadeOptions
from geogan.tiles import read_tile_index
from geogan.tiling import tile
from geogan.training import load_generator, train

SIZE = 32
TINY = dict(
    preset="tiny",
    resolution=SIZE,
    batch_size=4,
    split=None,
    log_every=1,
    ema_images=100,
    r1_every=4,
    steps=2,
    sample_every=100,
)


@pytest.fixture(scope="module")
def client():
    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as c:
        yield c


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, client) -> Path:
    """Four 32 px chips (s2, s1, lc) of one procedural scene."""
    root = tmp_path_factory.mktemp("generate")
    sample.write_sen12ms(root / "src", scenes=1, patches_per_side=1, patch_size=64, seed=11)
    tile(
        TileOptions(sources=[str(root / "src")], out=root / "tiles", size=SIZE, min_valid=0.0),
        client=client,
        progress=False,
    )
    return root / "tiles"


@pytest.fixture(scope="module")
def run(tiles) -> Path:
    """A two-step MSG-StyleGAN run on the chips (training tiles kept)."""
    out = tiles.parent / "run"
    train("msg-stylegan", MSGStyleGANOptions(**TINY, tiles=tiles, out=out))
    return out


def options(run: Path, out: Path, **changes) -> GenerateOptions:
    return GenerateOptions(**{"run": run, "n": 5, "out": out, "batch_size": 2, "seed": 3, **changes})


def test_samples_become_cogs_on_a_grid_beside_the_real_chips(run, client, tmp_path):
    out = tmp_path / "out"
    summary = generate(options(run, out), client=client)
    assert (summary.written, summary.skipped) == (5, 0)
    trained = load_generator(run)
    real = read_tile_index(trained.options.tiles)
    real_area = real.union_all()
    for i in range(5):
        image_path, mask_path = pair_paths(out, f"syn_{i:06d}")
        assert cog_validate(str(image_path), quiet=True)[0]
        assert not mask_path.exists()  # MSG-StyleGAN makes images only
        with rasterio.open(image_path) as src:
            assert src.crs.to_string() == real["crs"].iloc[0]
            assert src.res == (10.0, 10.0) and (src.width, src.height) == (SIZE, SIZE)
            assert src.descriptions == S2.band_names and src.overviews(1) == [2]
            assert not box(*src.bounds).intersects(real_area)
            tags = src.tags()
        assert tags["GEOGAN_CHECKPOINT_SHA256"] == trained.sha256
        assert tags["GEOGAN_MODEL"] == "msg-stylegan step 2"
        assert tags["GEOGAN_SEED"] == str(batch_seed(3, i // 2)) and tags["GEOGAN_SYNTHETIC"] == "true"
    assert validate_stac(summary.collections["stac"][0]) == 6
    assert len(gpd.read_file(out / "index.gpkg", layer="pairs")) == 5


def test_written_values_are_the_decoded_model_output_within_1_dn(run, client, tmp_path):
    out = tmp_path / "out"
    generate(options(run, out, n=2), client=client)
    trained = load_generator(run)
    torch.manual_seed(batch_seed(3, 0))
    x = trained.sample({"image": torch.zeros(2, trained.data.channels, SIZE, SIZE)})["image"].numpy()
    normalizer = trained.normalizer.select(S2.band_names)
    for k in range(2):
        with rasterio.open(pair_paths(out, f"syn_{k:06d}")[0]) as src:
            dn = src.read()
        np.testing.assert_array_equal(dn, np.maximum(normalizer.decode(x[k]), 1))
        one_dn = 2.0 / (normalizer.hi - normalizer.lo)  # 1 DN in model units, per band
        error = np.abs(normalizer.encode(dn) - np.clip(x[k], -1, 1))
        assert (error <= one_dn[:, None, None] + 1e-6).all()


def test_a_rerun_writes_only_what_is_missing_and_the_same_values(run, client, tmp_path):
    out = tmp_path / "out"
    generate(options(run, out), client=client)
    lost, _ = pair_paths(out, "syn_000003")
    with rasterio.open(lost) as src:
        before = src.read()
    lost.unlink()  # as if the run had died before writing it
    summary = generate(options(run, out), client=client)
    assert (summary.written, summary.skipped) == (1, 3)  # batch 1 (pairs 2, 3) ran again
    with rasterio.open(lost) as src:
        np.testing.assert_array_equal(src.read(), before)


def test_an_aoi_grid_places_the_chips_over_the_aoi(run, client, tmp_path):
    aoi = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[box(-2.0, 57.0, -1.99, 57.01)], crs="EPSG:4326").to_file(aoi)
    summary = generate(options(run, tmp_path / "out", n=3, grid=aoi, crs="EPSG:32630"), client=client)
    area = gpd.read_file(aoi).to_crs(32630).union_all()
    for i in range(3):
        with rasterio.open(pair_paths(tmp_path / "out", f"syn_{i:06d}")[0]) as src:
            assert src.crs.to_epsg() == 32630
            assert box(*array_bounds(SIZE, SIZE, src.transform)).intersects(area)
    assert summary.grid == "EPSG:32630, 3 chips"


def test_cli_generates_and_reports_a_wrong_run_folder(run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["generate", "--run", str(run), "-n", "2", "--out", str(out), "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").glob("*.tif")) == ["syn_000000.tif", "syn_000001.tif"]
    assert (out / "stac" / "catalog.json").exists()
    bad = runner.invoke(app, ["generate", "--run", str(tmp_path / "nowhere"), "-n", "1", "--out", str(out)])
    message = bad.output.replace("\n", "")
    assert bad.exit_code == 2 and "nowhere/config.yaml: not a geogan run configuration" in message
    lonely = runner.invoke(
        app, ["generate", "--run", str(run), "-n", "1", "--out", str(out), "--crs", "EPSG:32630"]
    )
    assert lonely.exit_code == 2 and "only with grid" in lonely.output.replace("\n", "")


# --- conditional generation: the dual GAN (SPADE images from masks, mask-GAN masks) ----------------

# Smaller than the models' tiny presets: two-step runs whose untrained masks the tests below know.
SPADE_TINY = dict(
    channels=8,
    z_dim=8,
    num_up=3,
    spade_hidden=8,
    d_channels=8,
    d_layers=2,
    num_d=1,
    batch_size=4,
    split=None,
    log_every=1,
    ema_images=100,
    steps=2,
    sample_every=100,
)
MASK_GAN_TINY = dict(
    resolution=SIZE,
    channels=8,
    z_dim=8,
    num_up=3,
    d_channels=8,
    d_layers=2,
    bank_size=16,
    batch_size=4,
    split=None,
    log_every=1,
    ema_images=100,
    steps=2,
    sample_every=100,
)
# Class fractions of the four lc chips (IGBP), sorted by chip id:
# r0-c0 wetlands 0.198; r0-c32 wetlands 0.409, water 0.033; r32-c0 wetlands 0.147;
# r32-c32 wetlands 0.524, water 0.19.
CHIPS = [f"ROIs1158_spring_1_p1-r{r}-c{c}" for r in (0, 32) for c in (0, 32)]


@pytest.fixture(scope="module")
def spade_run(tiles) -> Path:
    """A two-step SPADE run (stage II) on the chips and their lc masks."""
    out = tiles.parent / "spade"
    train("spade", SpadeOptions(**SPADE_TINY, tiles=tiles, out=out))
    return out


@pytest.fixture(scope="module")
def mask_run(tiles) -> Path:
    """A two-step mask-GAN run (stage I) on the lc masks (labelled throughout: unknown fill, so the
    untrained model draws no unlabelled pixels to fail the --min-class checks with)."""
    out = tiles.parent / "mask-gan"
    train("mask-gan", MaskGANOptions(**MASK_GAN_TINY, tiles=tiles, out=out, unknown="fill"))
    return out


def lc_chips(tiles: Path) -> dict[str, Path]:
    index = read_tile_index(tiles)
    lc = index[index["role"] == "lc"]
    return {str(c): tiles / p for c, p in zip(lc["chip"], lc["path"], strict=True)}


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {"crs": src.crs, "transform": src.transform, "tags": src.tags()}


def test_images_from_mask_chips_keep_the_masks_grid_and_name_the_chip(spade_run, tiles, client, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    chips = lc_chips(tiles)
    for path in chips.values():
        shutil.copy(path, masks / path.name)
    out = tmp_path / "out"
    summary = generate(options(spade_run, out, n=6, masks=masks), client=client)  # 6 > 4 masks: cycles
    assert (summary.written, summary.skipped) == (6, 0)
    trained = load_generator(spade_run)
    for i in range(6):
        chip = CHIPS[i % 4]
        image_path, mask_path = pair_paths(out, f"syn_{i:06d}")
        for path in (image_path, mask_path):
            assert cog_validate(str(path), quiet=True)[0], path
        source, real = read(chips[chip])
        image, meta = read(image_path)
        mask, mask_meta = read(mask_path)
        assert meta["crs"] == real["crs"] and meta["transform"] == real["transform"]
        assert mask_meta["crs"] == real["crs"] and mask_meta["transform"] == real["transform"]
        assert meta["tags"]["GEOGAN_SOURCE_CHIP"] == chip == mask_meta["tags"]["GEOGAN_SOURCE_CHIP"]
        assert meta["tags"]["GEOGAN_MODEL"] == "spade step 2"
        assert meta["tags"]["GEOGAN_CHECKPOINT_SHA256"] == trained.sha256
        np.testing.assert_array_equal(mask[0], source[0])  # the conditioning mask, IGBP values
    # The images are the decoded model output for those masks under the batch's seed.
    torch.manual_seed(batch_seed(3, 0))
    batch = torch.from_numpy(np.stack([IGBP.to_index(read(chips[c])[0][0]) for c in CHIPS[:2]]))
    x = trained.sample({"mask": batch})["image"].numpy()
    decode = trained.normalizer.select(S2.band_names).decode
    for k in range(2):
        np.testing.assert_array_equal(
            read(pair_paths(out, f"syn_{k:06d}")[0])[0], np.maximum(decode(x[k]), 1)
        )
    index = gpd.read_file(out / "index.gpkg", layer="pairs")
    assert list(index["source_chip"]) == [CHIPS[i % 4] for i in range(6)]
    assert validate_stac(summary.collections["stac"][0]) == 7


def test_like_takes_the_tile_folders_masks_and_min_class_filters_them(spade_run, tiles, client, tmp_path):
    out = tmp_path / "out"
    summary = generate(
        options(spade_run, out, n=3, like=tiles, min_class={"Permanent Wetlands": 0.4}), client=client
    )
    assert summary.written == 3
    kept = [CHIPS[1], CHIPS[3]]  # the chips with at least 40 % wetlands
    wetlands = IGBP.by_name("Permanent Wetlands").value
    for i in range(3):
        image, meta = read(pair_paths(out, f"syn_{i:06d}")[0])
        mask, _ = read(pair_paths(out, f"syn_{i:06d}")[1])
        assert meta["tags"]["GEOGAN_SOURCE_CHIP"] == kept[i % 2]
        assert (mask[0] == wetlands).mean() >= 0.4
    with pytest.raises(ValueError, match="none of the 4 masks holds Water Bodies >= 30%"):
        generate(options(spade_run, tmp_path / "none", like=tiles, min_class={"17": 0.3}), client=client)
    with pytest.raises(ValueError, match="igbp has no class 'Peat'; its classes are Evergreen"):
        generate(options(spade_run, tmp_path / "none", like=tiles, min_class={"Peat": 0.3}), client=client)


def test_warped_and_balanced_masks_are_new_layouts_on_the_synthetic_grid(spade_run, tiles, client, tmp_path):
    real = {c: IGBP.to_index(read(p)[0][0]) for c, p in lc_chips(tiles).items()}
    out = tmp_path / "out"
    summary = generate(options(spade_run, out, n=8, like=tiles, layout="warp", balance=True), client=client)
    assert summary.written == 8 and "warp of 4 masks" in summary.grid
    footprint = read_tile_index(tiles).union_all()
    counts = np.zeros(len(IGBP))
    for i in range(8):
        image_path, mask_path = pair_paths(out, f"syn_{i:06d}")
        image, meta = read(image_path)
        mask, _ = read(mask_path)
        assert meta["tags"]["GEOGAN_LAYOUT"] == "warp" and meta["tags"]["GEOGAN_BALANCE"] == "even"
        source = meta["tags"]["GEOGAN_SOURCE_CHIP"]
        indices = IGBP.to_index(mask[0])
        assert set(np.unique(indices).tolist()) <= set(np.unique(real[source]).tolist())  # its classes
        assert (indices != real[source]).mean() > 0.2  # but not its layout
        with rasterio.open(image_path) as src:
            assert not box(*src.bounds).intersects(footprint)  # new masks: not over a real chip
        counts += np.bincount(indices[indices >= 0], minlength=len(IGBP))
    # Balanced: the real and synthetic pixels together are nearer an even mix than the real alone.
    before = sum(np.bincount(m[m >= 0], minlength=len(IGBP)) for m in real.values())
    present = before > 0
    even = 1 / present.sum()
    after = before + counts
    assert (
        np.abs(after[present] / after.sum() - even).sum()
        < np.abs(before[present] / before.sum() - even).sum()
    )
    index = gpd.read_file(out / "index.gpkg", layer="pairs")
    assert set(index["layout"]) == {"warp"} and set(index["balance"]) == {"even"}
    # Mosaics: four chips' parts, named; a rerun writes nothing new; another layout is another folder.
    mosaics = tmp_path / "mosaics"
    generate(options(spade_run, mosaics, n=3, like=tiles, layout="mosaic"), client=client)
    _, meta = read(pair_paths(mosaics, "syn_000000")[0])
    assert len(meta["tags"]["GEOGAN_SOURCE_CHIP"].split("+")) == 4
    assert generate(options(spade_run, mosaics, n=3, like=tiles, layout="mosaic"), client=client).skipped == 3
    with pytest.raises(
        ValueError, match="holds pairs made another way .*geogan_layout mosaic, this run warp"
    ):
        generate(options(spade_run, mosaics, n=3, like=tiles, layout="warp"), client=client)
    # The levers need real masks to work from.
    with pytest.raises(ValidationError, match="--layout warp makes its masks from real ones"):
        options(spade_run, tmp_path / "x", layout="warp")
    with pytest.raises(ValidationError, match="--balance makes its masks from real ones: .*, not --mask-run"):
        options(spade_run, tmp_path / "x", balance=True, mask_run=tmp_path)


def test_best_of_keeps_the_candidate_the_scorer_agrees_with_and_records_its_score(
    spade_run, mask_run, tiles, run, client, tmp_path, caplog
):
    out = tmp_path / "out"
    summary = generate(options(spade_run, out, n=4, like=tiles, best_of=3, scorer_steps=3), client=client)
    assert summary.written == 4
    index = gpd.read_file(out / "index.gpkg", layer="pairs").set_index("id")
    trained = load_generator(spade_run)
    plan = scoring.recipe(tiles, IGBP, "lc", trained.normalizer.select(S2.band_names), 3)
    judge = scoring.scorer(plan, out / ".geogan")  # the saved one: same chips, same settings
    assert "4 real training chips" in judge.description and "no held-out chips" in judge.description
    for i in range(4):
        image_path, mask_path = pair_paths(out, f"syn_{i:06d}")
        _, meta = read(image_path)
        tags = meta["tags"]
        assert tags["GEOGAN_BEST_OF"] == "3" and tags["GEOGAN_SCORER"] == judge.description
        assert tags["GEOGAN_SCORER_SHA256"] == plan.fingerprint
        score = float(tags["GEOGAN_AGREEMENT"])
        assert 0 <= score <= 1 and index.loc[f"syn_{i:06d}", "agreement"] == pytest.approx(score, abs=1e-4)
        assert index.loc[f"syn_{i:06d}", "best_of"] == 3
    item = next((out / "stac").rglob("syn_000000.json")).read_text()
    assert '"geogan:best_of": 3' in item and '"geogan:agreement"' in item

    # Pairs 0 and 1 are the best of their masks' candidates: batch 0's draw, made and scored again.
    masks = torch.from_numpy(np.stack([IGBP.to_index(read(p)[0][0]) for p in lc_chips(tiles).values()][:2]))
    torch.manual_seed(batch_seed(3, 0))
    candidates = trained.sample({"mask": masks.repeat(3, 1, 1)})["image"]
    kept, scores, best = scoring.best_of(candidates, masks.repeat(3, 1, 1), 3, judge)
    every = judge.agreement(candidates, masks.repeat(3, 1, 1)).reshape(3, 2)
    np.testing.assert_allclose(scores, every.max(0))
    assert best == list(every.argmax(0))
    decode = trained.normalizer.select(S2.band_names).decode
    for i, b in enumerate(best):
        torch.testing.assert_close(kept[i], candidates[b * 2 + i])
        written = read(pair_paths(out, f"syn_{i:06d}")[0])[0]
        np.testing.assert_array_equal(written, np.maximum(decode(kept[i].numpy()), 1))
        assert float(
            read(pair_paths(out, f"syn_{i:06d}")[0])[1]["tags"]["GEOGAN_AGREEMENT"]
        ) == pytest.approx(scores[i], abs=1e-4)

    # Resumed: nothing written again, the scorer taken from the folder; another K is another recipe.
    caplog.set_level("INFO", logger="geogan.scoring")
    again = generate(options(spade_run, out, n=4, like=tiles, best_of=3, scorer_steps=3), client=client)
    assert again.skipped == 4 and "scorer taken from" in caplog.text
    with pytest.raises(ValueError, match="geogan_best_of 3, this run 2"):
        generate(options(spade_run, out, n=4, like=tiles, best_of=2, scorer_steps=3), client=client)
    # Another scorer (here one of 4 steps) would have chosen other candidates: refused before it is
    # trained, so the folder's scorer and pairs are left as they were.
    saved = {p.name: p.read_bytes() for p in (out / ".geogan").glob("scorer.*")}
    caplog.clear()
    with pytest.raises(ValueError, match=f"geogan_scorer_sha256 {plan.fingerprint[:12]}, this run "):
        generate(options(spade_run, out, n=6, like=tiles, best_of=3, scorer_steps=4), client=client)
    assert "training the scorer" not in caplog.text
    assert {p.name: p.read_bytes() for p in (out / ".geogan").glob("scorer.*")} == saved
    assert not pair_paths(out, "syn_000004")[0].exists()
    # The mask GAN's masks are scored too; an image-only run has no masks to score against.
    made = generate(
        options(spade_run, tmp_path / "gan", n=2, mask_run=mask_run, best_of=2, scorer_steps=3), client=client
    )
    assert (
        made.written == 2
        and "GEOGAN_AGREEMENT" in read(pair_paths(tmp_path / "gan", "syn_000000")[0])[1]["tags"]
    )
    with pytest.raises(ValueError, match="--best-of scores images against their masks; a msg-stylegan run"):
        generate(options(run, tmp_path / "msg", best_of=2), client=client)


def test_styles_from_real_chips_go_through_the_runs_image_encoder(spade_run, tiles, client, tmp_path):
    encoded = tmp_path / "spade-encoder"
    train("spade", SpadeOptions(**SPADE_TINY, tiles=tiles, out=encoded, encoder=True))
    out = tmp_path / "out"
    summary = generate(options(encoded, out, n=4, like=tiles, style_from=tiles), client=client)
    assert summary.written == 4
    trained = load_generator(encoded)
    styles = read_styles(tiles, trained)
    assert styles.chips == sorted(lc_chips(tiles)) and styles.mu.shape == (4, SPADE_TINY["z_dim"])
    # Pair 0 is the decoded image for its mask with the style of the chip drawn under its batch's seed.
    torch.manual_seed(batch_seed(3, 0))
    masks = torch.from_numpy(np.stack([IGBP.to_index(read(p)[0][0]) for p in lc_chips(tiles).values()][:2]))
    z, chips = styles.draw(2)
    x = trained.sample({"mask": masks, "style": z})["image"].numpy()
    decode = trained.normalizer.select(S2.band_names).decode
    image, meta = read(pair_paths(out, "syn_000000")[0])
    np.testing.assert_array_equal(image, np.maximum(decode(x[0]), 1))
    assert meta["tags"]["GEOGAN_STYLE_CHIP"] == chips[0] and meta["tags"]["GEOGAN_STYLES"] == str(tiles)
    index = gpd.read_file(out / "index.gpkg", layer="pairs")
    assert set(index["style_chip"]) <= set(styles.chips) and index["style_chip"].iloc[0] == chips[0]
    # Styles and the scorer together: the kept candidate's style chip is recorded.
    both = generate(
        options(encoded, tmp_path / "both", n=2, like=tiles, style_from=tiles, best_of=2, scorer_steps=2),
        client=client,
    )
    tags = read(pair_paths(tmp_path / "both", "syn_000001")[0])[1]["tags"]
    assert both.written == 2 and tags["GEOGAN_STYLE_CHIP"] in styles.chips and "GEOGAN_AGREEMENT" in tags
    # A run without the encoder has no styles to give.
    with pytest.raises(ValueError, match="--style-from needs a SPADE run trained with its image encoder"):
        generate(options(spade_run, tmp_path / "none", n=2, like=tiles, style_from=tiles), client=client)


def test_rasterised_polygons_condition_the_images_and_nodata_stays_nodata(spade_run, tiles, client, tmp_path):
    copy = tmp_path / "tiles"
    shutil.copytree(tiles, copy)
    with rasterio.open(next(iter(lc_chips(tiles).values()))) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    polygons = tmp_path / "fields.gpkg"
    field = box(left, bottom, (left + right) / 2, top)  # the western half of one chip
    gpd.GeoDataFrame({"landcover": ["Croplands"]}, geometry=[field], crs=crs).to_file(polygons)
    rasterize(polygons, copy, "landcover")
    out = tmp_path / "out"
    generate(options(spade_run, out, n=4, masks=copy / "ROIs1158_spring" / "mask_1"), client=client)
    image, meta = read(pair_paths(out, "syn_000000")[0])
    mask, _ = read(pair_paths(out, "syn_000000")[1])
    assert meta["tags"]["GEOGAN_SOURCE_CHIP"] == CHIPS[0]
    assert set(np.unique(mask[0]).tolist()) == {0, 12}  # croplands, nodata outside the polygon
    assert (image > 0).all()  # the image is whole: land under the unlabelled pixels too
    # A mask chip of another scheme with no mapping to the run's is refused by name.
    dfc = tmp_path / "dfc"
    rasterize(polygons, shutil.copytree(tiles, dfc / "tiles"), "landcover", scheme="dfc2020")
    with pytest.raises(ValueError, match="mask_1_p1-r0-c0.tif: holds dfc2020 classes; no mapping"):
        generate(
            options(spade_run, tmp_path / "x", n=1, masks=dfc / "tiles" / "ROIs1158_spring" / "mask_1"),
            client=client,
        )


def test_a_mask_run_makes_the_masks_on_the_synthetic_grid(spade_run, mask_run, client, tmp_path):
    out = tmp_path / "out"
    summary = generate(options(spade_run, out, n=4, mask_run=mask_run), client=client)
    assert summary.written == 4
    masks_sha = load_generator(mask_run).sha256
    real = read_tile_index(load_generator(spade_run).options.tiles).union_all()
    for i in range(4):
        image, meta = read(pair_paths(out, f"syn_{i:06d}")[0])
        mask, mask_meta = read(pair_paths(out, f"syn_{i:06d}")[1])
        assert meta["tags"]["GEOGAN_MODEL"] == "mask-gan step 2 + spade step 2"
        assert meta["tags"]["GEOGAN_MASK_CHECKPOINT_SHA256"] == masks_sha
        assert "GEOGAN_SOURCE_CHIP" not in meta["tags"]
        assert set(np.unique(mask).tolist()) <= set(IGBP.values)  # a class everywhere (unknown: fill)
        assert mask_meta["transform"] == meta["transform"]
        with rasterio.open(pair_paths(out, f"syn_{i:06d}")[0]) as src:
            assert not box(*src.bounds).intersects(real)
    assert (out / "masks_EPSG_32630.vrt").exists()
    index = gpd.read_file(out / "index.gpkg", layer="pairs")
    assert set(index["mask_checkpoint_sha256"]) == {masks_sha}


def test_min_class_asks_the_mask_run_for_class_fractions(spade_run, mask_run, client, tmp_path):
    # The two-step mask GAN mostly paints Barren; at least 60 % is asked of every mask.
    out = tmp_path / "out"
    generate(options(spade_run, out, n=4, mask_run=mask_run, min_class={"Barren": 0.6}), client=client)
    barren = IGBP.by_name("Barren").value
    for i in range(4):
        mask, _ = read(pair_paths(out, f"syn_{i:06d}")[1])
        assert (mask[0] == barren).mean() >= 0.6
    # What the model cannot make is refused with the mask GAN's account of it, nothing written.
    with pytest.raises(ValueError, match=r"only 0 of 2 masks reached 'Permanent Snow and Ice' >= 90%"):
        generate(
            options(
                spade_run,
                tmp_path / "snow",
                n=2,
                mask_run=mask_run,
                min_class={"Permanent Snow and Ice": 0.9},
            ),
            client=client,
        )
    assert not list((tmp_path / "snow").glob("images/*.tif"))


def test_runs_and_mask_sources_that_do_not_fit_are_clear_errors(run, spade_run, mask_run, tiles, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="a spade run makes images from masks; give them with --masks DIR"):
        generate(options(spade_run, out))
    with pytest.raises(ValueError, match="a mask-gan run makes masks, not images; pass it as --mask-run"):
        generate(options(mask_run, out, like=tiles))
    with pytest.raises(ValueError, match="a msg-stylegan run makes images without masks; --like needs"):
        generate(options(run, out, like=tiles))
    with pytest.raises(ValueError, match="--min-class needs a conditional run"):
        generate(options(run, out, min_class={"Grasslands": 0.5}))
    with pytest.raises(ValueError, match="--mask-run needs a mask-GAN run .*; this is a msg-stylegan run"):
        generate(options(spade_run, out, mask_run=run))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: holds no mask GeoTIFFs"):
        generate(options(spade_run, out, masks=empty))
    with pytest.raises(ValidationError, match="give one source of masks, not --masks and --like"):
        options(spade_run, out, masks=empty, like=tiles)
    with pytest.raises(ValidationError, match="images from --like keep their masks' georeference"):
        options(spade_run, out, like=tiles, grid=tmp_path / "aoi.gpkg")
    with pytest.raises(ValidationError, match="add up to 1.20 > 1"):
        options(spade_run, out, like=tiles, min_class=["Grasslands=0.6", "Barren=0.6"])
    assert options(spade_run, out, like=tiles, min_class=["Water Bodies=0.25"]).min_class == {
        "Water Bodies": 0.25
    }


def test_cli_generates_from_a_tile_folders_masks(spade_run, tiles, tmp_path):
    out = tmp_path / "cli"
    args = ["generate", "--run", str(spade_run), "-n", "2", "--out", str(out), "--workers", "1"]
    result = CliRunner().invoke(app, [*args, "--like", str(tiles), "--min-class", "Water Bodies=0.1"])
    assert result.exit_code == 0, result.output
    for i in range(2):
        _, meta = read(pair_paths(out, f"syn_{i:06d}")[0])
        assert meta["tags"]["GEOGAN_SOURCE_CHIP"] == CHIPS[3]  # the only chip with >= 10 % water
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code == 2 and "give them with --masks DIR" in bad.output.replace("\n", "")


@needs_qgis
def test_qgis_computes_the_statistics_rasterio_reads_of_a_generated_pair(spade_run, tiles, client, tmp_path):
    out = tmp_path / "out"
    generate(options(spade_run, out, n=1, like=tiles), client=client)
    image_path, mask_path = pair_paths(out, "syn_000000")
    with rasterio.open(image_path) as src:
        nir = src.read(S2.index("B08") + 1, masked=True)  # nodata 0 masked, as QGIS leaves it out
    stats = run_algorithm("native:rasterlayerstatistics", INPUT=image_path, BAND=S2.index("B08") + 1)
    assert (stats["MIN"], stats["MAX"]) == (nir.min(), nir.max())
    assert stats["MEAN"] == pytest.approx(nir.mean()) and stats["STD_DEV"] == pytest.approx(
        nir.std(), rel=1e-3
    )
    with rasterio.open(mask_path) as src:
        mask, crs = src.read(1), src.crs
    report, counts = unique_values(mask_path, tmp_path / "classes.csv")
    assert report["CRS_AUTHID"] == crs.to_string() == "EPSG:32630"
    values, expected = np.unique(mask[mask > 0], return_counts=True)
    assert counts == dict(zip(values.tolist(), expected.tolist(), strict=True))
    assert report["NODATA_PIXEL_COUNT"] == int((mask == 0).sum())
