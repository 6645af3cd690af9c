"""The training loop on real tile folders (GeoTIFF chips from `geogan tile`), real torch steps on CPU."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from procedural import make_tiles
from typer.testing import CliRunner

from geogan.cli import app
from geogan.datasets import ChipDataset
from geogan.models.msg_stylegan import MSGGenerator
from geogan.models.options import MSGStyleGANOptions
from geogan.training import (
    CheckpointError,
    StepBatchSampler,
    TrainTask,
    checkpoints,
    load_checkpoint,
    load_generator,
    task_class,
    train,
    update_ema,
)

TINY = dict(
    preset="tiny",
    resolution=16,
    # twice the tiny preset's sizes: the fidelity checks below were set at these
    z_dim=32,
    w_dim=32,
    mapping_layers=2,
    channel_base=256,
    channel_max=32,
    batch_size=8,
    split=None,
    log_every=2,
    ema_images=100,
    r1_every=4,
)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    """Two procedural scenes (2 x 2 patches of 64 px) cut into 16 px chips: 128 chips."""
    return make_tiles(tmp_path_factory.mktemp("training"), scenes=2, seed=5, chip=16)


def options(tiles: Path, out: Path, **changes) -> MSGStyleGANOptions:
    return MSGStyleGANOptions(**{**TINY, "tiles": tiles, "out": out, **changes})


def band_error(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> tuple[float, float]:
    """Mean absolute difference over bands of the per-band means and of the per-band stds."""
    return (
        float((images.mean(dim=(0, 2, 3)) - mean).abs().mean()),
        float((images.std(dim=(0, 2, 3)) - std).abs().mean()),
    )


def every_chip(data: ChipDataset) -> torch.Tensor:
    return torch.stack([data[i]["image"] for i in range(len(data))])


def samples(trained) -> torch.Tensor:
    """256 samples of a trained run's generator, from a fixed seed."""
    torch.manual_seed(123)
    with torch.no_grad():
        return trained.sample({"image": torch.zeros(256)})["image"]


def untrained_samples() -> torch.Tensor:
    """256 samples of a freshly built generator of the TINY configuration, from a fixed seed."""
    torch.manual_seed(123)
    with torch.no_grad():
        return MSGGenerator(13, 16, 32, 32, 2, 256, 32)(torch.randn(256, 32))[-1].clamp(-1, 1)


@pytest.fixture(scope="module")
def sixty_steps(tiles, tmp_path_factory) -> dict:
    """A 60-step run; per-band statistics of the tiles, its samples and the untrained generator's."""
    data = ChipDataset(tiles, roles=("s2",))
    real = every_chip(data)
    run = tmp_path_factory.mktemp("sixty") / "run"
    newest = train("msg-stylegan", options(tiles, run, steps=60, sample_every=30, checkpoint_every=30))
    trained = load_generator(run)
    fake, untrained = samples(trained), untrained_samples()
    mean, std = real.mean(dim=(0, 2, 3)), real.std(dim=(0, 2, 3))
    return {
        "run": run,
        "newest": newest,
        "data": data,
        "trained": trained,
        "errors": band_error(fake, mean, std),
        "untrained_errors": band_error(untrained, mean, std),
    }


def test_training_moves_per_band_means_towards_the_tiles(sixty_steps, tiles):
    mean_err, _ = sixty_steps["errors"]
    mean_err0, _ = sixty_steps["untrained_errors"]
    assert mean_err < 0.7 * mean_err0, (mean_err, mean_err0)  # measured: 0.18 vs 0.51

    # The run folder: config, stats to decode samples, checkpoints, PNG grids, CSV + TensorBoard logs.
    run, trained, data = sixty_steps["run"], sixty_steps["trained"], sixty_steps["data"]
    assert sixty_steps["newest"] == run / "checkpoints" / "step-00000060.pt"
    assert trained.step == 60 and trained.normalizer.band_names == data.band_names
    assert len(trained.sha256) == 64
    assert yaml.safe_load((run / "config.yaml").read_text())["task"] == "msg-stylegan"
    assert (run / "stats.json").read_bytes() == (tiles / "stats.json").read_bytes()
    for step in (30, 60):
        for kind in ("true", "false"):
            png = run / "samples" / f"step-{step:08d}-{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(run / "logs" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(2, 61, 2))
    assert {"loss_d", "loss_g", "r1", "d_real", "d_fake", "augment_p"} <= set(rows[0])
    assert all(np.isfinite(float(r["loss_g"])) for r in rows)
    assert list((run / "logs").glob("events.out.tfevents.*"))


