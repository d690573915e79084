"""Event triggers: a job's end starts another task; cycles are refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest
from trigger_support import make_runtime, write_workspace

from engine.compiler.validate import load_workspace
from engine.errors import WorkspaceInvalid
from engine.store.base import JobFilter
from engine.testing import FakeClock

WORKSPACE = """
tasks:
  build:
    input:
      mode: { type: string, default: ok }
    flow:
      compile:
        type: shell
        interpreter: sh
        input: { mode: "<< input.mode >>" }
        script: |
          if [ << input.mode >> = fail ]; then exit 3; fi
          echo 'OUTPUT: {"artifact": "app.tar"}'
  notify:
    input:
      job: { type: object }
      output: { type: object }
      channel: { type: string, default: ops }
    flow:
      say: { type: shell, interpreter: sh, script: "echo notified" }
triggers:
  on-build:
    type: event
    task: notify
    input: { channel: builds }
    on: { task: build, status: [completed] }
"""


async def test_a_completed_job_starts_the_event_trigger_task(tmp_path: Path) -> None:
    rt = make_runtime(tmp_path, write_workspace(tmp_path / "ws", WORKSPACE), FakeClock())
    await rt.open()
    rt.start_triggers()
    try:
        ok = await rt.orchestrator.create_job("ws", "build", {})
        await rt.orchestrator.wait(ok, 10)
        bad = await rt.orchestrator.create_job("ws", "build", {"mode": "fail"})
        assert (await rt.orchestrator.wait(bad, 10)).status.value == "failed"
        await rt.event_triggers.drain()
        rows, _ = await rt.store.list_jobs(JobFilter(task_name="notify"))
        assert len(rows) == 1  # the failed build matched no trigger
        job = await rt.orchestrator.wait(rows[0].job_id, 10)
        assert job.source_type == "trigger" and job.source_id == "ws/on-build"
        assert job.input["job"]["id"] == ok and job.input["job"]["status"] == "completed"
        assert job.input["output"] == {"compile": {"artifact": "app.tar"}}
        assert job.input["channel"] == "builds"
    finally:
        await rt.close()


def test_a_cycle_of_event_triggers_is_refused(tmp_path: Path) -> None:
    text = WORKSPACE + """
  back:
    type: event
    task: build
    on: { task: notify }
"""
    folder = write_workspace(tmp_path / "ws", text)
    with pytest.raises(WorkspaceInvalid) as caught:
        load_workspace(folder, "ws")
    issue = next(i for i in caught.value.issues if "cycle" in i.message)
    assert issue.file == ".workflows/main.yaml" and issue.line is not None
    assert "build → notify → build" in issue.message or "notify → build → notify" in issue.message
