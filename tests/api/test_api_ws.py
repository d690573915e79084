"""The WebSocket log stream against a live server: backfill, live lines, cursors,
typed frames, 50 concurrent clients, and a stuck client that must not hold anyone up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from api_helpers import api_workspaces, execute, wait_job, wait_step
from harness import ServerProcess


async def collect(url: str, **kwargs: Any) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every frame until the server closes; with the close code and reason."""
    frames: list[dict[str, Any]] = []
    async with websockets.connect(url, **kwargs) as ws:
        try:
            async for message in ws:
                frames.append(orjson.loads(message))
        except websockets.ConnectionClosedError:
            pass  # a close code other than 1000/1001: returned below
        return frames, ws.close_code, ws.close_reason


async def follow(url: str) -> list[dict[str, Any]]:
    """Read to the end like a well-behaved client: on 1013, resume from the last cursor."""
    frames: list[dict[str, Any]] = []
    for _ in range(100):
        sep = "&" if "?" in url else "?"
        resume = f"{url}{sep}after={frames[-1]['cursor']}" if frames else url
        got, code, _ = await collect(resume, max_queue=None)
        frames += got
        if code == 1000:
            return frames
        assert code == 1013
    raise AssertionError("the stream never ended")


def stored_lines(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    text = client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
    return [orjson.loads(line) for line in text.splitlines()]


def strip(frame: dict[str, Any]) -> dict[str, Any]:
    return {k: frame[k] for k in ("ts", "stream", "step", "line")}


async def test_finished_job_backfill_then_close_1000(api_server: ServerProcess,
                                                     client: httpx.Client) -> None:
    job_id = execute(client, "hello", {"name": "Bo"})
    wait_job(client, job_id)
    frames, code, _ = await collect(f"{api_server.ws_url}/api/jobs/{job_id}/logs/stream")
    assert code == 1000
    assert [strip(f) for f in frames] == stored_lines(client, job_id)
    assert [f["cursor"] for f in frames] == [f"{i}.0" for i in range(1, len(frames) + 1)]


async def test_live_job_every_line_once_in_order(api_server: ServerProcess,
                                                 client: httpx.Client) -> None:
    job_id = execute(client, "slow", {"lines": 15, "delay": 0.03})
    frames, code, _ = await collect(f"{api_server.ws_url}/api/jobs/{job_id}/logs/stream")
    assert code == 1000
    assert [strip(f) for f in frames] == stored_lines(client, job_id)
    ticks = [f["line"] for f in frames if f["step"] == "tick"]
    assert ticks == [f"line {i}" for i in range(1, 16)]


async def test_step_filter_and_resume_after_cursor(api_server: ServerProcess,
                                                   client: httpx.Client) -> None:
    job_id = execute(client, "slow", {"lines": 10, "delay": 0.02})
    base = f"{api_server.ws_url}/api/jobs/{job_id}/logs/stream"
    only, code, _ = await collect(f"{base}?step=tick")
    assert code == 1000 and [f["line"] for f in only] == [f"line {i}" for i in range(1, 11)]
    full, _, _ = await collect(base)
    for cut in (1, 4, len(full) - 1):
        rest, code, _ = await collect(f"{base}?after={full[cut - 1]['cursor']}")
        assert code == 1000
        assert [strip(f) for f in full[:cut]] + [strip(f) for f in rest] == \
            [strip(f) for f in full]


async def test_events_format_frames_and_resume(api_server: ServerProcess,
                                               client: httpx.Client) -> None:
    job_id = execute(client, "slow", {"lines": 8, "delay": 0.03})
    url = f"{api_server.ws_url}/api/jobs/{job_id}/logs/stream?format=events"
    frames, code, _ = await collect(url)
    assert code == 1000
    assert frames[-1]["type"] == "end" and frames[-1]["status"] == "completed"
    kinds = {f["type"] for f in frames}
    assert kinds == {"log", "step", "job", "end"}
    logs = [f for f in frames if f["type"] == "log"]
    assert set(logs[0]) == {"type", "cursor", "ts", "step", "stream", "line"}
    steps = [f for f in frames if f["type"] == "step"]
    assert set(steps[0]) == {"type", "cursor", "ts", "step", "status", "attempt", "error"}
    assert [s["status"] for s in steps if s["step"] == "tick"][-1] == "completed"
    assert [j["status"] for j in frames if j["type"] == "job"][-1] == "completed"
    events = client.get(f"/api/jobs/{job_id}/events").json()  # noqa: ASYNC212
    assert int(frames[-1]["cursor"].split(".")[1]) == events[-1]["version"]
    # Cursors only grow, and resuming from any frame gives exactly the remainder.
    cursors = [tuple(map(int, f["cursor"].split("."))) for f in frames]
    assert cursors == sorted(cursors)
    for cut in (1, 5, len(frames) // 2, len(frames) - 2):
        rest, code, _ = await collect(f"{url}&after={frames[cut - 1]['cursor']}")
        assert code == 1000
        # Lines and status frames may interleave differently live and from the backfill;
        # each kind must resume exactly.
        def of(kind: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in f.items() if k != "cursor"} for f in items
                    if f["type"] == kind]

        for kind in ("log", "step", "job", "end"):
            assert of(kind, frames[:cut] + rest) == of(kind, frames), kind


async def test_events_format_masks_secrets_in_step_errors(api_server: ServerProcess,
                                                          client: httpx.Client) -> None:
    job_id = execute(client, "secret-input", {"password": "pw-given-9876"})
    url = f"{api_server.ws_url}/api/jobs/{job_id}/logs/stream?format=events"
    frames, code, _ = await collect(url)
    assert code == 1000 and frames[-1] == {**frames[-1], "type": "end", "status": "failed"}
    errors = [f["error"] for f in frames if f["type"] == "step" and f["step"] == "probe"
              and f["error"]]
    assert errors and all("'••••••' is undefined" in e for e in errors)
    assert "pw-given-9876" not in orjson.dumps(frames).decode()


async def test_bad_requests_close_with_4000_codes(api_server: ServerProcess) -> None:
    base = f"{api_server.ws_url}/api/jobs"
    _, code, reason = await collect(f"{base}/00000000-0000-0000-0000-000000000000/logs/stream")
    assert code == 4404 and "not found" in reason
    _, code, _ = await collect(f"{base}/x/logs/stream?after=abc")
    assert code == 4400
    _, code, _ = await collect(f"{base}/x/logs/stream?format=html")
    assert code == 4400


async def test_fifty_concurrent_clients_get_every_line(api_server: ServerProcess,
                                                       client: httpx.Client) -> None:
    job_id = execute(client, "slow", {"lines": 40, "delay": 0.02})
    wait_step(client, job_id, "tick", "running")
    url = f"{api_server.ws_url}/api/jobs/{job_id}/logs/stream"
    results = await asyncio.gather(*(collect(url) for _ in range(50)))
    expected = stored_lines(client, job_id)
    assert [x["line"] for x in expected if x["step"] == "tick"] == \
        [f"line {i}" for i in range(1, 41)]
    for frames, code, _ in results:
        assert code == 1000
        assert [strip(f) for f in frames] == expected


@pytest.fixture(scope="module")
def small_buffer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("ws-small"), workspaces=api_workspaces(),
                           env={"PARTITUR_WS_BUFFER": "1000"})
    server.start()
    try:
        yield server
    finally:
        server.close()


