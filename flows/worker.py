"""Fleet mode on Prefect: one process work pool and one scheduled deployment per machine class.

``xlstm-autotune worker`` on each machine: fingerprint -> machine class -> make sure the class's work
pool (type ``process``) and its ``autotune`` deployment exist -> run a Prefect ``ProcessWorker`` on the
pool with ``limit=1`` (one flow run at a time: never two studies timing on one device). Each flow run
of the deployment is the ordinary ``autotune`` flow, run by whichever machine of the class takes it:
in fleet mode its studies are the class's shared ones (``tuner._fleet``), its re-timing and profile
are that machine's own.

The deployment has ``fleet_class_size`` schedules of the same cron (slugs ``slot-1`` ...): each tick
queues that many runs, one per machine of the class. ``submit_runs`` queues runs now.
Pool, deployment and runs live on the Prefect server of ``PREFECT_API_URL`` (Prefect's own setting,
from the environment, ``.env`` or a Prefect profile).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

from tuner.settings import mask_url

from .settings import FlowSettings

FLOW_ENTRYPOINT = "flows.flows:autotune"  # the installed package: no code to pull on the workers


class FleetServerError(RuntimeError):
    """The fleet's Prefect server refused or failed a request (pool, deployment, run)."""


@dataclass(frozen=True)
class ClassDeployment:
    """A machine class's work pool and deployment on the Prefect server."""

    machine_class: str
    pool: str
    deployment: str  # "<flow>/<deployment>"
    deployment_id: str
    created_pool: bool
    created_deployment: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def pool_name(machine_class: str, settings: FlowSettings) -> str:
    """The work pool of a class in this fleet, e.g. ``xlstm-default-cpu-3f2a9c1b7d04``."""
    return re.sub(r"[^a-z0-9-]+", "-", f"xlstm-{settings.fleet_name}-{machine_class}".lower())


def deployment_name(machine_class: str, settings: FlowSettings) -> str:
    """The class's deployment of the ``autotune`` flow in this fleet, e.g. ``default-cpu-3f2a9c1b7d04``."""
    return f"{settings.fleet_name}-{machine_class}"


def this_class(settings: FlowSettings) -> str:
    """This machine's class id (``xlstm_kernels.machine_class`` of its fingerprint)."""
    from xlstm_kernels.profiles.fingerprint import fingerprint, machine_class

    return machine_class(fingerprint(settings.device))


async def ensure_class_deployment(machine_class: str, settings: FlowSettings,
                                  parameters: dict[str, Any] | None = None) -> ClassDeployment:
    """Create the class's process work pool and scheduled deployment when missing; never change them.

    Several machines of a class may call it at once: a pool or deployment another one just created is
    read, not duplicated.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    pool = pool_name(machine_class, settings)
    name = deployment_name(machine_class, settings)
    created_pool = created_dep = False
    try:
        async with get_client() as client:
            try:
                await client.read_work_pool(pool)
            except ObjectNotFound:
                try:
                    await client.create_work_pool(WorkPoolCreate(
                        name=pool, type="process", concurrency_limit=None,
                        description=f"xlstm-autotune machines of class {machine_class} (fleet {settings.fleet_name})"))
                    created_pool = True
                except ObjectAlreadyExists:
                    pass
            try:
                dep = await client.read_deployment_by_name(f"autotune/{name}")
                dep_id = dep.id
            except ObjectNotFound:
                flow_id = await client.create_flow_from_name("autotune")
                schedules = [DeploymentScheduleCreate(schedule=CronSchedule(cron=settings.fleet_cron),
                                                      slug=f"slot-{i + 1}")
                             for i in range(settings.fleet_class_size)]
                dep_id = await client.create_deployment(
                    flow_id=flow_id, name=name, work_pool_name=pool, entrypoint=FLOW_ENTRYPOINT,
                    parameters=parameters or {"revalidate": True, "lock_wait_s": settings.serve_lock_wait_s}, schedules=schedules, pull_steps=[],
                    tags=["xlstm-autotune", f"class:{machine_class}"],
                    description=f"Scheduled xlstm-autotune runs of machine class {machine_class}.")
                created_dep = True
    except Exception as exc:  # noqa: BLE001 - httpx / Prefect API errors: say which server, masked
        raise FleetServerError(f"the Prefect server refused the class setup: {type(exc).__name__}: "
                               f"{mask_url(str(exc))[:300]}") from exc
    return ClassDeployment(machine_class, pool, f"autotune/{name}", str(dep_id), created_pool, created_dep)


async def submit_runs(deployment_id: str, n: int, parameters: dict[str, Any] | None = None) -> list[str]:
    """Queue ``n`` runs of a class deployment now (one per machine expected to take part)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        runs = [await client.create_flow_run_from_deployment(UUID(deployment_id), parameters=parameters or {})
                for _ in range(n)]
    return [str(r.id) for r in runs]


async def run_worker(pool: str, node: str, run_once: bool = False) -> None:
    """Run a Prefect process worker named after this node on ``pool``, one flow run at a time."""
    from prefect.workers.process import ProcessWorker

    async with ProcessWorker(work_pool_name=pool, name=node, limit=1) as worker:
        await worker.start(run_once=run_once)


def prepare(settings: FlowSettings) -> ClassDeployment:
    """This machine's class, with its work pool and deployment created when missing."""
    return asyncio.run(ensure_class_deployment(this_class(settings), settings))


def serve_worker(setup: ClassDeployment, settings: FlowSettings, run_once: bool = False) -> None:
    """Take the class's flow runs on this machine until Ctrl-C / SIGTERM (one poll with ``run_once``)."""
    from tuner import node_name

    asyncio.run(run_worker(setup.pool, node_name(settings), run_once=run_once))
