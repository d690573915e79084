"""Deployments of the cloud API: uploaded workspaces, built and served as revisions.

`deployments/create` takes a base64 gzip tarball of a workspace. `unpack_tarball` checks
it while it streams (base64 size, decompressed size, member count, path depth; no
absolute paths, `..`, links, devices or duplicate names) and writes it into a fresh
directory. The build then loads, validates and compiles the workspace; the deployment
goes `building → ready | failed` (`build_error` names file and line). A ready deployment
is registered with the `WorkspaceRegistry` as the immutable workspace
`cloud.<tenant>.<deployment id>`; its tasks are the tenant's workflows.

A workflow name resolves to its pinned deployment, else to the newest ready deployment
that contains it (`workflows/delete` hides the name from deployments up to that point).

The uploaded tarball is kept in the store (a `deployment_source` cloud object with the
deployment's id), so every replica on the same database can run a ready deployment: a
replica asked for one it has not registered (`ensure`: a job, a workflow lookup, its
start) fetches the tarball, unpacks it with the same checks into its own
`<data>/deployments/<tenant>/<id>` and registers it, once, under a lock.

A replica removes the unpacked folder of a ready deployment no workflow resolves to any
more (`prune`: every workflow of it deleted, or superseded by a newer deployment or a
pin to another one) once no unfinished job uses it, and unregisters its workspace; the
tarball stays stored, so asked for again (a rollback, a pin, an old job) it is unpacked
again. It prunes after recovery at start, after `workflows/delete`, a pin or rollback,
a new ready deployment, and when the last job of a deployment out of service ends.
Deployments made before tarballs were kept and those with `auto_repair` (a repair packs
the folder) are never pruned.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gzip
import io
import logging
import os
import re
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from engine.clock import Clock, SystemClock, new_job_id
from engine.cloudtenancy import WORKSPACE_PREFIX, cloud_workspace, safe_tenant
from engine.compiler.plan import compile_task
from engine.compiler.validate import LoadedWorkspace, load_workspace
from engine.errors import (
    Conflict,
    Issue,
    LimitExceeded,
    NotFound,
    PartiturError,
    ValidationFailed,
    WorkspaceInvalid,
)
from engine.store.cloud import CloudObject, CloudRepository
from engine.workspaces import Workspace, WorkspaceRegistry

log = logging.getLogger("partitur.deployments")

DEPLOYMENT = "deployment"
SOURCE = "deployment_source"
PIN = "pin"
DELETED = "deleted_workflow"
BUILDING, READY, FAILED = "building", "ready", "failed"


class TarballRejected(ValidationFailed):
    """The uploaded tarball is not acceptable."""

    code = "tarball_rejected"


class TarballTooLarge(LimitExceeded):
    """The uploaded tarball is too large."""

    code = "tarball_too_large"


@dataclass(frozen=True, slots=True)
class TarLimits:
    """Caps on an uploaded tarball."""

    encoded: int = 50 * 1024 * 1024  # base64 text
    unpacked: int = 200 * 1024 * 1024  # sum of decompressed member sizes (and tar stream)
    members: int = 10_000
    depth: int = 32


class _Counting(io.RawIOBase):
    """A reader over a gzip stream that refuses to yield more than `cap` bytes."""

    def __init__(self, inner: Any, cap: int) -> None:
        self.inner = inner
        self.cap = cap
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        self.seen += len(data)
        if self.seen > self.cap:
            raise TarballTooLarge(f"the tarball unpacks to more than {self.cap} bytes")
        buffer[:len(data)] = data
        return len(data)


def _member_path(name: str, depth: int) -> PurePosixPath | None:
    """The relative path of a member (None for the `./` root entry), or a rejection."""
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\\" in name:
        raise TarballRejected(f"tarball member {name!r}: absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise TarballRejected(f"tarball member {name!r}: '..' is not allowed")
    if len(parts) > depth:
        raise TarballRejected(f"tarball member {name!r}: deeper than {depth} levels")
    return PurePosixPath(*parts) if parts else None


def unpack_tarball(source: str, dest: Path, limits: TarLimits = TarLimits()) -> int:
    """Decode the base64 gzip tarball `source` into the new directory `dest`.

    Every check happens while the archive streams, before or as a member is written;
    on any rejection `dest` is removed. Returns the number of files written.
    """
    if len(source) > limits.encoded:
        raise TarballTooLarge(f"the base64 source is larger than {limits.encoded} bytes")
    try:
        raw = base64.b64decode(source.strip(), validate=False)
    except (binascii.Error, ValueError):
        raise TarballRejected("'source' is not valid base64") from None
    dest.mkdir(parents=True, exist_ok=False)
    try:
        return _unpack(raw, dest, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _unpack(raw: bytes, dest: Path, limits: TarLimits) -> int:
    stream = io.BufferedReader(_Counting(gzip.GzipFile(fileobj=io.BytesIO(raw)), limits.unpacked))
    seen: set[PurePosixPath] = set()
    written = members = total = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                members += 1
                if members > limits.members:
                    raise TarballRejected(f"the tarball has more than {limits.members} members")
                rel = _member_path(member.name, limits.depth)
                if rel is None:
                    if not member.isdir():
                        raise TarballRejected("the tarball's root entry is not a directory")
                    continue
                if rel in seen:
                    raise TarballRejected(f"tarball member {member.name!r} appears twice")
                seen.add(rel)
                target = dest.joinpath(*rel.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isreg():
                    kind = "links" if member.issym() or member.islnk() else "special files"
                    raise TarballRejected(f"tarball member {member.name!r}: {kind} are not "
                                          "allowed")
                total += member.size
                if total > limits.unpacked:
                    raise TarballTooLarge(f"the tarball unpacks to more than {limits.unpacked} "
                                          "bytes")
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.parent.resolve().is_relative_to(dest.resolve()):
                    raise TarballRejected(f"tarball member {member.name!r} leaves the folder")
                extracted = tar.extractfile(member)
                assert extracted is not None
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(extracted, out, 64 * 1024)
                written += 1
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        if isinstance(exc, FileExistsError):
            raise TarballRejected(f"tarball member {exc.filename!r} appears twice") from None
        raise TarballRejected(f"the source is not a gzip tarball: {exc}") from None
    return written


def workspace_name(tenant: str, deployment_id: str) -> str:
    """The registry name of a deployment's workspace."""
    return cloud_workspace(tenant, deployment_id)