async def test_stuck_client_is_dropped_without_blocking_others(
        small_buffer_server: ServerProcess) -> None:
    lines = 60_000
    async with httpx.AsyncClient(base_url=small_buffer_server.url, timeout=30) as http:
        r = await http.post("/api/workspaces/main/tasks/flood/execute",
                            json={"input": {"lines": lines}})
        job_id = r.json()["job_id"]
        url = f"{small_buffer_server.ws_url}/api/jobs/{job_id}/logs/stream"
        # A client that stops reading, next to one that reads everything.
        stuck = await websockets.connect(url, max_queue=1)
        try:
            frames = await asyncio.wait_for(follow(url), 40)
            spam = [f for f in frames if f["step"] == "spam"]
            assert len(spam) == lines
            job = (await http.get(f"/api/jobs/{job_id}")).json()
            assert job["status"] == "completed"
            # The stuck client now drains what it was sent and finds the 1013 close.
            got: list[dict[str, Any]] = []
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    got.append(orjson.loads(await asyncio.wait_for(stuck.recv(), 10)))
            assert stuck.close_code == 1013
            assert "?after=" in (stuck.close_reason or "")
            # Resuming from its last cursor gives the rest: no gap, no duplicate.
            cursor = got[-1]["cursor"]
            rest = await follow(f"{url}?after={cursor}")
            assert [strip(f) for f in got + rest] == [strip(f) for f in frames]
            # The log on disk is complete.
            logs = (await http.get(f"/api/jobs/{job_id}/steps/spam/logs")).json()["logs"]
            assert logs.count("\n") == lines
        finally:
            await stuck.close()
