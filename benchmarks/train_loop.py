"""The training loop's own cost: ``geogan train`` beside a bare PyTorch loop of the same model step.

For each model at 64 px on CPU (the benchmark configurations of ``benchmarks/training.py``), in
the same run:

* **geogan**: ``geogan.training.train`` as ``geogan train`` runs it (tiles read from the tile
  folder by its DataLoader, Lightning Fabric, the generator EMA, metric logging every
  ``log_every`` steps, the progress bar). Its steady per-step time is the difference of two runs,
  ``W + STEPS`` and ``W`` steps, over ``STEPS``: start-up (imports, building the model, the
  last sample grid and checkpoint) is in both and cancels out. ``W`` is one epoch (at least
  ``WARM``), so the timed steps take their chips from the dataset's memory; it is also measured
  with every chip read from its files (the dataset's cache off).
* **bare**: the same networks, losses and optimisers (the model's own ``train_step``, with
  ``loss.backward()`` in place of Fabric's), on one batch already in memory: no data loading,
  EMA, logging or checkpoints. Mean seconds of ``STEPS`` steps after ``WARM``.
* the bare loop's **fast paths**: ``channels_last`` memory format, bf16 autocast on the CPU and
  ``torch.compile`` (its compile time shown apart), each against the bare loop of the same round.
* the **data pipeline alone**: images/s of geogan's DataLoader over the tile folder (the same
  batches, no model), beside the images/s the model takes.

Rounds alternate (bare, geogan, bare, geogan ...) and the median ratio is reported, as the
machine is shared. Target: geogan within 10 % of the bare loop.

    .venv/bin/python benchmarks/train_loop.py                   # every model, 3 rounds
    .venv/bin/python benchmarks/train_loop.py --tasks spade --repeat 5 --no-compile
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch
from results import quiet_logs
from training import BATCH, CONFIGS, make_tiles

from geogan import datasets
from geogan.datasets import ChipDataset
from geogan.models import MODELS
from geogan.training import describe, fit_to_data, model_entry, task_class, train

SIZE = 64
WARM = 3
STEPS = 40


def options(name: str, tiles: Path, out: Path, steps: int):
    model = model_entry(name).options
    fields = model.model_fields
    config = {k: v for k, v in CONFIGS[name].items() if k in fields}
    if "resolution" in fields:
        config["resolution"] = SIZE
    return model(
        **config,
        tiles=tiles,
        out=out,
        batch_size=BATCH,
        split=None,
        steps=steps,
        sample_every=10_000,
        checkpoint_every=10_000,
    )


def geogan_step(name: str, tiles: Path, root: Path, cache: bool = True) -> float:
    """Steady seconds per step of ``geogan.training.train`` (two runs' difference).

    The shorter run takes at least one epoch, so the difference is of steps whose chips come from
    the dataset's memory (as in a run of many epochs); ``cache=False`` reads every chip from its
    files each time (``geogan.datasets.CACHE_BYTES = 0``), as geogan did before 2026-12-06.
    """
    warm = max(WARM, -(-len(ChipDataset(tiles, split=None)) // BATCH))
    budget = datasets.CACHE_BYTES
    datasets.CACHE_BYTES = budget if cache else 0
    seconds = []
    try:
        for steps in (warm, warm + STEPS):
            out = root / f"{name}-{steps}-{time.monotonic_ns()}"
            start = time.perf_counter()
            train(name, options(name, tiles, out, steps))
            seconds.append(time.perf_counter() - start)
    finally:
        datasets.CACHE_BYTES = budget
    return (seconds[1] - seconds[0]) / STEPS


def bare_model(name: str, tiles: Path, root: Path, channels_last: bool = False, compiled: bool = False):
    """The model's task with plain modules and optimisers, and one batch of real chips in memory."""
    cls = task_class(name)
    opts = options(name, tiles, root / "bare", WARM + STEPS)
    dataset = ChipDataset(tiles, split=None, roles=opts.roles, scheme=opts.scheme)
    data = describe(dataset)
    opts = fit_to_data(opts, data)
    torch.manual_seed(0)
    model = cls(opts, data)
    modules, optimizers = model.build()
    items = [dataset[i] for i in range(BATCH)]
    batch = {
        k: torch.stack([it[k] for it in items]) for k in items[0] if isinstance(items[0][k], torch.Tensor)
    }
    if channels_last:
        modules = {n: m.to(memory_format=torch.channels_last) for n, m in modules.items()}
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    if compiled:
        modules = {n: torch.compile(m) for n, m in modules.items()}
    model.fabric = types.SimpleNamespace(backward=lambda loss: loss.backward())
    model.nets, model.optimizers = modules, optimizers
    return model, batch


def bare_step(model, batch, autocast: bool = False) -> tuple[float, float]:
    """(mean seconds per step of STEPS steps after WARM, seconds of the WARM steps).

    The mean, as geogan's figure (a difference of run times over ``STEPS``) is a mean too: it holds
    the occasional slow step that a median would leave out. Before 2026-12-07 this was the median.
    """
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    start = time.perf_counter()
    for step in range(WARM):
        with context():
            model.train_step(batch, step)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(WARM, WARM + STEPS):
        with context():
            model.train_step(batch, step)
    return (time.perf_counter() - start) / STEPS, warm


def data_images_per_s(name: str, tiles: Path, root: Path) -> float:
    """Images/s of the DataLoader ``geogan train`` builds (default workers), without a model."""
    from geogan.training import StepBatchSampler, open_tiles

    opts = options(name, tiles, root / "data", 50)
    dataset = open_tiles(opts)
    sampler = StepBatchSampler(len(dataset), BATCH, 0, 0, 50, 0, 1)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=opts.workers)
    start = time.perf_counter()
    n = sum(int(batch["image"].shape[0]) for batch in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=sorted(MODELS), help="models to measure [all]")
    parser.add_argument("--repeat", type=int, default=3, help="rounds [3]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile (slow to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_logs()
    print(f"{SIZE} px, batch {BATCH}, {args.threads} thread(s), load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="geogan-bench-loop-") as tmp:
        root = Path(tmp)
        tiles = make_tiles(root, SIZE)
        compile_failed: dict[str, str] = {}
        for name in args.tasks:
            rows: dict[str, list[float]] = {}
            for round_ in range(1, args.repeat + 1):
                model, batch = bare_model(name, tiles, root)
                bare, _ = bare_step(model, batch)
                ours = geogan_step(name, tiles, root)
                found = {"geogan / bare": ours / bare}
                uncached = geogan_step(name, tiles, root, cache=False)
                found["geogan, chips read each step / bare"] = uncached / bare
                model, batch = bare_model(name, tiles, root, channels_last=True)
                found["channels_last / bare"] = bare_step(model, batch)[0] / bare
                model, batch = bare_model(name, tiles, root)
                found["bf16 autocast / bare"] = bare_step(model, batch, autocast=True)[0] / bare
                if not args.no_compile and name not in compile_failed:
                    try:
                        model, batch = bare_model(name, tiles, root, compiled=True)
                        compiled, warm = bare_step(model, batch)
                    except Exception as err:  # inductor's own failures: reported, not fatal
                        compile_failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                        print(f"{name}: torch.compile failed: {compile_failed[name]}", flush=True)
                    else:
                        found["torch.compile / bare"] = compiled / bare
                        found["compile s (warm-up steps)"] = warm
                found["data images/s"] = data_images_per_s(name, tiles, root)
                found["model images/s (bare)"] = BATCH / bare
                print(
                    f"{name} round {round_}: bare {bare:.3f} s/step, geogan {ours:.3f} s/step; "
                    + ", ".join(f"{k} {v:.2f}" for k, v in found.items()),
                    flush=True,
                )
                for key, value in found.items():
                    rows.setdefault(key, []).append(value)
            print(
                f"{name} medians: "
                + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in rows.items())
                + f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
