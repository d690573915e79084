"""`/api/jobs/{id}/artifacts`: files steps wrote under `$ARTIFACTS_DIR`.

A step's artifacts live in `<artifacts_dir>/<job_id>/<step>/`; an artifact is named by
its path relative to that folder. Names are never used to leave it: `..`, absolute paths
and links pointing outside are refused (404). Only a few content types are served inline;
everything else is sent as an attachment, with `nosniff` and a sandboxing CSP. A
browser step's `trace.zip` also gets `viewer_url`: Partitur's trace viewer opening a
signed, expiring link to it (it needs no credential, so it opens with auth on).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from engine.errors import NotFound
from server.openapi import Endpoint, Param
from server.recording_files import signed_recording
from server.routes import listing, path_param, runtime_of
from server.routes.jobs import get_row

SAFE_INLINE = frozenset({
    "text/plain", "application/json", "image/png", "image/jpeg", "image/gif", "image/webp",
})


def _job_dir(request: Request, job_id: str) -> Path:
    return (runtime_of(request).options.artifacts_dir / job_id).resolve()


def _content_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    if name.endswith((".log", ".txt", ".jsonl")):
        return "text/plain"
    return guessed or "application/octet-stream"


def _entries(base: Path, job_id: str) -> list[dict[str, Any]]:
    if not base.is_dir():
        return []
    out: list[dict[str, Any]] = []
    for step_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
        for path in sorted(step_dir.rglob("*")):
            if not path.is_file() or path.is_symlink():
                continue
            name = path.relative_to(step_dir).as_posix()
            out.append({
                "name": name, "step": step_dir.name, "size": path.stat().st_size,
                "content_type": _content_type(name),
                "url": f"/api/jobs/{job_id}/artifacts/{quote(name)}?step={quote(step_dir.name)}",
            })
    return out


def _safe_relative(name: str) -> PurePosixPath:
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or any(part in ("..", "") for part in name.split("/")) \
            or "\\" in name or "\x00" in name:
        raise NotFound(f"artifact {name!r} not found")
    return rel


def _resolve(base: Path, step: str, rel: PurePosixPath) -> Path | None:
    step_dir = base / step
    path = step_dir / rel
    if path.is_symlink() or not path.is_file():
        return None
    real = path.resolve()
    if not real.is_relative_to(step_dir.resolve()) or not real.is_relative_to(base):
        return None
    return real


async def list_artifacts(request: Request) -> Response:
    row = await get_row(request)
    items = _entries(_job_dir(request, row.job_id), row.job_id)
    for item in items:
        if item["name"] == "trace.zip":  # a browser step's recording: a signed viewer link
            item["viewer_url"], item["viewer_url_expires_at"] = signed_recording(
                request, row.job_id, item["step"])
    return listing(items, len(items))


async def get_artifact(request: Request) -> Response:
    row = await get_row(request)
    name = path_param(request, "name")
    rel = _safe_relative(name)
    base = _job_dir(request, row.job_id)
    step = request.query_params.get("step")
    if step is not None:
        _safe_relative(step)
        steps = [step]
    else:
        steps = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    for candidate in steps:
        path = _resolve(base, candidate, rel)
        if path is not None:
            ctype = _content_type(name)
            headers = {"X-Content-Type-Options": "nosniff",
                       "Content-Security-Policy": "sandbox; default-src 'none'"}
            if ctype in SAFE_INLINE:
                return FileResponse(path, media_type=ctype, headers=headers,
                                    content_disposition_type="inline",
                                    filename=PurePosixPath(name).name)
            return FileResponse(path, media_type=ctype, headers=headers,
                                filename=PurePosixPath(name).name)
    raise NotFound(f"artifact {name!r} not found in job {row.job_id}")


_ARTIFACT = {"type": "object", "properties": {
    "name": {"type": "string"}, "step": {"type": "string"}, "size": {"type": "integer"},
    "content_type": {"type": "string"}, "url": {"type": "string"},
    "viewer_url": {"type": "string"}, "viewer_url_expires_at": {"type": "string"}}}

ENDPOINTS = (
    Endpoint("GET", "/api/jobs/{id}/artifacts", list_artifacts, "List a job's artifacts",
             (200, 404), response={"type": "array", "items": _ARTIFACT}, tag="jobs"),
    Endpoint("GET", "/api/jobs/{id}/artifacts/{name:path}", get_artifact,
             "Download an artifact", (200, 404),
             query=(Param("step", "The step that wrote it (default: the first that has it)"),),
             response={"type": "string", "format": "binary"}, tag="jobs",
             content_type="application/octet-stream"),
)
