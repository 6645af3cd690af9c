"""``geogan schedule``: a pipeline file as a Prefect flow, served on a cron schedule (``prefect`` extra).

The flow has one Prefect task per stage. Each task asks the runner (:func:`geogan.pipeline.run`)
for that one stage, so what re-runs is decided exactly as by ``geogan run``: fingerprints, the
run log and the pipeline's lock all stay the runner's. Prefect adds the schedule, a record of
every flow run with the state of each stage, and at most one flow run of a deployment at a time
(its concurrency limit is 1; the runner's lock also refuses a ``geogan run`` started by hand).

``geogan schedule FILE --cron "0 3 * * *"`` registers the deployment with the Prefect API
(``PREFECT_API_URL``: a ``prefect server start`` or Prefect Cloud) and serves it in this process;
``--run-once`` runs the flow once, now, and exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from geogan.errors import RunFailed
from geogan.pipeline.runner import run
from geogan.pipeline.spec import load

FLOW_NAME = "geogan-pipeline"


@task(task_run_name="{stage}")
def run_stage(pipeline: str, stage: str, out: str | None, scheduler: str | None) -> dict[str, Any]:
    """One stage of the pipeline file through the runner; raises when the stage fails."""
    spec = load(Path(pipeline), out=Path(out) if out else None, scheduler=scheduler)
    result = run(spec, start=stage, until=stage, progress=False)
    done = next(r for r in result.stages if r.stage == stage)
    get_run_logger().info("%s: %s (%s) %s", stage, done.action, done.reason, done.counts or "")
    if not result.ok:
        raise RunFailed(result.error)
    return {"stage": stage, "action": done.action, "reason": done.reason, "counts": done.counts}


@flow(name=FLOW_NAME, flow_run_name="{pipeline}", log_prints=True)
def pipeline_flow(
    pipeline: str, out: str | None = None, scheduler: str | None = None
) -> list[dict[str, Any]]:
    """Every stage of the pipeline file ``pipeline``, in order; the first failure ends the flow run."""
    spec = load(Path(pipeline), out=Path(out) if out else None, scheduler=scheduler)
    return [run_stage(str(spec.path), name, out, scheduler) for name in spec.names]


def deployment(
    pipeline: Path,
    cron: str,
    out: Path | None = None,
    scheduler: str | None = None,
    timezone: str | None = None,
) -> RunnerDeployment:
    """The Prefect deployment of ``pipeline`` on ``cron`` (checked here: a bad file or cron raises)."""
    from prefect.client.schemas.schedules import CronSchedule

    spec = load(pipeline, out=out, scheduler=scheduler)
    schedule = CronSchedule(cron=cron, timezone=timezone) if timezone else CronSchedule(cron=cron)
    parameters = {
        "pipeline": str(spec.path.resolve()),
        "out": str(out.resolve()) if out else None,
        "scheduler": scheduler,
    }
    # Outside an event loop prefect's async_dispatch runs the sync to_deployment: a RunnerDeployment.
    made = pipeline_flow.to_deployment(
        name=spec.name,
        # prefect annotates schedule as the new Schedule only; RunnerDeployment takes CronSchedule too
        schedule=schedule,  # type: ignore[arg-type]
        parameters=parameters,
        concurrency_limit=1,
        description=f"geogan pipeline {spec.path} -> {spec.out}",
        tags=["geogan"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return cast(RunnerDeployment, made)
