"""Bad inputs and faults, as a careless or hostile user meets them: a clear error, nothing lost.

``CASES`` is the catalogue: one case a line, run through the real ``geogan`` command in a process
of its own (so a traceback would show): the arguments, the exit status expected, words the message
must hold, and that the folder the case starts from is unchanged afterwards. The tests below it
cover faults that need more set-up: a full disk, a second run into a folder, temporary files.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from procedural import make_tiles
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate

from geogan import export, sample
from geogan.files import DiskFullError, folder_lock, is_temporary, temporary_name
from geogan.labels import DFC2020

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}


def geogan(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geogan", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def tile_src(tiles: Path, out: Path) -> list[str]:
    """``geogan tile`` arguments: the procedural scenes beside ``tiles`` into ``out``, 32 px chips."""
    return [
        "tile",
        str(tiles.parent / "src"),
        "--out",
        str(out),
        "--size",
        "32",
        "--min-valid",
        "0",
        "--workers",
        "1",
    ]


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (what "unchanged" means)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """A tile folder of one procedural scene (16 chips of 32 px), read-only for the cases."""
    return make_tiles(tmp_path_factory.mktemp("bad-inputs"), scenes=1)


# (name, arguments with {tiles} and {tmp}, exit status, words the message holds)
CASES = [
    ("tile: no such source", ["tile", "{tmp}/nope.tif", "--out", "{tmp}/t"], 2, ["nope.tif"]),
    ("tile: bad min-valid", ["tile", "{tiles}", "--out", "{tmp}/t", "--min-valid", "2"], 2, ["--min-valid"]),
    (
        "evaluate: no synthetic folder",
        ["evaluate", "--real", "{tiles}", "--synthetic", "{tmp}/nope", "--out", "{tmp}/r"],
        2,
        ["nope: no such folder (the synthetic pairs folder)"],
    ),
    (
        "generate: no run folder",
        ["generate", "--run", "{tmp}/nope", "-n", "2", "--out", "{tmp}/p"],
        2,
        ["nope"],
    ),
    (
        "rasterize: no tile index",
        ["labels", "rasterize", "{tmp}/p.gpkg", "--tiles", "{tmp}", "--column", "x"],
        2,
        ["no tile index"],
    ),
    (
        "demo: no scenes",
        ["demo", "--out", "{tmp}/demo", "--scenes", "0"],
        2,
        ["--scenes", "greater than or equal to 1"],
    ),
    (
        "tile: scenes smaller than a chip",
        ["tile", "{tiles}/../src", "--out", "{tmp}/t", "--size", "256"],
        2,
        ["no 256 px chip fits in the 4 scene(s) given (the largest is 64 x 64 px)"],
    ),
    (
        "tile: unreachable scheduler",
        ["tile", "{tiles}/../src", "--out", "{tmp}/t", "--size", "32", "--scheduler", "tcp://127.0.0.1:1"],
        2,
        ["cannot reach the Dask scheduler at tcp://127.0.0.1:1"],
    ),
    (
        "generate: not a device",
        ["generate", "--run", "{tmp}/nope", "-n", "2", "--out", "{tmp}/p", "--device", "foo"],
        2,
        ["device 'foo' is not a torch device"],
    ),
    (
        "evaluate: not a device",
        ["evaluate", "--real", "{tiles}", "--synthetic", "{tiles}", "--out", "{tmp}/r", "--device", "gpu"],
        2,
        ["device 'gpu' is not a torch device"],
    ),
    *[
        (f"{stage}: cuda without a GPU", args, 2, ["device 'cuda': this machine has no CUDA GPU"])
        for stage, args in [
            (
                "generate",
                ["generate", "--run", "{tmp}/nope", "-n", "2", "--out", "{tmp}/p", "--device", "cuda"],
            ),
            (
                "evaluate",
                [
                    "evaluate",
                    "--real",
                    "{tiles}",
                    "--synthetic",
                    "{tiles}",
                    "--out",
                    "{tmp}/r",
                    "--device",
                    "cuda",
                ],
            ),
        ]
        if not torch.cuda.is_available()
    ],
]


@pytest.mark.parametrize(("name", "args", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_catalogue(name, args, status, words, tiles, tmp_path):
    before = snapshot(tiles)
    result = geogan(*(a.format(tiles=tiles, tmp=tmp_path) for a in args))
    message = " ".join(result.stderr.split())
    assert result.returncode == status, f"{name}: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in message, f"{name}: {word!r} not in {message[-1000:]}"
    assert snapshot(tiles) == before


def test_tile_removes_only_its_own_temporaries(tiles, tmp_path):
    """A re-run sweeps what a killed run of geogan left, and nothing a user put in the folder."""
    out = tmp_path / "tiles"
    result = geogan(*tile_src(tiles, out))
    assert result.returncode == 0, result.stderr
    chip = next(out.rglob("*.tif"))
    theirs = [out / "notes" / ".draft.tmp", out / ".index.tmp.gpkg", chip.parent / f".{chip.name}.tmp"]
    ours = temporary_name(chip)
    for path in (*theirs, ours):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    result = geogan(*tile_src(tiles, out))
    assert result.returncode == 0, result.stderr
    assert all(p.read_bytes() == b"half a file" for p in theirs)
    assert not ours.exists() and is_temporary(ours) and not any(is_temporary(p) for p in theirs)


def test_a_second_tile_run_into_the_folder_stops_naming_the_holder(tiles, tmp_path):
    out = tmp_path / "tiles"
    out.mkdir()
    with folder_lock(out / ".geogan" / "lock", f"{out}: geogan tile into this folder"):
        blocked = geogan("tile", str(tiles.parent / "src"), "--out", str(out), "--workers", "1")
    assert blocked.returncode == 3, blocked.stderr
    message = " ".join(blocked.stderr.split())
    assert f"is already running (pid {os.getpid()} on" in message and "Traceback" not in blocked.stderr
    assert not (out / "index.gpkg").exists()  # the refused run wrote nothing
    again = geogan(*tile_src(tiles, out))
    assert again.returncode == 0, again.stderr


def test_two_tile_runs_at_once_end_with_one_whole_folder(tiles, tmp_path):
    out = tmp_path / "tiles"
    args = [
        sys.executable,
        "-m",
        "geogan",
        *tile_src(tiles, out),
    ]
    procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 3]), results  # the second waits its turn or is refused, never both run
    frame = gpd.read_file(out / "index.gpkg", layer="tiles")
    assert (frame["role"] == "s2").sum() == 16 and all((out / p).exists() for p in frame["path"])
    assert not [p for p in out.rglob("*") if is_temporary(p)]


def _tmpfs(mount: Path, options: str):
    """A tmpfs mounted on ``mount`` for the test (needs root); skipped, with why, where it cannot be."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(
            f"cannot mount a tmpfs ({options}) here ({done.stderr.decode().strip() or 'mount failed'})"
        )
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB tmpfs mounted for the test (needs root); skipped, with why, where it cannot be."""
    mount = tmp_path / "small"
    mount.mkdir()
    yield from _tmpfs(mount, "size=300k")


def _pair(i: int, size: int = 96) -> export.Pair:
    rng = np.random.default_rng(i)
    image = rng.integers(1, 10_000, (13, size, size)).astype(np.uint16)  # noise: it does not compress
    mask = rng.integers(1, 3, (size, size)).astype(np.uint8)
    return export.Pair(f"syn_{i:06d}", image, mask, sample.CRS_DEMO, Affine(10.0, 0, 0, 0, -10.0, 0), seed=i)


def test_a_full_disk_is_a_clear_error_and_keeps_what_was_written(small_disk):
    provenance = export.Provenance(model="test", checkpoint_sha256="0" * 64, scheme=DFC2020)
    out = small_disk / "pairs"
    written = []
    with pytest.raises(DiskFullError) as caught:
        for i in range(50):
            export.write_pair(out, _pair(i), provenance)
            written.append(i)
    message = str(caught.value)
    assert message.startswith(f"{out}/") and "no space left on the disk" in message and "bytes of" in message
    assert written, "the disk filled before the first pair: make the tmpfs larger"
    failed = f"syn_{len(written):06d}"
    assert not export.pair_written(out, failed)
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    for i in written:  # every pair written before the disk filled is whole
        image, mask = export.pair_paths(out, f"syn_{i:06d}")
        assert cog_validate(str(image), quiet=True)[0]
        with rasterio.open(image) as src:
            np.testing.assert_array_equal(src.read(), np.maximum(_pair(i).image, 1))


def test_tile_onto_a_full_disk_exits_1_without_a_traceback(small_disk, tiles):
    out = small_disk / "tiles"
    result = geogan(*tile_src(tiles, out))
    message = " ".join(result.stderr.split())
    assert result.returncode == 1, result.stderr[-3000:]
    assert "no space left on the disk" in message and str(out) in message and "Traceback" not in result.stderr
    assert not [p for p in out.rglob("*") if is_temporary(p)]


@pytest.fixture(scope="module")
def spade_run(tiles, tmp_path_factory) -> Path:
    """A SPADE run of two steps on the tiles (small networks)."""
    root = tmp_path_factory.mktemp("spade-run")
    config = root / "tiny.yaml"
    config.write_text("channels: 4\nz_dim: 4\nspade_hidden: 4\nd_channels: 4\nsample_every: 100\n")
    result = geogan(
        "train",
        "spade",
        "--tiles",
        str(tiles),
        "--out",
        str(root / "run"),
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--config",
        str(config),
    )
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_generate_onto_a_full_disk_exits_1_and_resumes_once_there_is_room(small_disk, spade_run, tiles):
    out = small_disk / "pairs"
    args = [
        "generate",
        "--run",
        str(spade_run),
        "-n",
        "40",
        "--out",
        str(out),
        "--like",
        str(tiles),
        "--like-split",
        "all",
        "--workers",
        "1",
    ]
    full = geogan(*args)
    message = " ".join(full.stderr.split())
    assert full.returncode == 1, full.stderr[-3000:]
    assert "no space left on the disk" in message and "Traceback" not in full.stderr
    assert not [p for p in out.rglob("*") if is_temporary(p)]
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    again = geogan(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    images = sorted((out / "images").glob("*.tif"))
    assert len(images) == 40 and all(cog_validate(str(p), quiet=True)[0] for p in images)


@pytest.mark.parametrize(
    ("where", "name"),
    [("stages", "../../x"), ("stages", ".geogan-pipeline"), ("stages", "a/b"), ("sources", "../up")],
)
def test_pipeline_names_that_are_not_plain_folder_names_are_refused(tmp_path, where, name):
    stage = (
        f'  "{name}":\n    stage: tile\n    size: 32\n' if where == "stages" else "  tile:\n    size: 32\n"
    )
    source = f'  "{name}":\n' if where == "sources" else "  scenes:\n"
    text = (
        f"name: bad\nout: out\nsources:\n{source}    kind: procedural\n    scenes: 1\n"
        f"    patches_per_side: 1\n    patch_size: 64\nstages:\n{stage}"
    )
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    result = geogan("run", str(file))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"{file}:" in message and "cannot be a stage or source name" in message and "Traceback" not in message
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing written, not even out/


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_evaluate_with_a_corrupt_or_crafted_encoder_trains_a_new_one(spade_run, tiles, tmp_path):
    pairs, report = tmp_path / "pairs", tmp_path / "report"
    made = geogan(
        "generate",
        "--run",
        str(spade_run),
        "-n",
        "4",
        "--out",
        str(pairs),
        "--like",
        str(tiles),
        "--workers",
        "1",
    )
    assert made.returncode == 0, made.stderr
    args = [
        "evaluate",
        "--real",
        str(tiles),
        "--synthetic",
        str(pairs),
        "--out",
        str(report),
        "--encoder-steps",
        "2",
    ]
    assert geogan(*args).returncode == 0
    for bad in (b"not a torch file", None):
        if bad is None:
            torch.save({"payload": Payload()}, report / "encoder.pt")
        else:
            (report / "encoder.pt").write_bytes(bad)
        again = geogan(*args)
        message = " ".join(again.stderr.split())
        assert again.returncode == 0, again.stderr[-2000:]
        assert "encoder.pt: not used, trained again" in message and "code ran" not in again.stdout
        assert "Traceback" not in again.stderr and "weights_only" not in message
        torch.load(report / "encoder.pt", weights_only=True)  # written over with a good one


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> Path:
    """Small GeoTIFFs for the scene checks: a good S2, and S2 and label rasters each wrong one way."""
    root = tmp_path_factory.mktemp("rasters")
    rng = np.random.default_rng(0)
    north_up = Affine(10.0, 0, 500_000, 0, -10.0, 5_800_000)
    rotated = Affine(9.0, 2.0, 500_000, 2.0, -9.0, 5_800_000)

    def write(name, data, transform=north_up):
        with rasterio.open(
            root / name,
            "w",
            driver="GTiff",
            width=64,
            height=64,
            count=data.shape[0],
            dtype=data.dtype,
            crs="EPSG:32633",
            transform=transform,
        ) as dst:
            dst.write(data)

    s2 = rng.integers(1, 10_000, (13, 64, 64)).astype(np.uint16)
    write("s2.tif", s2)
    write("s2_rotated.tif", s2, rotated)
    write("s2_float.tif", (s2 / 10_000).astype(np.float32))
    write("labels_300.tif", rng.integers(0, 301, (1, 64, 64)).astype(np.uint16))
    write("labels_negative.tif", rng.integers(-5, 10, (1, 64, 64)).astype(np.int16))
    with rasterio.open(
        root / "s2_whole.tif",
        "w",
        driver="GTiff",
        width=256,
        height=256,
        count=13,
        dtype="uint16",
        crs="EPSG:32633",
        transform=north_up,
        tiled=True,
        compress="zstd",
    ) as dst:
        dst.write(rng.integers(1, 10_000, (13, 256, 256)).astype(np.uint16))
    whole = (root / "s2_whole.tif").read_bytes()
    (root / "s2_truncated.tif").write_bytes(whole[: len(whole) // 2])
    (root / "s2_whole.tif").unlink()
    return root


SCENE_CASES = [
    ("rotated grid", ["s2={r}/s2_rotated.tif"], ["s2_rotated.tif: its grid is rotated or sheared"]),
    (
        "truncated file",
        ["s2={r}/s2_truncated.tif"],
        ["s2_truncated.tif: cannot read window", "the file is truncated or damaged"],
    ),
    ("float S2", ["s2={r}/s2_float.tif"], ["s2_float.tif: S2 must be L1C digital numbers", "float32"]),
    (
        "labels above 255",
        ["s2={r}/s2.tif", "labels={r}/labels_300.tif"],
        ["labels_300.tif: label values must be class values 0..255", "holds 0..300"],
    ),
    (
        "negative labels",
        ["s2={r}/s2.tif", "labels={r}/labels_negative.tif"],
        ["labels_negative.tif: label values must be class values 0..255", "holds -5.."],
    ),
]


@pytest.mark.parametrize(("name", "sources", "words"), SCENE_CASES, ids=[c[0] for c in SCENE_CASES])
def test_scenes_that_cannot_be_tiled_right_are_refused_by_name(rasters, tmp_path, name, sources, words):
    before = snapshot(rasters)
    result = geogan(
        "tile",
        *(s.format(r=rasters) for s in sources),
        "--out",
        str(tmp_path / "t"),
        "--size",
        "32",
        "--workers",
        "1",
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert all(word in message for word in words), message[-1500:]
    assert snapshot(rasters) == before  # no .aux.xml or anything else beside the user's rasters


def test_one_geotiff_given_twice_is_refused(rasters, tmp_path):
    result = geogan(
        "tile",
        f"s2={rasters}/s2.tif",
        f"s2={rasters}/../{rasters.name}/s2.tif",
        "--out",
        str(tmp_path / "t"),
        "--size",
        "32",
        "--workers",
        "1",
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "given twice as an s2 scene" in message, result.stderr[-2000:]
    assert not (tmp_path / "t" / "index.gpkg").exists()


CONFIG_CASES = [
    ("steps: [unclosed\n", "not valid YAML"),
    ("channels: many\n", "channels: Input should be a valid integer"),
    ("- a list\n", "expected a mapping of option: value"),
]


@pytest.mark.parametrize(("text", "words"), CONFIG_CASES)
def test_train_config_errors_name_the_file(tiles, tmp_path, text, words):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = geogan(
        "train", "spade", "--tiles", str(tiles), "--out", str(tmp_path / "run"), "--config", str(config)
    )
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{config}: {words}" in message, message[-1000:]
    assert not (tmp_path / "run").exists()


def test_generate_into_a_folder_of_another_models_pairs_is_refused(spade_run, tiles, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text("channels: 4\nz_dim: 4\nspade_hidden: 4\nd_channels: 4\nsample_every: 100\n")
    other = tmp_path / "other"
    trained = geogan(
        "train",
        "spade",
        "--tiles",
        str(tiles),
        "--out",
        str(other),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--config",
        str(config),
        "--seed",
        "1",
    )
    assert trained.returncode == 0, trained.stderr
    out = tmp_path / "pairs"
    args = ["-n", "2", "--out", str(out), "--like", str(tiles), "--workers", "1"]
    assert geogan("generate", "--run", str(spade_run), *args).returncode == 0
    before = snapshot(out)
    mixed = geogan("generate", "--run", str(other), *args[:1], "3", *args[2:])
    message = " ".join(mixed.stderr.split())
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr, mixed.stderr[-2000:]
    assert f"{out}: holds pairs made another way (syn_000000.tif: geogan_checkpoint_sha256" in message
    assert snapshot(out) == before
    again = geogan("generate", "--run", str(spade_run), *args[:1], "3", *args[2:])  # the same model resumes
    assert again.returncode == 0 and len(list((out / "images").glob("*.tif"))) == 3, again.stderr[-2000:]


def test_best_of_and_style_from_say_what_they_lack_and_write_nothing(spade_run, tiles, tmp_path):
    out = tmp_path / "pairs"
    base = ["generate", "--run", str(spade_run), "-n", "2", "--out", str(out), "--like", str(tiles)]
    cases = [
        (["--best-of", "2", "--tiles", str(tmp_path / "nowhere")], "--best-of trains its scorer on the real"),
        (["--style-from", str(tiles)], "--style-from needs a SPADE run trained with its image encoder"),
        (["--best-of", "0"], "--best-of: Input should be greater than or equal to 1"),
    ]
    for extra, words in cases:
        result = geogan(*base, *extra)
        message = " ".join(result.stderr.split())
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert words in message, message[-1000:]
        assert not out.exists()


def test_fetch_stac_never_prints_the_token_of_its_url(tmp_path):
    token = "tok-5e3cret-91"
    result = geogan(
        "fetch",
        "stac",
        "--url",
        f"http://127.0.0.1:1/stac?token={token}",
        "--collection",
        "sentinel-2-l1c",
        "--aoi",
        "13.0,52.0,13.01,52.01",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-30",
        "--out",
        str(tmp_path / "scenes"),
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "http://127.0.0.1:1/stac" in " ".join(result.stderr.split())
    assert token not in result.stderr + result.stdout


def test_evaluate_of_pairs_of_another_size_than_the_chips_says_both_sizes(spade_run, tiles, tmp_path):
    pairs, small = tmp_path / "pairs", tmp_path / "tiles16"
    made = geogan(
        "generate",
        "--run",
        str(spade_run),
        "-n",
        "2",
        "--out",
        str(pairs),
        "--like",
        str(tiles),
        "--workers",
        "1",
    )
    assert made.returncode == 0, made.stderr
    tiled = geogan(
        "tile",
        str(tiles.parent / "src"),
        "--out",
        str(small),
        "--size",
        "16",
        "--min-valid",
        "0",
        "--workers",
        "1",
    )
    assert tiled.returncode == 0, tiled.stderr
    result = geogan("evaluate", "--real", str(small), "--synthetic", str(pairs), "--out", str(tmp_path / "r"))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"{pairs}: the pairs are 32 x 32 px, the real chips of {small} 16 x 16 px" in message


def test_tile_reads_a_list_of_sources_with_spaces_in_their_paths(rasters, tmp_path):
    folder = tmp_path / "my scenes"
    folder.mkdir()
    (folder / "s2 scene.tif").write_bytes((rasters / "s2.tif").read_bytes())
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# fetched\ns2={folder / 's2 scene.tif'}\n\n")
    out = tmp_path / "tiles"
    result = geogan("tile", f"@{listing}", "--out", str(out), "--size", "32", "--workers", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (gpd.read_file(out / "index.gpkg", layer="tiles")["role"] == "s2").sum() == 4
    missing = geogan("tile", f"@{tmp_path / 'nope.txt'}", "--out", str(out), "--workers", "1")
    message = " ".join(missing.stderr.split())
    assert missing.returncode == 2 and "nope.txt: cannot read this list of sources" in message


def _consistent(out: Path) -> set[str]:
    """The scenes of the folder's index, once its files, index and statistics are checked to agree."""
    index = gpd.read_file(out / "index.gpkg", layer="tiles")
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.tif") if ".geogan" not in p.parts}
    assert set(index["path"]) == on_disk
    stats = json.loads((out / "stats.json").read_text())
    assert stats["roles"]["s2"]["count"][0] > 0
    return set(index["scene"])


