"""The training loop every generative model shares.

A model plugs in as a :class:`TrainTask` (how to build its modules and optimisers, one training
step, how to draw sample tiles) registered by name in :data:`geogan.models.MODELS`. The loop owns
the rest:

* the run folder (``config.yaml``, ``stats.json``, ``checkpoints/``, ``samples/``, ``logs/``);
* the device (CUDA with bf16 autocast where present, else CPU; several GPUs through DDP in
  Lightning Fabric);
* the data order, a function of the seed and the epoch, so a resumed run sees the same batches;
* an exponential moving average (EMA) of the generator, which is what samples and exports use;
* checkpoints (modules, optimisers, EMA, step, task state, every RNG state) written atomically
  with ``torch.save`` and read with ``torch.load(weights_only=True)``: a checkpoint never runs code;
* metrics to TensorBoard event files and ``logs/metrics.csv``; PNG sample grids in true colour
  (B4/B3/B2) and false colour (B8/B4/B3) with a percentile stretch.

Run folder::

    RUN/config.yaml                 task, data description and every option of the run
    RUN/stats.json                  the tiles' normaliser statistics (to decode samples)
    RUN/checkpoints/step-00001000.pt
    RUN/samples/step-00001000-true.png, -false.png (and -mask.png for conditional models)
    RUN/logs/metrics.csv, events.out.tfevents.*
"""

from __future__ import annotations

import copy
import csv
import hashlib
import importlib
import logging
import pickle
import random
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from geogan.bands import FALSE_COLOUR, S2, TRUE_COLOUR, composite
from geogan.config import TrainOptions
from geogan.errors import InputError
from geogan.files import replacing
from geogan.models import MODELS, Model
from geogan.models.options import DualGANOptions
from geogan.progress import Progress
from geogan.tiles import STATS_FILE

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "geogan-checkpoint"
CHECKPOINT_VERSION = 5  # 2: MSG-StyleGAN skip generator; 3: SPADE group norm + border, mask GAN unknown;
# 4: SPADE noise inputs, class-mean base, bilinear upsampling; 5: SPADE class-mean loss, mask GAN
# bilinear upsampling and divergence condition loss
CONFIG_FILE = "config.yaml"
# Options a resumed run may change: they steer the schedule and the outputs, not the training.
RESUMABLE = frozenset(
    {"tiles", "out", "steps", "sample_every", "checkpoint_every", "keep_checkpoints", "log_every", "workers"}
)
EMA_RAMPUP = 0.05  # early on, the EMA half-life is at most this fraction of the images seen


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its tiles."""

    channels: int
    band_names: tuple[str, ...]
    num_classes: int
    resolution: int


class TrainTask(ABC):
    """One kind of model the loop trains: subclass it and add it to :data:`geogan.models.MODELS`.

    The loop seeds the RNGs, calls :meth:`build`, moves the modules and optimisers onto the
    device (``self.nets`` holds the device-wrapped modules, ``self.optimizers`` the wrapped
    optimisers, ``self.fabric`` the Lightning Fabric), keeps an EMA of
    ``modules[generator_name]`` and calls :meth:`train_step` once per step. Every random draw in
    a step must come from the global torch RNG (the loop saves and restores it on resume).
    """

    name: ClassVar[str]
    generator_name: ClassVar[str] = "generator"
    #: whether :meth:`sample` needs ``batch["mask"]`` (class indices) to make its images
    conditional: ClassVar[bool] = False
    #: what :meth:`sample` returns: ``image`` and/or ``mask``
    outputs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, options: TrainOptions, data: DataInfo) -> None:
        self.options = options
        self.data = data
        self.fabric: Any = None
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    @abstractmethod
    def build(self) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
        """Fresh modules (one of them named ``generator_name``) and their optimisers, on CPU."""

    @abstractmethod
    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        """One optimisation step on ``batch`` (``image``, ``mask``, ``chip``); return metrics.

        Use ``self.fabric.backward(loss)`` rather than ``loss.backward()``.
        """

    @abstractmethod
    def sample(self, generator: nn.Module, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Tiles from ``generator`` for as many items as ``batch`` holds.

        ``batch`` holds real tiles, or what ``generate`` passes: ``image`` (N, C, H, W) whose
        shape gives the number and size of the tiles, ``mask`` (N, H, W) class indices (-1 =
        nodata) for a :attr:`conditional` model, and optionally ``class_min`` ``{class index:
        minimum fraction}`` for a model that makes masks. Returns what :attr:`outputs` names:
        ``"image"`` (N, C, H, W) in [-1, 1] and/or ``"mask"`` (N, H, W) class indices. Called
        without gradients, by the loop's grids and by ``generate``.
        """

    def extra_state(self) -> dict[str, Any]:
        """Task state beyond modules and optimisers to keep in checkpoints (tensors, numbers)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""
        if state:
            raise CheckpointError(f"{type(self).__name__} keeps no extra state, got {sorted(state)}")


def model_entry(name: str) -> Model:
    """The registered model ``name`` (its options class and task)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; models are {', '.join(sorted(MODELS))}") from None


