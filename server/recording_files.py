"""`/recordings/{job_id}/{step}/{file}`: a recording served by a signed, expiring link.

The link carries `expires` and `sig` (engine.recordings.UrlSigner); it needs no other
credential, so the trace viewer can fetch it. A bad or expired signature is 403.
"""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from engine.recordings import (
    PREFIX,
    RECORDING_FILES,
    UrlSigner,
    recording_link,
    recording_path,
)
from server.errors import error_response
from server.routes import runtime_of

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_TYPES = {"trace.zip": "application/zip", "video.webm": "video/webm"}


def signer_of(request: Request) -> UrlSigner:
    """The signer the app set up (server.browser_services)."""
    signer: UrlSigner = request.app.state.recording_signer
    return signer


async def recording_file(request: Request) -> Response:
    job_id = request.path_params["job_id"]
    step = request.path_params["step"]
    name = request.path_params["name"]
    if name not in RECORDING_FILES or not _NAME.match(job_id) or not _NAME.match(step) \
            or step.startswith("."):
        return error_response(404, "no such recording")
    query = request.query_params
    if not signer_of(request).verify(recording_path(job_id, step, name), query.get("expires"),
                                     query.get("sig"), time.time()):
        return error_response(403, "the recording link is invalid or has expired; "
                                   "ask recordings/get for a fresh one")
    path = runtime_of(request).options.artifacts_dir / job_id / step / name
    if not path.is_file():
        return error_response(404, "the recording is gone (retention) or was never made")
    return FileResponse(path, media_type=_TYPES[name],
                        headers={"Cache-Control": "private, no-store",
                                 "Access-Control-Allow-Origin": "*",
                                 "X-Content-Type-Options": "nosniff"})


def signed_recording(request: Request, job_id: str, step: str,
                     base_url: str | None = None) -> tuple[str, str]:
    """`(url, expires_at)`: the trace viewer opening a signed link to the step's trace.

    `base_url` defaults to the request's; "" gives a path. The link lives
    `recordings.url_ttl` seconds and needs no credential.
    """
    services = request.app.state.browser_services
    base = str(request.base_url).rstrip("/") if base_url is None else base_url
    return recording_link(services.signer, base, job_id, step, ttl=services.url_ttl)


def recording_routes() -> list[BaseRoute]:
    return [Route(PREFIX + "/{job_id}/{step}/{name}", recording_file, methods=["GET"])]
