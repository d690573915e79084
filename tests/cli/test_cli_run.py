"""`partitur run`: the real orchestrator in a real process, streamed logs, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WS = Path(__file__).parent.parent / "fixtures" / "cli_ws"
EXAMPLES = Path(__file__).parent.parent.parent / "workspaces" / "default"


def partitur(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_runs_independent_steps_concurrently() -> None:
    result = partitur("run", "parallel", "--workspace", str(WS), "--json")
    assert result.returncode == 0, result.stderr
    steps = {s["step_name"]: s["output"] for s in json.loads(result.stdout)["steps"]}
    left, right = steps["left"], steps["right"]
    # The two one-second sleeps overlap in time: neither waited for the other.
    assert left["start"] < right["end"] and right["start"] < left["end"]
    overlap = min(left["end"], right["end"]) - max(left["start"], right["start"])
    assert overlap > 0.5


def test_streams_log_lines_prefixed_by_step() -> None:
    result = partitur("run", "parallel", "--workspace", str(WS))
    assert result.returncode == 0, result.stderr
    assert "left  | left done" in result.stdout
    assert "right | right done" in result.stdout


def test_failed_job_exits_1_and_says_why() -> None:
    result = partitur("run", "fails", "--workspace", str(WS))
    assert result.returncode == 1
    assert "boom | about to fail" in result.stdout
    assert "failed" in result.stderr
    assert "exit code 3" in result.stderr
    assert "something broke" in result.stderr


def test_json_prints_the_job_in_the_api_shape() -> None:
    result = partitur("run", "hello-world", "--workspace", str(EXAMPLES), "-i", "name=Ada",
                      "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "completed"
    assert job["task_name"] == "hello-world"
    assert job["input"] == {"name": "Ada"}
    step = job["steps"][0]
    for key in ("step_name", "action_name", "action_type", "runner", "input", "output",
                "status", "worker_id", "started_at", "completed_at", "error_message"):
        assert key in step
    assert step["output"] == {"greeting": "Hello Ada"}


def test_inputs_are_coerced_by_the_schema() -> None:
    result = partitur("run", "typed", "--workspace", str(WS), "-i", "count=3", "-i", "flag=yes")
    assert result.returncode == 0, result.stderr
    assert "count=3 flag=true" in result.stdout


def test_bad_input_names_each_field_and_runs_nothing() -> None:
    result = partitur("run", "typed", "--workspace", str(WS), "-i", "count=zero",
                      "-i", "extra=1")
    assert result.returncode == 2
    assert "count" in result.stderr
    assert "extra" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_usage_is_one_line_and_exit_2() -> None:
    unknown = partitur("run", "nope", "--workspace", str(WS))
    assert unknown.returncode == 2
    assert "nope" in unknown.stderr and "Traceback" not in unknown.stderr
    missing = partitur("run")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1
    not_ws = partitur("run", "x", "--workspace", "/")
    assert not_ws.returncode == 2
    assert ".workflows" in not_ws.stderr


def test_ctrl_c_cancels_the_job_and_kills_its_processes(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "run", "long", "--workspace", str(WS),
         "-i", f"pidfile={pidfile}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Wait until the step's background child has started.
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "cancelled" in err
    # The step's whole process group is gone, including the background sleep.
    deadline = time.monotonic() + 5
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the step's child process survived the cancel"
        time.sleep(0.05)


def test_steps_get_the_env_vars_of_the_design() -> None:
    result = partitur("run", "env", "--workspace", str(WS), "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    (step,) = job["steps"]
    env = step["output"]
    assert env["job"] == job["job_id"] and env["step"] == "show-env" and env["attempt"] == "1"
    assert env["key"] == f"{job['job_id']}:show-env"  # stable across attempts
    assert env["artifacts"].endswith(f"{job['job_id']}/show-env")


def test_a_one_shot_run_works_in_the_workspace_folder_itself(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(
        "tasks:\n  build:\n    flow:\n      out:\n        type: shell\n"
        "        script: pwd > built.txt\n", "utf-8")
    result = partitur("run", "build", "--workspace", str(ws))
    assert result.returncode == 0, result.stderr
    # No snapshot: the step ran in the folder and what it wrote is there.
    assert Path((ws / "built.txt").read_text("utf-8").strip()).resolve() == ws.resolve()
