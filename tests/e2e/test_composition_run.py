"""`partitur run` in a real process: sub-jobs, hooks, concurrency and task state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "workspaces" / "composition"

YAML = """
actions:
  mark:
    type: shell
    input:
      name: {type: string, required: true}
    script: echo << input.name >> > "hook-<< input.name >>.txt"
tasks:
  child:
    input:
      n: {type: integer, default: 1}
    flow:
      square:
        type: shell
        input: {n: "<< input.n >>"}
        script: |
          echo 'OUTPUT: {"v":' $(( << input.n >> * << input.n >> )) '}'
  parent:
    flow:
      sub: {type: task, task: child, input: {n: 7}}
    on_success:
      - action: mark
        input: {name: "<< hook.status >>-<< hook.task_name >>"}
  bad-child:
    flow:
      boom: {type: shell, script: echo nope >&2; exit 5}
  bad-parent:
    flow:
      sub: {type: task, task: bad-child}
      after: {depends_on: [sub], type: shell, script: echo never}
    on_error:
      - action: mark
        input: {name: "<< hook.failed_steps[0].step_name >>"}
"""


def partitur(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(textwrap.dedent(YAML))
    return ws


def test_a_sub_job_runs_and_its_output_is_the_steps_and_the_hook_fires(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    result = partitur("run", "parent", "--workspace", str(ws), "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    (step,) = job["steps"]
    assert step["output"] == {"square": {"v": 49}}
    assert step["child_job_id"]
    assert (ws / "hook-completed-parent.txt").read_text() == "completed-parent\n"


def test_a_failed_sub_job_fails_the_parent_and_fires_on_error(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    result = partitur("run", "bad-parent", "--workspace", str(ws))
    assert result.returncode == 1
    assert "child job" in result.stderr and "exit code 5" in result.stderr
    assert (ws / "hook-sub.txt").read_text() == "sub\n"


def test_the_composition_example_runs(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'keep.db'}"
    first = partitur("run", "release", "--workspace", str(EXAMPLE), "--json", "--db", db)
    assert first.returncode == 0, first.stderr
    job = json.loads(first.stdout)
    steps = {s["step_name"]: s for s in job["steps"]}
    assert steps["build"]["output"]["package"]["artifact"] == "app-1.0.0.tar.gz"
    assert steps["count"]["output"] == {"previous": 0}
    # The task state carries over to the next job in the same store.
    second = partitur("run", "release", "--workspace", str(EXAMPLE), "--json", "--db", db)
    assert second.returncode == 0, second.stderr
    steps = {s["step_name"]: s for s in json.loads(second.stdout)["steps"]}
    assert steps["count"]["output"] == {"previous": 1}