def task_class(name: str) -> type[TrainTask]:
    """The :class:`TrainTask` of model ``name``, imported now (the registry does not import torch)."""
    module, attr = model_entry(name).task.split(":")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------------------------------------
# Data order


class StepBatchSampler(Sampler[list[int]]):
    """Batches of indices for steps ``start`` .. ``stop - 1``, the same whenever they are asked for.

    Epoch ``e`` is a permutation drawn from ``seed`` and ``e`` alone; a step's batch is its slice
    of that permutation (incomplete tails are dropped), and under DDP each rank takes its share of
    it. A run resumed at any step therefore sees the batches the uninterrupted run saw.
    """

    def __init__(
        self, size: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1
    ) -> None:
        if size < batch_size:
            raise ValueError(f"{size} tiles are fewer than one batch of {batch_size}; lower --batch-size")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self.per_epoch = size // batch_size

    def batch(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        full = perm[i * self.batch_size : (i + 1) * self.batch_size]
        return full[self.rank :: self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)


# ---------------------------------------------------------------------------------------------
# RNG state and checkpoints


def rng_state() -> dict[str, Any]:
    """Every RNG state training draws from, as tensors and plain values ``weights_only`` accepts."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos)},
        "numpy_gauss": [int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb") as f:  # a file object: the inner name does not vary
        torch.save(state, f)


def load_checkpoint(path: Path, task: str | None = None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a clear :class:`CheckpointError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise CheckpointError(f"{path}: not a readable checkpoint ({load_error(err)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a geogan checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, expected {CHECKPOINT_VERSION}: "
            "it was written by another geogan release whose models differ; train the run again"
        )
    if task is not None and state.get("task") != task:
        raise CheckpointError(f"{path}: a {state.get('task')!r} checkpoint, not {task!r}")
    return state


def load_error(err: Exception) -> str:
    """What ``torch.load(weights_only=True)`` said about a file, without its advice to load unsafely."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if "weights_only" not in line and "trusted source" not in line]
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        what = f"a reference to {found.group(1)}" if found else "objects"
        return f"it holds {what}, not only tensors and plain values; geogan loads only those"
    return f"{type(err).__name__}: {'; '.join(kept[:3]) or 'unreadable'}"


def _load_module(module: nn.Module, state: Mapping[str, Tensor], path: Path, what: str) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[1:4]) or first[0]
        raise CheckpointError(
            f"{path}: its {what} does not fit this model's configuration ({detail})"
        ) from None


