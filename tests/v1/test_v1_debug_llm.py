"""`debug.llm` in debug reports, through a real server and a local OpenAI-compatible
endpoint: the LLM's notes are added once per failed job; an endpoint that fails, or none
configured, changes nothing else."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from harness import ServerProcess, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from v1_helpers import call, deploy, wait_job

ANSWER = "The step exits with code 3 on purpose: remove the `exit 3`."


@dataclass
class FakeLlm:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlm]:
    port = free_port()
    fake = FakeLlm(f"http://127.0.0.1:{port}/v1")

    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        fake.requests.append({"body": body, "auth": request.headers.get("authorization")})
        return JSONResponse({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ANSWER},
             "finish_reason": "stop"}]})

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    yield fake
    server.should_exit = True
    thread.join(5)


def failed_job(client: httpx.Client) -> str:
    deploy(client)
    job_id: str = call(client, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
    assert wait_job(client, job_id)["status"] == "failed"
    return job_id


def test_llm_notes_are_added_once_per_failed_job(tmp_path: Path, llm: FakeLlm) -> None:
    server = ServerProcess(tmp_path, settings={"secrets_key": "k", "debug": {"llm": {
        "endpoint": llm.url, "model": "tiny-model", "api_key": "sk-test"}}}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            job_id = failed_job(client)
            report = call(client, "jobs/debugReport", {"id": job_id})
            assert report["llm_notes"] == ANSWER and report["llm_model"] == "tiny-model"
            assert report["llm_error"] is None
            # The rule-based report is all there besides.
            assert report["tldr"] and "going down" in report["handoff_prompt"]
            assert len(llm.requests) == 1
            sent = llm.requests[0]
            assert sent["auth"] == "Bearer sk-test" and sent["body"]["model"] == "tiny-model"
            assert job_id in sent["body"]["messages"][0]["content"]
            # Kept: the workspace API's report and a second read do not ask again.
            api = client.get(f"/api/jobs/{job_id}/debug-report").json()
            assert api["llm_notes"] == ANSWER
            assert call(client, "jobs/debugReport", {"id": job_id})["llm_notes"] == ANSWER
            assert len(llm.requests) == 1
            # A job that has not failed is not sent.
            ok = call(client, "jobs/create", {"workflow": "greet", "params": {"name": "a"}})
            assert wait_job(client, ok["job_id"])["status"] == "completed"
            assert call(client, "jobs/debugReport", {"id": ok["job_id"]})["llm_notes"] is None
            assert len(llm.requests) == 1
    finally:
        server.close()


def test_an_llm_that_fails_leaves_the_report_whole(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, settings={"secrets_key": "k", "debug": {"llm": {
        "endpoint": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}}}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            job_id = failed_job(client)
            report = call(client, "jobs/debugReport", {"id": job_id})
            assert report["llm_notes"] is None and "did not answer" in report["llm_error"]
            assert report["tldr"] and report["handoff_prompt"]
            api = client.get(f"/api/jobs/{job_id}/debug-report")
            assert api.status_code == 200 and api.json()["llm_notes"] is None
    finally:
        server.close()


def test_without_debug_llm_nothing_is_added(v1: httpx.Client) -> None:
    job_id = failed_job(v1)
    report = call(v1, "jobs/debugReport", {"id": job_id})
    assert report["tldr"] and report["handoff_prompt"]
    assert not {"llm_notes", "llm_model", "llm_error"} & set(report)