def test_training_moves_per_band_stds_towards_the_tiles(sixty_steps):
    # The untrained generator spreads too wide (per-band std 0.63 against the tiles' 0.47, in
    # [-1, 1] units); 60 steps bring it to about 0.49. Measured at seeds 0-3: std error 0.06, 0.14,
    # 0.07, 0.07 against 0.17 untrained. Most of that spread is still within tiles, though: the
    # tiles' std of tile means is 0.40, the samples' 0.23-0.28 (see the 1000-step test below).
    _, std_err = sixty_steps["errors"]
    _, std_err0 = sixty_steps["untrained_errors"]
    assert std_err < 0.9 * std_err0, (std_err, std_err0)


def spread(images: torch.Tensor) -> tuple[float, float]:
    """Mean over bands of the std of tile means (between tiles) and of the mean within-tile std."""
    return float(images.mean(dim=(2, 3)).std(dim=0).mean()), float(images.std(dim=(2, 3)).mean())


@pytest.mark.slow
def test_longer_training_spreads_samples_between_and_within_tiles_as_the_tiles(
    tiles, tmp_path, one_torch_thread
):
    """1000 steps, about 2.5 min on one CPU thread: whole tiles of different land cover appear.

    The tiles' spread is mostly between tiles (0.40, within 0.22). The untrained generator puts it
    within tiles (between 0.33, within 0.51). Measured after 1000 steps: seed 0 between 0.37,
    within 0.17 (at 250/500/750 steps: 0.27/0.30/0.34); seed 1 between 0.38, within 0.21.
    """
    real = every_chip(ChipDataset(tiles, roles=("s2",)))
    between, within = spread(real)
    run = tmp_path / "run"
    train("msg-stylegan", options(tiles, run, steps=1000, sample_every=1000, checkpoint_every=1000))
    fake, untrained = samples(load_generator(run)), untrained_samples()
    fake_between, fake_within = spread(fake)
    assert abs(fake_between - between) < 0.1, (fake_between, between)
    assert abs(fake_within - within) < 0.1, (fake_within, within)
    assert abs(spread(untrained)[1] - within) > 0.2, spread(untrained)  # not there from the start
    mean, std = real.mean(dim=(0, 2, 3)), real.std(dim=(0, 2, 3))
    mean_err, std_err = band_error(fake, mean, std)
    assert mean_err < 0.15 and std_err < 0.1, (mean_err, std_err)  # measured: 0.09, 0.07


def _tensors(state, prefix=""):
    """Flatten a nested checkpoint into {path: tensor or value}."""
    if isinstance(state, dict):
        out = {}
        for k, v in state.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(state, list | tuple):
        out = {}
        for i, v in enumerate(state):
            out.update(_tensors(v, f"{prefix}/{i}"))
        return out
    return {prefix: state}


def test_resume_continues_exactly_as_if_uninterrupted(tiles, tmp_path):
    # ADA on and R1 every 2 steps, so task state and lazy regularisation are part of the check.
    common = dict(checkpoint_every=3, sample_every=100, ada_target=0.6, ada_images=200, r1_every=2)
    # 14 steps cross an epoch boundary (128 chips / 8 = 16 steps would; use batch 16: 8 per epoch).
    whole = train("msg-stylegan", options(tiles, tmp_path / "a", steps=10, batch_size=16, **common))
    train("msg-stylegan", options(tiles, tmp_path / "b", steps=4, batch_size=16, **common))
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        train("msg-stylegan", options(tiles, tmp_path / "b", steps=10, batch_size=16, **common))
    resumed = train(
        "msg-stylegan", options(tiles, tmp_path / "b", steps=10, batch_size=16, **common), resume=True
    )
    a, b = _tensors(load_checkpoint(whole)), _tensors(load_checkpoint(resumed))
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key
    assert load_checkpoint(resumed)["extra"]["ada"]["p"] > 0  # ADA moved p and it was restored
    # The metrics log holds each step once, as the uninterrupted run's does.
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "b" / "logs" / "metrics.csv"))]
    assert steps == [2, 4, 6, 8, 10]
    assert [p.name for p in checkpoints(tmp_path / "b")] == [
        "step-00000006.pt",
        "step-00000009.pt",
        "step-00000010.pt",
    ]