def test_a_second_run_into_a_used_folder_refuses_adds_or_replaces_explicitly(rasters, tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.tif").write_bytes((rasters / "s2.tif").read_bytes())
    out = tmp_path / "tiles"

    def run(*args):
        return geogan("tile", *args, "--out", str(out), "--size", "32", "--workers", "1")

    assert run(f"s2={tmp_path / 'a.tif'}").returncode == 0
    first = _consistent(out)
    before = snapshot(out)
    refused = run(f"s2={tmp_path / 'b.tif'}")
    message = " ".join(refused.stderr.split())
    assert refused.returncode == 2 and "scenes this run does not name (a)" in message, refused.stderr[-2000:]
    assert "existing add or replace" in message and snapshot(out) == before
    resized = geogan("tile", f"s2={tmp_path / 'a.tif'}", "--out", str(out), "--size", "16", "--workers", "1")
    assert resized.returncode == 2 and "'size': 32" in " ".join(resized.stderr.split())
    added = run(f"s2={tmp_path / 'b.tif'}", "--existing", "add")
    assert added.returncode == 0, added.stderr[-2000:]
    assert _consistent(out) == first | {"b"} and len(first) == 1
    replaced = run(f"s2={tmp_path / 'b.tif'}", "--existing", "replace")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert _consistent(out) == {"b"}


def test_a_rerun_that_keeps_nothing_leaves_the_folder_as_it_was(rasters, tmp_path):
    scene = tmp_path / "a.tif"
    scene.write_bytes((rasters / "s2.tif").read_bytes())
    out = tmp_path / "tiles"
    args = ["tile", f"s2={scene}", "--out", str(out), "--size", "32", "--workers", "1"]
    assert geogan(*args).returncode == 0
    outputs = {n: (out / n).read_bytes() for n in ("index.gpkg", "stats.json", "split.json")}
    scene.write_bytes(scene.read_bytes()[:2000])  # the scene is now broken
    failed = geogan(*args)
    assert failed.returncode == 1 and "no chips kept" in " ".join(failed.stderr.split()), failed.stderr[
        -2000:
    ]
    assert {n: (out / n).read_bytes() for n in outputs} == outputs


def test_a_rerun_that_drops_chips_removes_their_files(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 10_000, (13, 64, 64)).astype(np.uint16)
    data[:, :32, :32] = 0  # one chip of four is all nodata
    data[:, 32:, :32][:, :, :16] = 0  # one chip half nodata
    profile = dict(driver="GTiff", width=64, height=64, count=13, dtype="uint16", crs="EPSG:32633", nodata=0)
    transform = Affine(10, 0, 5e5, 0, -10, 5.8e6)
    with rasterio.open(tmp_path / "a.tif", "w", transform=transform, **profile) as dst:
        dst.write(data)
    out = tmp_path / "tiles"
    args = ["tile", f"s2={tmp_path / 'a.tif'}", "--out", str(out), "--size", "32", "--workers", "1"]
    assert geogan(*args, "--min-valid", "0.4").returncode == 0
    assert len(list(out.rglob("*_s2_*.tif"))) == 3
    _consistent(out)
    assert geogan(*args, "--min-valid", "0.9").returncode == 0
    assert len(list(out.rglob("*_s2_*.tif"))) == 2
    _consistent(out)


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A read-only tmpfs (needs root: root may write anywhere else); skipped, with why, where it cannot be."""
    yield from _tmpfs(tmp_path_factory.mktemp("read-only"), "size=1m,ro")


PIPELINE = Path(__file__).parents[1] / "pipeline" / "demo.yaml"
READ_ONLY = [  # (command, its arguments with {ro}, {tiles} and {run}): each told to write into {ro}
    ("run", ["run", str(PIPELINE), "--out", "{ro}"]),
    ("run, a new folder", ["run", str(PIPELINE), "--out", "{ro}/new"]),
    ("tile", ["tile", "{tiles}/../src", "--out", "{ro}/t", "--size", "32", "--workers", "1"]),
    ("train", ["train", "spade", "--tiles", "{tiles}", "--out", "{ro}/r", "--steps", "1"]),
    (
        "generate",
        ["generate", "--run", "{run}", "-n", "2", "--out", "{ro}/g", "--like", "{tiles}", "--workers", "1"],
    ),
    ("evaluate", ["evaluate", "--real", "{tiles}", "--synthetic", "{tiles}", "--out", "{ro}/e"]),
    ("demo", ["demo", "--procedural", "--out", "{ro}/d"]),
]


@pytest.mark.parametrize(("name", "args"), READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_a_read_only_output_folder_is_a_clear_error(name, args, read_only, tiles, spade_run):
    """Every command told to write where it may not: exit 2 naming the folder, no traceback."""
    before = snapshot(tiles)
    result = geogan(*(a.format(ro=read_only, tiles=tiles, run=spade_run) for a in args))
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, f"{name}: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
    assert f"{read_only}" in message and "cannot write here (Read-only file system)" in message, message[
        -800:
    ]
    assert snapshot(tiles) == before and not list(read_only.iterdir())
