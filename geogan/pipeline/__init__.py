"""``geogan run``: a pipeline file's stages, run incrementally, logged, one run at a time.

A pipeline file (YAML) names its output folder, its sources and its stages with their options::

    out: demo-out                 # relative to the file
    sources:
      demo: {kind: procedural, scenes: 2, patch_size: 64}
    stages:
      tile: {size: 32}
      train: {model: msg-stylegan, steps: 20, resolution: 32, batch_size: 4}
      generate: {n: 8}

Each stage's options are checked by the options model its CLI command uses (an unknown or wrong
field is an error naming the file, line, stage and field); the folders that link the stages
(``out``, ``tiles``, ``run``) are filled in by the pipeline: ``OUT/STAGE``. The implicit first
stage, ``sources``, makes procedural scenes (or checks folders) under ``OUT/sources``.

See :mod:`geogan.pipeline.runner` for how re-runs decide what to do, :mod:`geogan.pipeline.stages`
for the registry of stages and source kinds, :mod:`geogan.pipeline.spec` for the file format.
"""

from __future__ import annotations

from geogan.files import LockError
from geogan.pipeline.runner import RunResult, StageResult, pipeline_lock, read_log, read_state, run
from geogan.pipeline.spec import Pipeline, PipelineError, load

__all__ = [
    "LockError",
    "Pipeline",
    "PipelineError",
    "RunResult",
    "StageResult",
    "load",
    "pipeline_lock",
    "read_log",
    "read_state",
    "run",
]
