"""`partitur explain JOB --server URL` against a real server, and `partitur run --dry-run`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess

WS = Path(__file__).resolve().parents[1] / "fixtures" / "control_ws"


def partitur(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("control-cli"), workspaces={"main": WS})
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def test_explain_prints_the_reasons_the_api_gives(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=15.0) as client:
        job_id = client.post("/api/workspaces/main/tasks/fails/execute",
                             json={}).json()["job_id"]
        deadline = time.monotonic() + 20
        while client.get(f"/api/jobs/{job_id}").json()["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    result = partitur("explain", job_id, "--server", server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"job {job_id}: failed (job failed: step boom failed")
    assert "downstream" in lines[1] and "skipped because boom failed" in lines[1]

    as_json = partitur("explain", job_id, "--server", server.url, "--json")
    data = json.loads(as_json.stdout)
    assert data["steps"][0]["code"] == "dependency_failed"


def test_explain_of_an_unknown_job_exits_1(server: ServerProcess) -> None:
    result = partitur("explain", "0190c0de-0000-7000-8000-000000000000", "--server", server.url)
    assert result.returncode == 1
    assert "not found" in result.stderr and "HTTP 404" in result.stderr


def test_run_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = partitur("run", "plan", "--workspace", str(WS), "--dry-run", "-i", "go=false",
                      "--input-json", json.dumps({"name": str(marker)}))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gated: skip (when was false (rendered: False))" in out
    assert "loop: expand (2 instances)" in out
    assert 'loop[1]: {"x":"item b of 2"}' in out
    assert "uses-output: run" in out and "needs the output of first" in out
    assert "s3cr3t" not in out and "hunter2" not in out
    assert not marker.exists()

    as_json = json.loads(partitur("run", "plan", "--workspace", str(WS), "--dry-run",
                                  "--json").stdout)
    assert [s["action"] for s in as_json["steps"]] == [
        "run", "skip", "skip", "expand", "run", "at_run_time", "run"]


def test_run_dry_run_with_bad_input_exits_2_naming_every_field() -> None:
    result = partitur("run", "echo", "--workspace", str(WS), "--dry-run", "-i", "count=x")
    assert result.returncode == 2
    assert "count" in result.stderr and "msg" in result.stderr
