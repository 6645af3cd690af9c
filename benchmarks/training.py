"""Training and generation speed of every model in ``geogan.models.MODELS``, at 64 and 256 px.

For each task and tile size the benchmark tiles procedural SEN12MS scenes (13-band S2 chips with
their IGBP ``lc`` masks) with ``geogan tile``, builds the model in a stated *benchmark
configuration* (:data:`CONFIGS`: smaller than the defaults, which are sized for GPUs), sets it up
with Lightning Fabric as ``geogan train`` does, and times

- training: ``TrainTask.train_step`` on one batch of real chips (``--batch`` tiles), after
  ``WARMUP`` untimed steps; images/s = tiles per step / median seconds per step. Data loading,
  EMA, logging and checkpoints are left out: this is the model's step.
- generation: ``TrainTask.sample`` (what ``geogan generate`` calls) on max(``GEN_BATCH``,
  ``--batch``) tiles, under ``torch.no_grad``; tiles/s from the median of ``GEN_REPEATS`` calls.
  The weights are the freshly built ones: speed does not depend on training.

Every step count is tiny (a few steps), so the figures are rough: they are for comparing sizes,
models and machines, not for planning a long run to the minute. CPU always; CUDA too when
``torch.cuda.is_available()``. Precision is ``geogan train``'s default (bf16 autocast on CUDA,
float32 on a CPU) unless ``--precision`` names others, each measured in turn. ``--config default``
measures the models as ``geogan train`` builds them by default (sized for GPUs) rather than in
the benchmark configurations. Results are printed and written to ``benchmarks/RESULTS.md`` (the
section ``--section`` names, between its markers) with the hardware, torch version and date.

    .venv/bin/python benchmarks/training.py                  # every task, 64 and 256 px
    .venv/bin/python benchmarks/training.py --tasks msg-stylegan --sizes 64
    python benchmarks/training.py --devices cuda --precision 32 bf16 --config default \
        --batch 32 --sizes 64 128 256 --tasks spade msg-stylegan --section training.py-gpu
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from distributed import Client
from results import RESULTS, marks, quiet_logs, write_section

from geogan import sample
from geogan.config import TileOptions
from geogan.datasets import ChipDataset
from geogan.models import MODELS
from geogan.tiling import tile
from geogan.training import describe, fit_to_data, model_entry, task_class

BATCH = 4
GEN_BATCH = 8
WARMUP = 2
STEPS = {64: 5, 128: 4, 256: 3}  # timed training steps per size (CPU); GPU runs 4x as many
GEN_REPEATS = 5
# Benchmark configurations: the model options changed from each task's defaults.
CONFIGS: dict[str, dict] = {
    "msg-stylegan": dict(z_dim=64, w_dim=64, mapping_layers=2, channel_base=2048, channel_max=64),
    "spade": dict(channels=16, z_dim=16, num_up=4, spade_hidden=16, d_channels=16, d_layers=3, num_d=2),
    "mask-gan": dict(channels=16, z_dim=16, num_up=4, d_channels=16, d_layers=3),
}


def make_tiles(root: Path, size: int) -> Path:
    """Procedural scenes cut into ``size`` px chips: at least ``BATCH`` chips with lc masks."""
    src, tiles = root / "src", root / f"tiles-{size}"
    if not tiles.exists():
        sample.write_sen12ms(src, scenes=1, patches_per_side=3, patch_size=256, seed=1)
        with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
            tile(
                TileOptions(sources=[str(src)], out=tiles, size=size, min_valid=0.0),
                client=client,
                progress=False,
            )
    return tiles


def options_for(name: str, size: int, tiles: Path, run: Path, config: str, batch: int):
    model = model_entry(name).options
    fields = model.model_fields
    chosen = CONFIGS.get(name, {}) if config == "bench" else {}
    values = {k: v for k, v in chosen.items() if k in fields}
    if "resolution" in fields:
        values["resolution"] = size
    return model(**values, tiles=tiles, out=run, batch_size=batch, split=None, steps=1)


def bench(
    name: str,
    size: int,
    tiles: Path,
    run: Path,
    device: str,
    precision: str | None = None,
    config: str = "bench",
    batch: int = BATCH,
) -> dict:
    """One task at one size on one device: s/step of ``train_step`` and tiles/s of ``sample``.
    ``precision``: "32" or "bf16" (default: as geogan train, bf16 on CUDA and float32 on a CPU)."""
    cls = task_class(name)
    precision = precision or ("bf16" if device == "cuda" else "32")
    options = options_for(name, size, tiles, run, config, batch)
    dataset = ChipDataset(
        tiles, roles=options.roles, scheme=options.scheme, mask_role=getattr(options, "mask_role", "lc")
    )
    data = describe(dataset)
    options = fit_to_data(options, data)  # sizes left to the tiles (the defaults' num_up)
    torch.manual_seed(0)
    model = cls(options, data)
    modules, optimizers = model.build()
    params = sum(p.numel() for p in modules[cls.generator_name].parameters())
    from lightning.fabric import Fabric

    # As geogan train sets it up: Fabric's bf16-mixed autocast, or plain float32.
    mixed = "bf16-mixed" if precision == "bf16" else "32-true"
    fabric = Fabric(accelerator=device, devices=1, precision=mixed)
    model.fabric = fabric
    model.nets = {n: fabric.setup_module(m) for n, m in modules.items()}
    model.optimizers = {n: fabric.setup_optimizers(o) for n, o in optimizers.items()}
    items = [dataset[i % len(dataset)] for i in range(batch)]
    tensors = {
        k: torch.stack([it[k] for it in items]).to(fabric.device)
        for k in items[0]
        if isinstance(items[0][k], torch.Tensor)
    }
    sync = torch.cuda.synchronize if fabric.device.type == "cuda" else (lambda: None)
    steps = STEPS[size] * (4 if device == "cuda" else 1)
    for step in range(WARMUP):
        model.train_step(tensors, step)
    times = []
    for step in range(WARMUP, WARMUP + steps):
        sync()
        start = time.perf_counter()
        model.train_step(tensors, step)
        sync()
        times.append(time.perf_counter() - start)
    train_s = statistics.median(times)  # the median: robust to other work on a shared machine

    generator = model.nets[cls.generator_name]
    generator.eval()
    n_gen = max(GEN_BATCH, batch)
    gen = {k: v[:1].expand(n_gen, *v.shape[1:]).contiguous() for k, v in tensors.items()}
    with torch.no_grad(), fabric.autocast():
        model.sample(generator, gen)  # warm-up
        times = []
        for _ in range(GEN_REPEATS):
            sync()
            start = time.perf_counter()
            model.sample(generator, gen)
            sync()
            times.append(time.perf_counter() - start)
    gen_s = statistics.median(times)
    return {
        "task": name,
        "size": size,
        "device": device,
        "precision": precision,
        "batch": batch,
        "params": params,
        "train_steps": steps,
        "train_img_s": batch / train_s,
        "step_s": train_s,
        "gen_tiles_s": n_gen / gen_s,
    }


def hardware() -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else "none (torch.cuda.is_available() is False)"
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "load average at start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def report(rows: list[dict], hw: dict[str, str], command: str, section: str, config: str) -> str:
    configs = (
        "Benchmark configurations (changed from the defaults): "
        + "; ".join(f"{k}: " + ", ".join(f"{a}={b}" for a, b in v.items()) for k, v in CONFIGS.items())
        if config == "bench"
        else "Each model as `geogan train` builds it by default (no options changed but the resolution)"
    )
    lines = [
        marks(section)[0],
        f"## Training and generation speed (`benchmarks/training.py`{', GPU' if 'gpu' in section else ''})",
        "",
        f"Command: `{command}`. " + ", ".join(f"{k}: {v}" for k, v in hw.items()) + ".",
        "",
        f"Training: `train_step` on one batch of real chips (the batch column), {WARMUP} untimed steps, then "
        "the median of the timed steps shown (tiny counts: rough figures); data loading/EMA/checkpoints "
        "excluded. Generation: `sample` of max(8, batch) tiles, median of "
        f"{GEN_REPEATS}. {configs}.",
        "",
        "| task | px | device | precision | batch | G params | timed steps | s/step | train images/s "
        "| generate tiles/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['size']} | {r['device']} | {r['precision']} | {r['batch']} | "
            f"{r['params'] / 1e6:.2f} M | {r['train_steps']} | {r['step_s']:.3f} | {r['train_img_s']:.2f} | "
            f"{r['gen_tiles_s']:.1f} |"
        )
    lines += [
        "",
        "The load average is that of the whole machine when the run started: above the core count, "
        "other work shared the CPU and the figures are low (with 2 torch threads on 2 busy cores, "
        "msg-stylegan at 64 px once ran 30 times slower than at a quiet moment, hence 1 thread by "
        "default). Compare rows of one run only.",
    ]
    if not torch.cuda.is_available():
        lines += ["", "No GPU on this machine: no CUDA figures (see the GPU section where one was lent)."]
    lines.append(marks(section)[1])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=sorted(MODELS), help="tasks to measure [all]")
    parser.add_argument("--sizes", nargs="*", type=int, default=[64, 256], help="tile sizes [64 256]")
    parser.add_argument(
        "--devices", nargs="*", choices=["cpu", "cuda"], help="devices [cpu, and cuda where there is one]"
    )
    parser.add_argument(
        "--precision", nargs="*", choices=["32", "bf16"], help="precisions [bf16 on CUDA, 32 on a CPU]"
    )
    parser.add_argument(
        "--config", choices=["bench", "default"], default="bench", help="model sizes [bench: small]"
    )
    parser.add_argument("--batch", type=int, default=BATCH, help=f"tiles per training step [{BATCH}]")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads [1: steady on a shared machine]"
    )
    parser.add_argument("--section", default="training.py", help="RESULTS.md section [training.py]")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    hw = hardware()
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="geogan-bench-") as tmp:
        root = Path(tmp)
        for size in args.sizes:
            tiles = make_tiles(root, size)
            for name in args.tasks:
                for device in devices:
                    for precision in args.precision or [None]:
                        run = root / f"run-{name}-{size}"
                        row = bench(name, size, tiles, run, device, precision, args.config, args.batch)
                        print(
                            f"{name:14s} {size:4d} px {device:4s} {row['precision']:4s} train "
                            f"{row['train_img_s']:8.2f} images/s ({row['step_s']:.3f} s/step)  generate "
                            f"{row['gen_tiles_s']:8.1f} tiles/s",
                            flush=True,
                        )
                        rows.append(row)
    command = "python benchmarks/training.py " + " ".join(sys.argv[1:])
    section = report(rows, hw, command.strip(), args.section, args.config)
    print(section)
    if not args.no_write:
        write_section(args.section, section)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
