"""Helpers of the cloud API tests: envelopes, tarballs of workspaces, polling."""

from __future__ import annotations

import base64
import io
import tarfile
import time
from collections.abc import Mapping
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled"}

WORKFLOWS = """
tasks:
  greet:
    description: Say hello
    input:
      name: {type: string, required: true}
      times: {type: integer, default: 1}
    flow:
      hello:
        input: {name: "<< input.name >>"}
        type: shell
        script: |
          echo "hello << input.name >>"
          echo 'OUTPUT: {"greeting": "hi"}'
  boom:
    flow:
      first:
        type: shell
        script: echo fine
      explode:
        depends_on: [first]
        type: shell
        script: |
          echo "going down" >&2
          exit 3
  slow:
    input:
      seconds: {type: number, default: 30}
    flow:
      wait:
        input: {seconds: "<< input.seconds >>"}
        type: shell
        script: sleep << input.seconds >>
  secretive:
    input:
      credentials: {type: object, secret: true, default: {api_token: null}}
    flow:
      use:
        input: {token: "<< input.credentials.api_token >>"}
        type: shell
        script: |
          echo "token=<< input.token >>"
          echo 'OUTPUT: {"ok": true}'
"""


def tarball(files: Mapping[str, str | bytes], *, prefix: str = "./",
            extra: list[tarfile.TarInfo] | None = None) -> str:
    """A base64 gzip tarball of `files` (with a `./` root entry, as clients make them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        root = tarfile.TarInfo("./")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return base64.b64encode(buf.getvalue()).decode()


def workspace(workflows: str = WORKFLOWS) -> str:
    return tarball({".workflows/main.yaml": workflows})


def call(client: httpx.Client, route: str, body: Mapping[str, Any] | None = None,
         *, status: int = 200, headers: Mapping[str, str] | None = None) -> Any:
    """POST /v1/<route> with `{"json": body}`; check the status; the inner answer."""
    r = client.post(f"/v1/{route}", json={"json": dict(body or {})}, headers=headers)
    assert r.status_code == status, f"{route}: {r.status_code} {r.text}"
    payload = r.json()
    assert isinstance(payload, dict) and "json" in payload, r.text
    return payload["json"]


def deploy(client: httpx.Client, source: str | None = None, *, expect: str = "ready",
           headers: Mapping[str, str] | None = None, timeout: float = 20.0) -> dict[str, Any]:
    created = call(client, "deployments/create",
                   {"source": source or workspace(), "description": "test"}, headers=headers)
    assert created["status"] == "building"
    deadline = time.monotonic() + timeout
    while True:
        dep: dict[str, Any] = call(client, "deployments/sync", {"id": created["deployment_id"]},
                                   headers=headers)
        if dep["status"] != "building":
            assert dep["status"] == expect, dep
            return dep
        assert time.monotonic() < deadline, dep
        time.sleep(0.1)


def wait_job(client: httpx.Client, job_id: str, *, headers: Mapping[str, str] | None = None,
             until: set[str] | None = None, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = call(client, "jobs/get", {"id": job_id}, headers=headers)
        if job["status"] in (until or TERMINAL):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
