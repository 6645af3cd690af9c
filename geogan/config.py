"""Pydantic models of stage options and pipeline files.

Each stage has one options model here. Its CLI command builds the model from its options and a
pipeline file (``geogan run``) builds the same model from YAML, so the two never drift apart.
Unknown fields are errors, so a typo in a pipeline file is reported, not ignored.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


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
