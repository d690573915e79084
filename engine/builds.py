"""Workflow builds (`workflows/build`): a recorded action log → a validated deployment.

A build compiles the action log (`engine.actionlog`) into a one-task workspace, checks it
by **replaying** it: the workflow runs as a real job (workspace `build.<build id>`,
source type `build`) through the orchestrator, so in a real Chromium, against
`initial_url` with `params` as input. Only a replay that completes is deployed
(`Deployments.create` with a tarball of the workspace); the workflow then runs with
`jobs/create` like any other.

Status: `pending → agent_running` (compile and replay) `→ deploying → ready | failed`,
with `attempted_steps` (each browser step of the replay: `ok`, `failed` or `not_run`)
and `details` (the compiled workflow, the replay job and its diagnosis).

Without an action log, an LLM (`debug.llm`, an OpenAI-compatible chat endpoint) is asked
to write one from the descriptions; without an LLM such a build fails and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from engine.actionlog import CompiledWorkflow, compile_action_log, workspace_yaml
from engine.autorepair import pack_folder
from engine.clock import Clock, SystemClock, new_job_id
from engine.cloudtenancy import cloud_workspace
from engine.core import commands as cmd
from engine.debugreport import build_report
from engine.deployments import BUILDING, DEPLOYMENT, Deployments
from engine.errors import NotFound, PartiturError
from engine.orchestrator import Orchestrator
from engine.store.cloud import CloudObject, CloudRepository
from engine.views import iso

log = logging.getLogger("partitur.builds")

BUILD = "workflow_build"
SOURCE = "build"
PENDING, AGENT_RUNNING, DEPLOYING, READY, FAILED = (
    "pending", "agent_running", "deploying", "ready", "failed")
IN_PROGRESS = (PENDING, AGENT_RUNNING, DEPLOYING)
NO_LLM = ("no action_log was given and no LLM is configured (debug.llm): record the "
          "workflow's actions and send them as action_log")
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class LlmEndpoint:
    """An OpenAI-compatible chat completions endpoint (`debug.llm`)."""

    endpoint: str
    model: str
    api_key: str | None = None
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """What `workflows/build` asks for."""

    descriptions: tuple[str, ...]
    initial_url: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    action_log: str | Sequence[Mapping[str, Any]] | None = None
    network_log: Any = None
    name: str | None = None


def workflow_name(req: BuildRequest) -> str:
    """The workflow's name: `name`, else a slug of the first description."""
    if req.name:
        return req.name
    first = req.descriptions[0] if req.descriptions else ""
    slug = _SLUG.sub("-", first.lower()).strip("-")[:60].strip("-")
    return slug or "recorded-workflow"


def attempted_steps(compiled: CompiledWorkflow, status: str,
                    failed_index: int | None) -> list[dict[str, Any]]:
    """Each compiled browser step with how the replay went for it."""
    out = []
    for index, step in enumerate(compiled.steps):
        ((action, args),) = step.items()
        if status == "completed":
            result = "ok"
        elif failed_index is None:
            result = "not_run" if index else "failed"
        else:
            result = "ok" if index < failed_index else "failed" if index == failed_index \
                else "not_run"
        target = args if isinstance(args, str) else (
            args.get("selector") or args.get("url") or args.get("key"))
        out.append({"index": index, "action": action, "target": target, "status": result})
    return out