def checkpoints(run: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((run / "checkpoints").glob("step-*.pt"))


# ---------------------------------------------------------------------------------------------
# EMA and pictures


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers are copied."""
    ema_p: list[Tensor] = list(ema.parameters())
    p = list(model.parameters())
    torch._foreach_lerp_(ema_p, [q.detach().to(e.dtype) for q, e in zip(p, ema_p, strict=True)], 1.0 - beta)
    buffers, copies = list(ema.buffers()), list(model.buffers())
    if buffers:
        torch._foreach_copy_(buffers, copies)


def ema_beta(options: TrainOptions, step: int) -> float:
    """Per-step EMA decay: the average halves over ``ema_images``, shorter early in the run."""
    seen = (step + 1) * options.batch_size
    half_life = min(options.ema_images, seen * EMA_RAMPUP)
    return 0.5 ** (options.batch_size / max(half_life, 1e-8))


def _grid(tiles: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Tiles (H, W, 3) in a near-square grid with a white gap."""
    n = len(tiles)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = tiles[0].shape[:2]
    out = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        out[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + c * (w + gap) : gap + c * (w + gap) + w] = (
            tile
        )
    return out


def _write_png(path: Path, picture: np.ndarray) -> None:
    import matplotlib.image

    with replacing(path) as tmp:
        matplotlib.image.imsave(tmp, picture, format="png")


def to_reflectance_dn(images: np.ndarray, normalizer: Any | None) -> np.ndarray:
    """Model tiles (N, C, H, W) in [-1, 1] -> S2 bands in L1C digital numbers (never 0 = nodata);
    without statistics, [-1, 1] onto 1..10000, enough for a stretched picture."""
    from geogan.datasets import Normalizer

    normalizer = normalizer or Normalizer.l1c_range(images.shape[1])
    return np.asarray(normalizer.decode(images))[:, : S2.count]


def write_sample_grids(
    samples_dir: Path, step: int, out: dict[str, Tensor], normalizer: Any | None, scheme: Any | None
) -> list[Path]:
    """PNG grids of sampled tiles: true colour, false colour and (if any) masks.

    With both images and masks (the dual GAN) a ``-pairs`` grid also shows each tile as its
    mask in class colours beside its true and false colour.
    """
    samples_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colour: dict[str, list[np.ndarray]] = {}
    if "image" in out:  # a mask GAN makes masks only
        images = to_reflectance_dn(out["image"].float().cpu().numpy(), normalizer)
        if images.shape[1] == S2.count:
            for label, bands in (("true", TRUE_COLOUR), ("false", FALSE_COLOUR)):
                colour[label] = [composite(x, bands) for x in images]
                path = samples_dir / f"step-{step:08d}-{label}.png"
                _write_png(path, _grid(colour[label]))
                written.append(path)
    if "mask" in out and scheme is not None:
        path = samples_dir / f"step-{step:08d}-mask.png"
        masks = [scheme.colourise(scheme.to_value(m)) for m in out["mask"].cpu().numpy()]
        _write_png(path, _grid(masks))
        written.append(path)
        if colour:
            gap = np.full((masks[0].shape[0], 2, 3), 255, dtype=np.uint8)
            pairs = [
                np.concatenate([m, gap, t, gap, f], axis=1)
                for m, t, f in zip(masks, colour["true"], colour["false"], strict=True)
            ]
            path = samples_dir / f"step-{step:08d}-pairs.png"
            _write_png(path, _grid(pairs, gap=4))
            written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# The run folder


def _config_doc(task: str, data: DataInfo, options: TrainOptions) -> dict[str, Any]:
    return {"task": task, "data": asdict(data), "options": options.model_dump(mode="json")}


def read_run_config(run: Path) -> tuple[type[TrainTask], DataInfo, TrainOptions]:
    """The task class, data description and options a run folder was trained with."""
    path = Path(run) / CONFIG_FILE
    try:
        doc = yaml.safe_load(path.read_text())
        cls = task_class(doc["task"])
        data = DataInfo(**{**doc["data"], "band_names": tuple(doc["data"]["band_names"])})
        options = model_entry(doc["task"]).options.model_validate(doc["options"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a geogan run configuration ({err})") from None
    return cls, data, options


def _check_resumable(run: Path, task: str, data: DataInfo, options: TrainOptions) -> None:
    cls, old_data, old = read_run_config(run)
    path = run / CONFIG_FILE
    if cls.name != task:
        raise ValueError(f"{path}: the run trains {cls.name!r}, not {task!r}")
    if old_data != data:
        raise ValueError(f"{path}: the tiles differ from the run's ({old_data} vs {data})")
    a, b = old.model_dump(), options.model_dump()
    changed = sorted(k for k in a if k not in RESUMABLE and a[k] != b.get(k))
    if changed:
        detail = ", ".join(f"{k}: {a[k]!r} -> {b.get(k)!r}" for k in changed)
        raise ValueError(f"{path}: resuming with different settings ({detail}); use the run's own settings")


def _load_normalizer(path: Path, roles: tuple[str, ...]) -> Any | None:
    if not path.is_file():
        return None
    from geogan.datasets import Normalizer

    return Normalizer.from_stats(path, roles)


def open_tiles(options: TrainOptions) -> Dataset:
    """The training tiles of ``options.tiles`` as a :class:`geogan.datasets.ChipDataset`."""
    if options.tiles is None:
        raise ValueError("no tile folder given (--tiles DIR, written by `geogan tile`)")
    from geogan.datasets import ChipDataset

    return ChipDataset(
        options.tiles,
        split=options.split,
        roles=options.roles,
        scheme=options.scheme,
        mask_role=getattr(options, "mask_role", "lc"),  # the dual GAN's options may pick "mask" chips
    )


def describe(dataset: Dataset) -> DataInfo:
    """The :class:`DataInfo` of a dataset of ``{"image", "mask", "chip"}`` items."""
    image = dataset[0]["image"]
    channels = int(image.shape[0])
    names = getattr(dataset, "band_names", None) or tuple(f"band{i + 1}" for i in range(channels))
    if image.shape[1] != image.shape[2]:
        raise ValueError(f"tiles must be square, got {tuple(image.shape[1:])}")
    return DataInfo(channels, tuple(names), int(getattr(dataset, "num_classes", 0)), int(image.shape[1]))


MIN_START = 2  # px of a generator's first map: batch normalisation needs more than one value a map


def _levels(resolution: int, start: int, most: int) -> int:
    """The most levels (at most ``most``) that halve ``resolution`` into a whole >= ``start`` px."""
    n = 0
    while n < most and resolution % 2 ** (n + 1) == 0 and resolution // 2 ** (n + 1) >= start:
        n += 1
    return n


def default_levels(resolution: int, most: int) -> int:
    """Generator levels that start at 4 px or more (at most ``most``, at least 1)."""
    return max(1, _levels(resolution, 4, most))


def fitted(value: int | None, name: str) -> int:
    """A size option that :func:`fit_to_data` fills when left to the tiles (``None``)."""
    if value is None:
        raise ValueError(f"{name}: not set; fit the options to the tiles first (training.fit_to_data)")
    return value


def fit_to_data(options: TrainOptions, data: DataInfo) -> TrainOptions:
    """Fill the size options left to the data (``resolution``, ``num_up``: None) from the tiles, and
    refuse sizes the tiles cannot take, naming the option."""
    update: dict[str, Any] = {}
    if "resolution" in type(options).model_fields and getattr(options, "resolution", None) is None:
        update["resolution"] = data.resolution
    if isinstance(options, DualGANOptions):
        num_up = options.num_up
        if num_up is None:
            num_up = update["num_up"] = default_levels(data.resolution, options.max_levels)
        start = data.resolution / 2**num_up
        if start < MIN_START or start != int(start):
            most = _levels(data.resolution, MIN_START, 8)
            raise ValueError(
                f"num_up: {num_up} levels would start the generator at {start:g} px on {data.resolution} px "
                f"tiles; it needs a whole number of at least {MIN_START} px (num_up at most {most}, "
                "or leave it out to fit the tiles)"
            )
    return options.model_copy(update=update) if update else options


def check_device(name: str) -> str:
    """``name`` if it is a torch device this machine has (``auto``: cuda where there is one, else cpu);
    ``ValueError`` saying why not."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r}: this machine has no CUDA GPU (use device cpu)")
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif device.type != "cpu":
        raise ValueError(f"device {name!r}: geogan runs on cpu or cuda devices")
    return name


def _fabric(options: TrainOptions):
    from lightning.fabric import Fabric

    cuda = torch.cuda.is_available()
    if options.devices > 1 and not cuda:
        raise ValueError(f"--devices {options.devices} needs CUDA GPUs; none is available")
    # auto: bf16 on CUDA only. On a CPU bf16 autocast is asked for by name: it made steps 11-18 %
    # faster here (benchmarks/train_loop.py), on a CPU without bf16 units it may make them slower.
    bf16 = options.precision == "bf16" or (cuda and options.precision == "auto")
    return Fabric(
        accelerator="cuda" if cuda else "cpu",
        devices=options.devices,
        strategy="ddp" if options.devices > 1 else "auto",
        precision="bf16-mixed" if bf16 else "32-true",
    )


def _metrics_csv(path: Path, start: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    keep = [r for r in rows if int(r["step"]) <= start]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)


class _MetricLog:
    """Metrics to ``logs/metrics.csv`` and TensorBoard event files."""

    def __init__(self, logs: Path, start: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        logs.mkdir(parents=True, exist_ok=True)
        self.csv_path = logs / "metrics.csv"
        _metrics_csv(self.csv_path, start)
        self.writer = SummaryWriter(str(logs), purge_step=start or None)
        self.fields: list[str] | None = None
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                self.fields = next(csv.reader(f), None)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        row = {"step": step, **metrics}
        new = self.fields is None
        if new:
            self.fields = list(row)
        assert self.fields is not None
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# The loop


def _count(dataset: Dataset) -> int:
    return len(cast(Sized, dataset))  # a map-style dataset of tiles has a length


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _run_checkpoints(run: Path, resume: bool) -> list[Path]:
    """The run folder's checkpoints, refusing a fresh run over them and a resume without them."""
    found = checkpoints(run)
    if found and not resume:
        raise ValueError(
            f"{run} already holds checkpoints; pass --resume to continue it or choose another --out"
        )
    if resume and not found:
        raise ValueError(f"{run}: no checkpoint to resume from (looked in {run / 'checkpoints'})")
    return found


def _restore(path: Path, task: str, modules, ema: nn.Module, optimizers, model: TrainTask) -> tuple[int, Any]:
    """Load checkpoint ``path`` into the run's modules, EMA, optimisers and task; (step, RNG state)."""
    state = load_checkpoint(path, task)
    for name, module in modules.items():
        if name not in state["modules"]:
            raise CheckpointError(f"{path}: holds no {name!r} module")
        _load_module(module, state["modules"][name], path, name)
    _load_module(ema, state["ema"], path, "EMA generator")
    for name, opt in optimizers.items():
        try:
            opt.load_state_dict(state["optimizers"][name])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: optimiser {name!r} does not fit ({err})") from None
    model.load_extra_state(state.get("extra", {}))
    log.info("resuming %s from %s (step %d)", task, path, int(state["step"]))
    return int(state["step"]), state["rng"]


def _write_run_folder(run: Path, task: str, data: DataInfo, options: TrainOptions) -> None:
    """``config.yaml`` (task, data, every option) and the tiles' ``stats.json`` into the run folder."""
    run.mkdir(parents=True, exist_ok=True)
    (run / CONFIG_FILE).write_text(yaml.safe_dump(_config_doc(task, data, options), sort_keys=False))
    stats = Path(options.tiles) / STATS_FILE if options.tiles else None
    if stats is not None and stats.is_file():
        shutil.copyfile(stats, run / STATS_FILE)


@dataclass
class _CheckpointWriter:
    """Writes ``checkpoints/step-N.pt`` (on the main process) and keeps the newest few."""

    run: Path
    task: str
    model: TrainTask
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    ema: nn.Module
    keep: int
    main: bool

    def save(self, step: int) -> Path:
        path = self.run / "checkpoints" / f"step-{step:08d}.pt"
        if self.main:
            state = {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "task": self.task,
                "step": step,
                "modules": {n: m.state_dict() for n, m in self.modules.items()},
                "ema": self.ema.state_dict(),
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "extra": self.model.extra_state(),
                "rng": rng_state(),
            }
            save_checkpoint(path, state)
            for old in checkpoints(self.run)[: -self.keep]:
                old.unlink()
            log.info("wrote %s", path)
        return path


def _loaders(dataset: Dataset, options: TrainOptions, fabric: Any, start: int) -> tuple[DataLoader, dict]:
    """The step-seeded training batches from step ``start``, and the fixed tiles of the sample grids."""
    sampler = StepBatchSampler(
        _count(dataset),
        options.batch_size,
        options.seed,
        start,
        options.steps,
        fabric.global_rank,
        fabric.world_size,
    )
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=options.workers,
        pin_memory=fabric.device.type == "cuda",
        generator=torch.Generator().manual_seed(options.seed),  # keeps the global RNG untouched
    )
    first = DataLoader(
        dataset, batch_size=min(options.samples, _count(dataset)), generator=torch.Generator().manual_seed(0)
    )
    fixed = next(iter(first))  # the first tiles, the same in every run; the global RNG is not drawn
    return loader, _to_device(fixed, fabric.device)


def train(
    task: str,
    options: TrainOptions,
    *,
    resume: bool = False,
    dataset: Dataset | None = None,
    console: Console | None = None,
) -> Path:
    """Train model ``task`` as ``options`` say; return the newest checkpoint.

    ``dataset`` (items ``{"image", "mask", "chip"}``) replaces the tiles of ``options.tiles``.
    With ``resume`` the run continues from its newest checkpoint exactly as if uninterrupted;
    without it, a run folder that already holds checkpoints is an error.
    """
    cls, model_options = task_class(task), model_entry(task).options
    if not isinstance(options, model_options):
        options = model_options.model_validate(options.model_dump(exclude_unset=True))
    run = Path(options.out)
    found = _run_checkpoints(run, resume)
    if dataset is None:
        dataset = open_tiles(options)
    data = describe(dataset)
    options = fit_to_data(options, data)
    if resume:
        _check_resumable(run, task, data, options)

    fabric = _fabric(options)
    if options.devices > 1:
        fabric.launch()
    main = fabric.global_rank == 0
    if options.batch_size % fabric.world_size:
        raise ValueError(f"batch size {options.batch_size} does not split over {fabric.world_size} devices")

    # Build on CPU from the seed, so the weights do not depend on the device.
    torch.manual_seed(options.seed)
    np.random.seed(options.seed % 2**32)
    random.seed(options.seed)
    model = cls(options, data)
    modules, optimizers = model.build()
    generator = modules[cls.generator_name]
    ema = copy.deepcopy(generator).eval().requires_grad_(False)
    start, rng = _restore(found[-1], task, modules, ema, optimizers, model) if resume else (0, None)
    if main:
        _write_run_folder(run, task, data, options)
    normalizer = getattr(dataset, "normalizer", None)
    scheme = None
    if data.num_classes:
        from geogan.labels import scheme as load_scheme

        scheme = load_scheme(options.scheme)

    model.fabric = fabric
    model.nets = {name: fabric.setup_module(m) for name, m in modules.items()}
    model.optimizers = {name: fabric.setup_optimizers(o) for name, o in optimizers.items()}
    ema.to(fabric.device)
    loader, fixed = _loaders(dataset, options, fabric, start)
    writer = _CheckpointWriter(run, task, model, modules, optimizers, ema, options.keep_checkpoints, main)
    metric_log = _MetricLog(run / "logs", start) if main else None
    newest = found[-1] if found else None

    def grids(step: int) -> None:
        if not main:
            return
        devices = [fabric.device] if fabric.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(options.seed)
            with fabric.autocast():
                out = model.sample(ema, fixed)
        for path in write_sample_grids(run / "samples", step, out, normalizer, scheme):
            log.debug("wrote %s", path)

    progress = Progress(
        TextColumn(f"train {task}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not main,
    )
    log.info(
        "training %s on %d tiles (%d bands, %d px) on %s, %s, steps %d -> %d, run folder %s",
        task,
        _count(dataset),
        data.channels,
        data.resolution,
        fabric.device,
        type(fabric.strategy.precision).__name__,
        start,
        options.steps,
        run,
    )
    if rng is not None:  # last, so nothing above draws from the restored RNGs
        set_rng_state(rng)
    try:
        with progress:
            bar = progress.add_task(f"train {task}", total=options.steps, completed=start, metrics="")
            for module in modules.values():  # once: the loop never sets eval (samples use the EMA)
                module.train()
            for step, batch in enumerate(loader, start=start):
                metrics = model.train_step(_to_device(batch, fabric.device), step)
                update_ema(ema, generator, ema_beta(options, step))
                done = step + 1
                if metric_log is not None and (done % options.log_every == 0 or done == options.steps):
                    metric_log.write(done, metrics)
                    shown = "  ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:4])
                    progress.update(bar, metrics=shown)
                progress.update(bar, completed=done)
                if done % options.sample_every == 0 or done == options.steps:
                    grids(done)
                if done % options.checkpoint_every == 0 or done == options.steps:
                    newest = writer.save(done)
                    fabric.barrier()
    finally:
        if metric_log is not None:
            metric_log.close()
    if start >= options.steps:
        log.info("%s already trained to step %d; nothing to do", run, start)
    assert newest is not None  # a fresh run writes a checkpoint at its last step
    return newest


# ---------------------------------------------------------------------------------------------
# Using a trained model


@dataclass
class TrainedGenerator:
    """A trained run's EMA generator with what is needed to use it (see :func:`load_generator`)."""

    task: TrainTask
    generator: nn.Module
    options: TrainOptions
    data: DataInfo
    normalizer: Any | None
    checkpoint: Path
    sha256: str
    step: int
    encoder: nn.Module | None = None  # SPADE's image encoder (styles from examples), if it was trained

    @torch.no_grad()
    def sample(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Tiles from the EMA generator (see :meth:`TrainTask.sample`)."""
        return self.task.sample(self.generator, batch)


def load_generator(
    run: str | Path, checkpoint: str | Path | None = None, device: str = "cpu"
) -> TrainedGenerator:
    """The EMA generator of run folder ``run`` (its newest checkpoint unless ``checkpoint``)."""
    run = Path(run)
    cls, data, options = read_run_config(run)
    if checkpoint is None:
        found = checkpoints(run)
        if not found:
            raise CheckpointError(f"{run}: no checkpoints in {run / 'checkpoints'}")
        checkpoint = found[-1]
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint, cls.name)
    task = cls(options, data)
    torch.manual_seed(options.seed)
    modules = task.build()[0]
    generator = modules[cls.generator_name]
    _load_module(generator, state["ema"], checkpoint, "EMA generator")
    generator.to(device).eval().requires_grad_(False)
    encoder = modules.get("encoder")
    if encoder is not None:
        _load_module(encoder, state["modules"]["encoder"], checkpoint, "image encoder")
        encoder.to(device).eval().requires_grad_(False)
    return TrainedGenerator(
        task=task,
        generator=generator,
        options=options,
        data=data,
        normalizer=_load_normalizer(run / STATS_FILE, options.roles),
        checkpoint=checkpoint,
        sha256=sha256(checkpoint),
        step=int(state["step"]),
        encoder=encoder,
    )