def test_data_order_is_a_function_of_seed_and_step():
    sampler = StepBatchSampler(50, 8, seed=3, start=0, stop=20)
    batches = list(sampler)
    assert batches[9] == list(StepBatchSampler(50, 8, seed=3, start=9, stop=10))[0]
    assert sorted(sum(batches[:6], [])) == sorted(set(sum(batches[:6], [])))  # no repeats in an epoch
    assert batches[:6] != batches[6:12]  # a new permutation each epoch
    assert batches != list(StepBatchSampler(50, 8, seed=4, start=0, stop=20))
    ranks = [StepBatchSampler(50, 8, seed=3, start=0, stop=20, rank=r, world=2).batch(9) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == sorted(batches[9])
    with pytest.raises(ValueError, match="fewer than one batch"):
        StepBatchSampler(5, 8, seed=0, start=0, stop=1)


@pytest.fixture(scope="module")
def trained_run(tiles, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    train("msg-stylegan", options(tiles, run, steps=2, sample_every=100, checkpoint_every=100))
    return run


def test_corrupt_checkpoints_are_clear_errors_naming_the_file(trained_run, tmp_path):
    good = checkpoints(trained_run)[-1]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
            load_generator(trained_run, checkpoint=path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=f"{other}: not a geogan checkpoint"):
        load_checkpoint(other)
    older = tmp_path / "older.pt"
    torch.save({**torch.load(good, weights_only=True), "version": 1}, older)
    with pytest.raises(CheckpointError, match=f"{older}: checkpoint version 1, expected 5: .* train the run"):
        load_checkpoint(older)


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("code ran",))


def test_a_checkpoint_never_runs_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save(
        {"format": "geogan-checkpoint", "payload": Payload()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL
    )
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint") as caught:
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out
    # It says what the file holds, and never passes on torch's advice to load it unsafely.
    message = str(caught.value)
    assert "not only tensors and plain values; geogan loads only those" in message
    assert "weights_only" not in message and "trust" not in message
    torch.save({"format": "geogan-checkpoint", "payload": Payload()}, path)  # the default protocol
    with pytest.raises(CheckpointError, match=r"it holds a reference to print, not only tensors"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_a_checkpoint_of_another_configuration_is_a_clear_error(trained_run, tiles, tmp_path):
    good = checkpoints(trained_run)[-1]
    wider = tmp_path / "wider"
    train("msg-stylegan", options(tiles, wider, steps=1, channel_max=16, sample_every=100))
    with pytest.raises(
        CheckpointError, match=f"{good}: its EMA generator does not fit this model's configuration"
    ):
        load_generator(wider, checkpoint=good)
    # Resuming with changed model settings names the run's config and the settings.
    with pytest.raises(
        ValueError, match=r"config.yaml: resuming with different settings \(channel_max: 32 -> 16"
    ):
        train("msg-stylegan", options(tiles, trained_run, steps=4, channel_max=16), resume=True)
    with pytest.raises(ValueError, match="tiles are 16 px but the model is set to 32 px"):
        train("msg-stylegan", options(tiles, tmp_path / "big", steps=1, resolution=32))


def test_registry_names_the_known_models():
    assert issubclass(task_class("msg-stylegan"), TrainTask)
    with pytest.raises(ValueError, match="unknown model 'gan9000'; models are .*msg-stylegan"):
        task_class("gan9000")


def test_each_registered_model_is_a_train_command_with_options_of_its_own():
    from geogan.config import TrainOptions
    from geogan.models import MODELS

    gan_only = {"lr_g", "lr_d", "betas", "r1_gamma", "r1_every", "augment", "augment_p", "ada_target"}
    assert not gan_only & set(TrainOptions.model_fields)  # the loop's options name no GAN
    runner = CliRunner()
    for name, model in MODELS.items():
        assert issubclass(model.options, TrainOptions) and "tiny" in model.options.presets
        assert set(model.options.presets["tiny"]) <= set(model.options.model_fields)
        shown = runner.invoke(app, ["train", name, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0 and model.summary in shown.output
    assert "r1_gamma" not in MODELS["spade"].options.model_fields  # the dual GAN has no R1 option now
    assert "r1_gamma" in MODELS["msg-stylegan"].options.model_fields


def test_a_preset_sets_the_network_sizes_and_options_given_beside_it_win(tiles, tmp_path):
    from geogan.models.options import SpadeOptions

    tiny = SpadeOptions(preset="tiny", channels=12)
    assert (tiny.channels, tiny.z_dim, tiny.spade_hidden, tiny.d_channels) == (12, 8, 16, 16)
    assert SpadeOptions.model_validate(tiny.model_dump(mode="json")) == tiny  # a run's config reads back
    with pytest.raises(ValueError, match="preset"):
        SpadeOptions(preset="huge")
    run = tmp_path / "preset-run"
    args = ["train", "msg-stylegan", "--tiles", str(tiles), "--out", str(run), "--preset", "tiny"]
    result = CliRunner().invoke(app, [*args, "--w-dim", "8", "--steps", "1", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    options = yaml.safe_load((run / "config.yaml").read_text())["options"]
    assert (options["preset"], options["z_dim"], options["w_dim"], options["channel_max"]) == (
        "tiny",
        16,
        8,
        16,
    )


def test_run_folders_of_older_geogan_with_the_dual_gan_r1_and_ada_options_still_read(tmp_path):
    """Before the options split every run carried R1 and ADA options; the dual GAN's were inert."""
    from geogan.models.options import SpadeOptions
    from geogan.pipeline.runner import decide
    from geogan.pipeline.spec import load
    from geogan.training import CONFIG_FILE, read_run_config

    options = SpadeOptions(preset="tiny", out=tmp_path / "run")
    old = {
        **options.model_dump(mode="json"),
        "r1_gamma": 0.0,
        "r1_every": 16,
        "ada_target": None,
        "ada_images": 7,
    }
    data = {"channels": 13, "band_names": [f"b{i}" for i in range(13)], "num_classes": 17, "resolution": 32}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CONFIG_FILE).write_text(
        yaml.safe_dump({"task": "spade", "data": data, "options": old})
    )
    assert read_run_config(tmp_path / "run")[2] == options
    with pytest.raises(ValueError, match="ada_target"):  # a value that would have meant something: refused
        SpadeOptions.model_validate({**old, "ada_target": 0.6})
    # A pipeline's record of such a run: the stage stays up to date, not retrained.
    spec = tmp_path / "p.yaml"
    spec.write_text(
        "out: out\nsources:\n  a: {kind: procedural, scenes: 1}\n"
        "stages:\n  tile: {size: 32}\n  images: {stage: train, model: spade, preset: tiny}\n"
    )
    stage = load(spec).stages[-1]
    from geogan.pipeline.stages import fingerprinted

    values = fingerprinted(stage)
    record = {"options": {**values, "r1_gamma": 0.0, "r1_every": 16, "ada_target": None}, "status": "done"}
    record.update(inputs={}, outputs="x")
    assert decide(stage, record, values, {}, "x") == ("skip", "up to date")
    record["options"]["ada_target"] = 0.6
    assert decide(stage, record, values, {}, "x")[0] == "reset"
    # SPADE's `unknown` came later and acts on the OASIS discriminator alone: a PatchGAN stage
    # recorded before it stays up to date; an OASIS one, whose discriminator it changes, is retrained.
    assert "unknown" not in values
    oasis = load(spec).stages[-1]
    oasis.options = oasis.options.model_copy(update={"discriminator": "oasis"})
    changed = fingerprinted(oasis)
    assert changed["unknown"] == "learn"
    older = {k: v for k, v in changed.items() if k != "unknown"}
    assert decide(oasis, {**record, "options": older}, changed, {}, "x")[0] == "reset"


def test_bf16_autocast_trains_on_a_cpu_when_asked_for_by_name(tiles, tmp_path, caplog):
    caplog.set_level("INFO", logger="geogan.training")
    path = train("msg-stylegan", options(tiles, tmp_path / "bf16", steps=2, precision="bf16", sample_every=2))
    assert "MixedPrecision" in caplog.text  # Fabric's bf16-mixed: autocast, float32 weights
    trained = load_generator(tmp_path / "bf16")
    assert path.name == "step-00000002.pt" and trained.options.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in trained.generator.parameters())
    image = trained.sample({"image": torch.zeros(2, 13, 16, 16)})["image"]
    assert torch.isfinite(image).all()
    caplog.clear()
    train("msg-stylegan", options(tiles, tmp_path / "auto", steps=1))
    assert "MixedPrecision" not in caplog.text  # auto: float32 on a CPU


def test_cli_trains_resumes_and_reports_bad_options(tiles, tmp_path):
    runner = CliRunner()
    run = tmp_path / "cli-run"
    config = tmp_path / "train.yaml"
    tiny = {k: v for k, v in TINY.items()}
    config.write_text(yaml.safe_dump({**tiny, "sample_every": 2, "checkpoint_every": 2}))
    args = ["train", "msg-stylegan", "--tiles", str(tiles), "--out", str(run), "--config", str(config)]
    result = runner.invoke(app, [*args, "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in checkpoints(run)] == ["step-00000002.pt"]
    # Resume takes the run's own settings; only --steps grows.
    resumed = runner.invoke(
        app, ["train", "msg-stylegan", "--tiles", str(tiles), "--out", str(run), "--steps", "4", "--resume"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert load_generator(run).step == 4
    bad = runner.invoke(app, [*args, "--resolution", "24"])
    assert bad.exit_code == 2
    assert "resolution must be a power of two" in bad.output
    config.write_text("lr_g: 0.001\nlearning_rate: 3\n")
    typo = runner.invoke(app, [*args])
    assert typo.exit_code == 2 and "learning_rate" in typo.output


def test_model_sizes_follow_the_tiles_and_unfit_ones_name_the_option():
    from geogan.models.options import MaskGANOptions, MSGStyleGANOptions, SpadeOptions
    from geogan.training import DataInfo, fit_to_data

    def fitted(options, size):
        return fit_to_data(options, DataInfo(13, tuple(f"b{i}" for i in range(13)), 17, size))

    for size, spade_levels, mask_levels in ((32, 3, 3), (64, 4, 4), (128, 5, 4), (256, 5, 4)):
        spade = fitted(SpadeOptions(), size)
        assert spade.num_up == spade_levels and size // 2**spade.num_up >= 4
        masks = fitted(MaskGANOptions(), size)
        assert (masks.num_up, masks.resolution) == (mask_levels, size)
        assert fitted(MSGStyleGANOptions(), size).resolution == size
    assert fitted(SpadeOptions(num_up=2), 64).num_up == 2  # a given setting stays
    with pytest.raises(ValueError, match=r"^num_up: 5 levels would start the generator at 1 px on 32 px"):
        fitted(SpadeOptions(num_up=5), 32)
    with pytest.raises(ValueError, match=r"at 1.5 px on 48 px tiles.*num_up at most 4"):
        fitted(MaskGANOptions(num_up=5), 48)


def test_ema_moves_parameters_towards_the_model_and_copies_its_buffers():
    """One step of the generator's EMA: parameters lerp by 1 - beta, buffers (batch-norm running
    statistics here) are copied as they are."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    ema = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    model(torch.randn(4, 2, 8, 8))  # moves the model's running statistics
    before = [p.detach().clone() for p in ema.parameters()]
    update_ema(ema, model, beta=0.75)
    for e, b, m in zip(ema.parameters(), before, model.parameters(), strict=True):
        torch.testing.assert_close(e, 0.75 * b + 0.25 * m)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        torch.testing.assert_close(e, m)
    assert model[1].num_batches_tracked.item() == 1 == ema[1].num_batches_tracked.item()