async def llm_action_log(llm: LlmEndpoint, req: BuildRequest) -> str:
    """Ask the LLM for a JSONL action log that does what the descriptions say."""
    network = orjson.dumps(req.network_log, default=str).decode()[:4000] \
        if req.network_log else "none"
    prompt = (
        "Write the browser actions that do the task below, as JSONL: one JSON object a "
        'line, {"action": "goto|click|fill|select|press|extract", "selector": CSS, '
        '"value": text, "url": URL, "as": output name (extract only)}. Answer with the '
        "JSONL only.\n"
        f"Task: {' '.join(req.descriptions)}\nStart URL: {req.initial_url}\n"
        f"Example params: {orjson.dumps(dict(req.params)).decode()}\n"
        f"Captured network log: {network}")
    import httpx  # on the first build, not at every start

    headers = {"authorization": f"Bearer {llm.api_key}"} if llm.api_key else {}
    async with httpx.AsyncClient(timeout=llm.timeout) as client:
        response = await client.post(
            llm.endpoint.rstrip("/") + "/chat/completions", headers=headers,
            json={"model": llm.model, "temperature": 0,
                  "messages": [{"role": "user", "content": prompt}]})
        response.raise_for_status()
        text = str(response.json()["choices"][0]["message"]["content"])
    fenced = re.search(r"```(?:jsonl?|json)?\n(.*?)```", text, re.DOTALL)
    return fenced.group(1) if fenced else text