def build_error_text(issues: list[Issue]) -> str:
    """Issues as `file:line:column: message` lines (errors only, at most 20)."""
    errors = [i for i in issues if i.severity == "error"] or issues
    lines = [str(i) for i in errors[:20]]
    if len(errors) > 20:
        lines.append(f"… and {len(errors) - 20} more")
    return "\n".join(lines)


JS_PROJECT = ("this deployment has no .workflows/ folder: Partitur runs workspaces of YAML "
              "workflows (.workflows/*.yaml, see docs/cloud-api.md), not bundled JavaScript "
              "projects (index.js, package.json)")


class Deployments:
    """Create, build, list, resolve, pin and roll back a tenant's deployments."""

    def __init__(self, repo: CloudRepository, registry: WorkspaceRegistry, root: Path, *,
                 limits: TarLimits = TarLimits(), clock: Clock | None = None,
                 spawn: Callable[[Any], None] | None = None) -> None:
        self.repo = repo
        self.registry = registry
        self.root = root
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self._spawn = spawn
        self._builds: set[asyncio.Task[Any]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending: set[str] = set()
        self._foreign: set[str] = set()

    async def open(self) -> int:
        """Register every ready deployment's workspace (before jobs are recovered),
        unpacking the stored tarball of those whose files this server does not have."""
        count = 0
        for dep in await self.repo.all(DEPLOYMENT, None):
            if dep.data.get("status") != READY:
                continue
            try:
                await self.ensure(dep)
                count += 1
            except (PartiturError, OSError) as exc:
                log.error("deployment %s: cannot register its workspace: %s", dep.id, exc)
        return count

    def listener(self, state: Any, events: Any) -> None:
        """`Orchestrator.on_events`: a job of a deployment this replica has not registered
        (made on another replica) gets it registered in the background; when the last
        unfinished job of a deployment ends, unused deployments are pruned."""
        name = str(state.workspace)
        if state.terminal and events and name.startswith(WORKSPACE_PREFIX):
            if not self.registry.in_use(name) and "." in name:
                self._spawn_task(self._prune_of(name.rsplit(".", 1)[1]))
            return
        if not name.startswith(WORKSPACE_PREFIX) or self._registered(name) is not None \
                or name in self._pending or name in self._foreign:
            return
        self._pending.add(name)
        task = asyncio.ensure_future(self._register_named(name))
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)

    async def _prune_of(self, dep_id: str) -> None:
        try:
            dep = await self.repo.get(DEPLOYMENT, dep_id)
            if dep is not None:
                await self.prune(dep.tenant)
        except (PartiturError, OSError) as exc:
            log.error("deployment %s: cannot prune: %s", dep_id, exc)

    async def after_recovery(self) -> None:
        """`Runtime.on_recovered`: prune every tenant's unused deployments."""
        await self._tidy(None)

    async def _tidy(self, tenant: str | None) -> None:
        """`prune`, logging a failure (pruning is never worth failing a request for)."""
        try:
            await self.prune(tenant)
        except (PartiturError, OSError) as exc:
            log.error("cannot prune deployments: %s", exc)

    async def serving(self, tenant: str) -> set[str]:
        """Ids of the ready deployments some workflow of `tenant` resolves to (`resolve`)."""
        ready = [d for d in await self.list_for(tenant) if d.data.get("status") == READY]
        ids = {d.id for d in ready}
        serving: set[str] = set()
        pinned: set[str] = set()
        for pin in await self.repo.all(PIN, tenant, cap=10_000):
            if pin.data.get("deployment_id") in ids and pin.name is not None:
                serving.add(str(pin.data["deployment_id"]))
                pinned.add(pin.name)
        hidden = {h.name: str(h.data["through"])
                  for h in await self.repo.all(DELETED, tenant, cap=10_000)}
        names = {str(w) for d in ready for w in d.data.get("workflows", ())}
        for workflow in names - pinned:
            through = hidden.get(workflow, "")
            found = [d.id for d in ready
                     if workflow in d.data.get("workflows", ()) and d.id > through]
            if found:
                serving.add(max(found))
        return serving

    async def prune(self, tenant: str | None) -> list[str]:
        """Remove this replica's unpacked folder (and registration) of every ready
        deployment of `tenant` (None: all) that no workflow resolves to and no
        unfinished job uses, if its tarball is stored; the ids of those removed."""
        deps = [d for d in await self.repo.all(DEPLOYMENT, tenant)
                if d.data.get("status") == READY and not d.data.get("auto_repair")]
        serving: dict[str, set[str]] = {}
        removed: list[str] = []
        for dep in deps:
            if dep.tenant not in serving:
                serving[dep.tenant] = await self.serving(dep.tenant)
            if dep.id in serving[dep.tenant]:
                continue
            name = str(dep.data["workspace"])
            path = self.local_path(dep.tenant, dep.id)
            if self.registry.in_use(name) or not (path.exists() or self._known(name)):
                continue
            if await self.repo.get(SOURCE, dep.id) is None:
                continue  # made before tarballs were kept: its files are all there is
            async with self._locks.setdefault(name, asyncio.Lock()):
                if not self.registry.discard(name):
                    continue  # a job started meanwhile
                shutil.rmtree(path, ignore_errors=True)
            removed.append(dep.id)
            log.info("deployment %s: no workflow runs it and no job uses it; removed %s",
                     dep.id, path)
        return removed

    def _known(self, name: str) -> bool:
        try:
            self.registry.get(name)
        except NotFound:
            return False
        return True

    async def _register_named(self, name: str) -> None:
        try:
            if not await self.ensure_named(name):
                self._foreign.add(name)  # not a deployment's (a build's replay): no look-ups
        except (PartiturError, OSError) as exc:
            log.error("workspace %s: cannot register it: %s", name, exc)
        finally:
            self._pending.discard(name)

    def local_path(self, tenant: str, dep_id: str) -> Path:
        """Where this server keeps the files of a deployment."""
        return self.root / safe_tenant(tenant) / dep_id

    def _registered(self, name: str) -> Workspace | None:
        try:
            ws = self.registry.get(name)
        except NotFound:
            return None
        return ws if ws.current is not None else None

    async def ensure(self, dep: CloudObject) -> Workspace:
        """The registered workspace of the ready deployment `dep`. A replica that has not
        registered it (built on another replica) unpacks the stored tarball into its own
        data folder and registers it; idempotent, one at a time per deployment."""
        name = str(dep.data["workspace"])
        found = self._registered(name)
        if found is not None:
            return found
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            found = self._registered(name)
            if found is not None:
                return found
            path = self.local_path(dep.tenant, dep.id)
            if not (path / ".workflows").is_dir():
                stored = await self.repo.get(SOURCE, dep.id)
                if stored is not None:
                    await asyncio.to_thread(self._materialize, str(stored.data["source"]), path)
                elif (Path(dep.data["source_path"]) / ".workflows").is_dir():
                    path = Path(dep.data["source_path"])  # made before tarballs were kept
                else:
                    raise WorkspaceInvalid(f"deployment {dep.id}: its files are not on this "
                                           "server and its tarball is not stored")
            ws = self.registry.add(name, path)
            log.info("deployment %s: registered %s from %s", dep.id, name, path)
            return ws

    def _materialize(self, source: str, path: Path) -> None:
        """Unpack `source` into a fresh sibling folder, then move it to `path` at once, so
        a crash never leaves a half-written deployment folder behind."""
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        unpack_tarball(source, partial, self.limits)
        try:
            partial.rename(path)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (path / ".workflows").is_dir():
                raise

    async def ensure_named(self, workspace: str) -> bool:
        """`ensure` for a workspace name; False when it is no ready deployment's."""
        if self._registered(workspace) is not None:
            return True
        if "." not in workspace:
            return False
        dep = await self.repo.get(DEPLOYMENT, workspace.rsplit(".", 1)[1])
        if dep is None or dep.data.get("workspace") != workspace \
                or dep.data.get("status") != READY:
            return False
        await self.ensure(dep)
        return True

    async def close(self) -> None:
        for task in list(self._builds):
            task.cancel()
        for task in list(self._builds):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- create and build ------------------------------------------------------------

    async def create(self, tenant: str, source: str, *, description: str | None = None,
                     entry_point: str | None = None, auto_repair: bool = False) -> CloudObject:
        """Record a `building` deployment and build it in the background."""
        if len(source) > self.limits.encoded:
            raise TarballTooLarge(f"the base64 source is larger than {self.limits.encoded} bytes")
        dep_id = new_job_id()
        now = self.clock.now()
        path = self.root / safe_tenant(tenant) / dep_id
        dep = CloudObject(DEPLOYMENT, dep_id, tenant, now, now, {
            "description": description, "status": BUILDING, "source_path": str(path),
            "bundle_path": None, "build_error": None, "entry_point": entry_point,
            "built_at": None, "workflows": [], "auto_repair": auto_repair,
            "revision": None, "workspace": workspace_name(tenant, dep_id)})
        await self.repo.insert(dep)
        await self.repo.insert(CloudObject(SOURCE, dep_id, tenant, now, now, {"source": source}))
        task = asyncio.ensure_future(self._build(dep, source))
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)
        return dep

    async def _build(self, dep: CloudObject, source: str) -> None:
        path = Path(dep.data["source_path"])
        try:
            loaded = await asyncio.to_thread(self._build_sync, source, path, dep)
        except PartiturError as exc:
            issues = getattr(exc, "issues", None) or []
            text = build_error_text(issues) if issues else exc.message
            await self._failed(dep, text)
            return
        except Exception as exc:
            log.exception("deployment %s: build crashed", dep.id)
            await self._failed(dep, f"internal build error: {exc}")
            return
        self.registry.add(dep.data["workspace"], path)
        await self._finish(dep, READY, workflows=sorted(loaded.spec.tasks),
                           revision=loaded.revision, bundle_path=str(path / ".workflows"))
        await self._tidy(dep.tenant)  # deployments it supersedes

    def _build_sync(self, source: str, path: Path, dep: CloudObject) -> LoadedWorkspace:
        unpack_tarball(source, path, self.limits)
        if not (path / ".workflows").is_dir():
            if any((path / n).exists() for n in ("package.json", "index.js", "index.ts")):
                raise ValidationFailed(JS_PROJECT)
            raise ValidationFailed(JS_PROJECT.split(":")[0] + " (expected .workflows/*.yaml)")
        loaded = load_workspace(path, dep.data["workspace"])
        issues: list[Issue] = []
        for task in loaded.spec.tasks:
            try:
                compile_task(loaded, task)
            except ValidationFailed as exc:
                issues.extend(exc.issues or [Issue(message=exc.message, path=f"tasks.{task}")])
        if issues:
            raise ValidationFailed(issues=issues)
        if not loaded.spec.tasks:
            raise ValidationFailed("the workspace has no tasks, so the deployment has no "
                                   "workflows")
        return loaded

    async def _failed(self, dep: CloudObject, text: str) -> None:
        await self._finish(dep, FAILED, build_error=text)
        await self.repo.delete(SOURCE, dep.id)  # a failed deployment never runs

    async def _finish(self, dep: CloudObject, status: str, **fields: Any) -> None:
        now = self.clock.now()
        await self.repo.merge(dep, now, status=status, built_at=now, **fields)

    async def wait_built(self, dep_id: str, timeout: float = 30.0) -> None:
        """Wait for the background build of `dep_id` (tests, `sync` with a wait)."""
        for task in list(self._builds):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    # --- queries ---------------------------------------------------------------------

    async def get(self, tenant: str, dep_id: str) -> CloudObject:
        dep = await self.repo.get(DEPLOYMENT, dep_id)
        if dep is None or dep.tenant != tenant:
            raise NotFound(f"deployment {dep_id!r} not found")
        return dep

    async def list_for(self, tenant: str) -> list[CloudObject]:
        return await self.repo.all(DEPLOYMENT, tenant, cap=10_000)

    async def _deleted_before(self, tenant: str, workflow: str) -> str:
        hidden = await self.repo.by_name(DELETED, tenant, workflow)
        return str(hidden.data["through"]) if hidden is not None else ""

    async def candidates(self, tenant: str, workflow: str) -> list[CloudObject]:
        """Ready deployments containing `workflow` (and not hidden by a delete), newest first."""
        through = await self._deleted_before(tenant, workflow)
        return [d for d in await self.list_for(tenant)
                if d.data.get("status") == READY and workflow in d.data.get("workflows", ())
                and d.id > through]

    async def pin_of(self, tenant: str, workflow: str) -> CloudObject | None:
        return await self.repo.by_name(PIN, tenant, workflow)

    async def resolve(self, tenant: str, workflow: str) -> CloudObject:
        """The deployment that runs `workflow`: the pinned one, else the newest ready one."""
        pin = await self.pin_of(tenant, workflow)
        if pin is not None:
            dep = await self.repo.get(DEPLOYMENT, pin.data["deployment_id"])
            if dep is not None and dep.data.get("status") == READY:
                return dep
        found = await self.candidates(tenant, workflow)
        if not found:
            raise NotFound(f"workflow {workflow!r} not found (no ready deployment contains it)")
        return found[0]

    # --- pin, rollback, delete -------------------------------------------------------

    async def pin(self, tenant: str, workflow: str, dep_id: str | None) -> CloudObject | None:
        """Pin `workflow` to a ready deployment containing it (None unpins)."""
        existing = await self.pin_of(tenant, workflow)
        if dep_id is None:
            if existing is not None:
                await self.repo.delete(PIN, existing.id)
                await self._tidy(tenant)
            return None
        dep = await self.get(tenant, dep_id)
        if dep.data.get("status") != READY:
            raise Conflict(f"deployment {dep_id} is {dep.data.get('status')}, not ready")
        if workflow not in dep.data.get("workflows", ()):
            raise ValidationFailed(issues=[Issue(
                message=f"deployment {dep_id} has no workflow {workflow!r}", path="workflow")])
        now = self.clock.now()
        if existing is not None:
            pin = await self.repo.merge(existing, now, deployment_id=dep_id)
        else:
            pin = CloudObject(PIN, new_job_id(), tenant, now, now, {"deployment_id": dep_id},
                              name=workflow)
            await self.repo.insert(pin)
        await self._tidy(tenant)  # the deployment it ran before may be out of service
        return pin

    async def rollback(self, tenant: str, workflow: str, dep_id: str | None) -> CloudObject:
        """Pin `workflow` to `dep_id`, or to the ready deployment before the current one."""
        if dep_id is None:
            current = await self.resolve(tenant, workflow)
            older = [d for d in await self.candidates(tenant, workflow) if d.id < current.id]
            if not older:
                raise Conflict(f"workflow {workflow!r} has no earlier ready deployment")
            dep_id = older[0].id
        await self.pin(tenant, workflow, dep_id)
        return await self.get(tenant, dep_id)

    async def delete_workflow(self, tenant: str, workflow: str) -> bool:
        """Hide `workflow` from every deployment so far and drop its pin; False if unknown."""
        found = await self.candidates(tenant, workflow)
        pin = await self.pin_of(tenant, workflow)
        if not found and pin is None:
            return False
        if pin is not None:
            await self.repo.delete(PIN, pin.id)
        newest = max((d.id for d in await self.list_for(tenant)), default="")
        now = self.clock.now()
        hidden = await self.repo.by_name(DELETED, tenant, workflow)
        if hidden is not None:
            await self.repo.merge(hidden, now, through=newest)
        else:
            await self.repo.insert(CloudObject(DELETED, new_job_id(), tenant, now, now,
                                               {"through": newest}, name=workflow))
        await self._tidy(tenant)
        return True

    def loaded(self, dep: CloudObject) -> LoadedWorkspace:
        """The loaded workspace of a ready deployment registered here."""
        return self.registry.get(dep.data["workspace"]).require()

    async def load(self, dep: CloudObject) -> LoadedWorkspace:
        """The loaded workspace of a ready deployment, registering it here if needed."""
        return (await self.ensure(dep)).require()
