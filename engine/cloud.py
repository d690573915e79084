"""The cloud API's engine side, assembled over a `Runtime` (docs/cloud-api.md).

`Cloud` owns the cloud repository and the services the `/v1` routes call: deployments,
credentials, jobs, schedules and callbacks. `attach()` hooks it into the runtime before
it opens: ready deployments are registered before jobs are recovered (and a job of one
built on another replica gets it registered here), a cloud job's end
writes its callbacks' outbox row in the same transaction as its end event, job ends feed
the schedules' bookkeeping and auto-repair, stored schedules fire with the scheduler, and
the leader alone delivers callbacks. `builds` runs `workflows/build` (engine.builds).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from engine.autorepair import AutoRepair
from engine.builds import Builds, LlmEndpoint
from engine.callbacks import CallbackPolicy, Callbacks
from engine.cloudjobs import CloudJobs
from engine.cloudschedules import CloudSchedules
from engine.cloudtenancy import DEFAULT_TENANT
from engine.credentials import Cipher, Credentials
from engine.deployments import Deployments, TarLimits
from engine.runtime import Runtime
from engine.store.cloud import cloud_repository_for

log = logging.getLogger("partitur.cloud")

__all__ = ["DEFAULT_TENANT", "Cloud", "CloudOptions"]



@dataclass(frozen=True, slots=True)
class CloudOptions:
    """What the cloud layer takes from the server settings."""

    secrets_key: str | None = None
    upload_limit: int = 50 * 1024 * 1024
    callbacks: CallbackPolicy = field(default_factory=CallbackPolicy)
    repair_task: str | None = None  # `workspace/task` (debug.repair_task)
    llm: LlmEndpoint | None = None  # debug.llm


def _generated_key(folder: Path) -> str:
    """A per-installation key, kept in `<data>/secrets.key` (0600), when none is set."""
    path = folder / "secrets.key"
    if path.exists():
        return path.read_text("utf-8").strip()
    folder.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key)
    log.warning("secrets_key is not set: credentials are encrypted with the generated key "
                "in %s", path)
    return key


class Cloud:
    """Deployments, credentials, jobs, schedules and callbacks over one runtime."""

    def __init__(self, runtime: Runtime, options: CloudOptions) -> None:
        self.runtime = runtime
        self.options = options
        data_dir = runtime.options.logs_dir.parent
        key = options.secrets_key or _generated_key(data_dir)
        self.cipher = Cipher(key)
        self.repo = cloud_repository_for(runtime.store)
        clock = runtime.orchestrator.clock
        self.deployments = Deployments(
            self.repo, runtime.workspaces, data_dir / "deployments",
            limits=TarLimits(encoded=options.upload_limit,
                             unpacked=max(4 * options.upload_limit, 200 * 1024 * 1024)),
            clock=clock)
        self.credentials = Credentials(self.repo, self.cipher, clock=clock)
        self.jobs = CloudJobs(self.repo, runtime.orchestrator, self.deployments,
                              self.credentials, self.cipher, clock=clock)
        self.schedules = CloudSchedules(self.repo, self.jobs, self.cipher, clock=clock)
        self.callbacks = Callbacks(self.repo, self.jobs, self.cipher, options.callbacks,
                                   clock=clock)
        self.repair = AutoRepair(self.repo, runtime.orchestrator, self.deployments,
                                 options.repair_task, runtime.options.artifacts_dir)
        self.builds = Builds(self.repo, runtime.orchestrator, self.deployments,
                             data_dir / "builds", runtime.options.artifacts_dir, llm=options.llm)

    def attach(self) -> None:
        """Hook into the runtime (call before `runtime.open()`)."""
        self.runtime.on_open.append(self._opened)
        self.runtime.on_recovered.append(self.deployments.after_recovery)
        self.runtime.orchestrator.add_outbox(self.callbacks.outbox_for)
        self.runtime.orchestrator.on_events(self.deployments.listener)
        self.runtime.orchestrator.on_events(self.callbacks.listener)
        self.runtime.orchestrator.on_events(self.schedules.listener)
        self.runtime.orchestrator.on_events(self.repair.listener)
        self.runtime.scheduler.add_source(self.schedules)
        self.runtime.on_lead.append(self.callbacks.lead)
        self.runtime.on_unlead.append(self.callbacks.unlead)

    async def _opened(self) -> None:
        count = await self.deployments.open()
        if count:
            log.info("registered %d ready deployments", count)

    async def start(self) -> None:
        """After the runtime opened (callbacks start with leadership: `attach`)."""
        await self.repair.catch_up()

    async def close(self) -> None:
        await self.callbacks.stop()
        await self.builds.close()
        await self.repair.close()
        await self.deployments.close()