class Builds:
    """Start, run and report `workflows/build` builds; see the module docstring."""

    def __init__(self, repo: CloudRepository, orchestrator: Orchestrator,
                 deployments: Deployments, root: Path, artifacts_dir: Path, *,
                 llm: LlmEndpoint | None = None, replay_timeout: float = 120.0,
                 deploy_timeout: float = 120.0, clock: Clock | None = None) -> None:
        self.repo = repo
        self.orchestrator = orchestrator
        self.deployments = deployments
        self.root = root
        self.artifacts_dir = artifacts_dir
        self.llm = llm
        self.replay_timeout = replay_timeout
        self.deploy_timeout = deploy_timeout
        self.clock: Clock = clock or SystemClock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, tenant: str, req: BuildRequest) -> CloudObject:
        """Record a `pending` build and run it in the background."""
        now = self.clock.now()
        build = CloudObject(BUILD, new_job_id(), tenant, now, now, {
            "status": PENDING, "workflow_name": workflow_name(req), "deployment_id": None,
            "summary": "; ".join(req.descriptions) or None, "error": None, "details": {},
            "attempted_steps": [], "initial_url": req.initial_url})
        await self.repo.insert(build)
        task = asyncio.ensure_future(self._run(build, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return build

    async def get(self, tenant: str, build_id: str) -> CloudObject:
        build = await self.repo.get(BUILD, build_id)
        if build is None or build.tenant != tenant:
            raise NotFound(f"build {build_id!r} not found")
        return build

    async def in_progress(self, tenant: str) -> list[CloudObject]:
        return [b for b in await self.repo.all(BUILD, tenant)
                if b.data.get("status") in IN_PROGRESS]

    async def wait(self, timeout: float = 60.0) -> None:
        """Wait for the builds in flight (tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _set(self, build: CloudObject, **fields: Any) -> CloudObject:
        return await self.repo.merge(build, self.clock.now(), **fields)

    async def _run(self, build: CloudObject, req: BuildRequest) -> None:
        try:
            await self._steps(build, req)
        except asyncio.CancelledError:
            raise
        except PartiturError as exc:
            await self._fail(build.id, exc.message, issues=getattr(exc, "issues", None))
        except Exception as exc:
            log.exception("build %s crashed", build.id)
            await self._fail(build.id, f"internal build error: {exc}")

    async def _fail(self, build_id: str, error: str, *, issues: Any = None) -> None:
        current = await self.repo.get(BUILD, build_id)
        if current is None:
            return
        if issues:
            error = "; ".join([error, *(i.message for i in issues if i.message != error)])
        await self._set(current, status=FAILED, error=error)

    async def _steps(self, build: CloudObject, req: BuildRequest) -> None:
        action_log = req.action_log
        build = await self._set(build, status=AGENT_RUNNING)
        if not action_log:
            if self.llm is None:
                await self._set(build, status=FAILED, error=NO_LLM)
                return
            action_log = await llm_action_log(self.llm, req)
            build = await self._set(build, details={"action_log_from": "llm"})
        name = build.data["workflow_name"]
        compiled = compile_action_log(action_log, initial_url=req.initial_url,
                                      params=req.params)
        folder = self.root / build.id
        (folder / ".workflows").mkdir(parents=True, exist_ok=True)
        (folder / ".workflows" / "main.yaml").write_text(
            workspace_yaml(name, compiled, description=build.data.get("summary")), "utf-8")
        details: dict[str, Any] = {
            **build.data.get("details", {}), "steps": compiled.steps,
            "input": compiled.input, "dropped_actions": compiled.dropped,
            "network_log_entries": _count(req.network_log)}
        build = await self._set(build, details=details)
        # Replay: the compiled workflow runs as a job of its own temporary workspace,
        # one of the tenant's (engine.cloudtenancy), like its deployments.
        workspace = cloud_workspace(build.tenant, f"{SOURCE}-{build.id}")
        self.orchestrator.workspaces.add(workspace, folder)
        job_input = {k: str(req.params[k]) for k in compiled.input}
        job_id = await self.orchestrator.create_job(workspace, name, job_input,
                                                    source_type=SOURCE, source_id=build.id)
        details["replay_job_id"] = job_id
        build = await self._set(build, details=details)
        state = await self.orchestrator.wait(job_id, self.replay_timeout)
        status = state.status.value
        failed_index = None
        if status != "completed":
            if not state.terminal:
                with contextlib.suppress(PartiturError):
                    await self.orchestrator.command(job_id, cmd.Cancel(
                        by=None, reason="the build's replay timed out"))
            row = await self.orchestrator.store.get_job(job_id)
            steps = await self.orchestrator.store.get_steps(job_id)
            report = build_report(row, steps, self.artifacts_dir / job_id) if row else {}
            analysis = report.get("analysis") or {}
            failed_index = analysis.get("step_index")
            details.update(replay_status=status, diagnosis=report.get("tldr"))
            await self._set(build, status=FAILED, details=details,
                            attempted_steps=attempted_steps(compiled, status, failed_index),
                            error=f"the replay against {req.initial_url} {status}: "
                                  f"{report.get('error') or state.error or 'no error given'}")
            return
        details.update(replay_status=status, replay_output=dict(state.output or {}))
        build = await self._set(build, status=DEPLOYING, details=details,
                                attempted_steps=attempted_steps(compiled, status, None))
        # Deploy the replayed workspace.
        source = await asyncio.to_thread(pack_folder, folder)
        dep = await self.deployments.create(build.tenant, source,
                                            description=build.data.get("summary"))
        build = await self._set(build, deployment_id=dep.id)
        deadline = self.clock.now() + self.deploy_timeout
        while True:
            current = await self.repo.get(DEPLOYMENT, dep.id)
            if current is not None and current.data.get("status") != BUILDING:
                break
            if self.clock.now() > deadline:
                await self._set(build, status=FAILED, error="the deployment did not build "
                                f"within {self.deploy_timeout:.0f} s")
                return
            await asyncio.sleep(0.05)
        if current.data.get("status") != "ready":
            await self._set(build, status=FAILED,
                            error=f"the deployment failed: {current.data.get('build_error')}")
            return
        await self._set(build, status=READY)


def _count(network_log: Any) -> int:
    if isinstance(network_log, str):
        return sum(1 for line in network_log.splitlines() if line.strip())
    if isinstance(network_log, list):
        return len(network_log)
    return 0


def view(build: CloudObject) -> dict[str, Any]:
    """The `workflows/buildStatus` answer."""
    d = build.data
    return {"build_id": build.id, "status": d["status"], "deployment_id": d.get("deployment_id"),
            "workflow_name": d.get("workflow_name"), "summary": d.get("summary"),
            "error": d.get("error"), "details": d.get("details") or {},
            "attempted_steps": list(d.get("attempted_steps") or []),
            "created_at": iso(build.created_at), "updated_at": iso(build.updated_at)}
