"""http and python steps end to end: `partitur run` processes and `run_task`, chained.

A real HTTP server runs in this process; its URL reaches the workspace as task input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from http_echo import EchoServer, echo_server

from engine.testing import run_task

WORKFLOW = """\
actions:
  fetch:
    type: http
    description: POST to the echo server; the name goes into the path, query and body.
    input:
      base: { type: string, required: true }
      who: { type: string, required: true }
      token: { type: string, default: "tok-123456" }
    url: "<< input.base >>/echo/users/<< input.who | urlencode >>"
    method: POST
    headers:
      Authorization: "Bearer << input.token >>"
    query:
      name: "<< input.who >>"
    body:
      who: "<< input.who >>"
      count: 2

  digest:
    type: python
    interpreter: PYTHON
    input:
      echo: { type: object, required: true }
    script: |
      import json, sys
      data = json.load(sys.stdin)
      echo = data["echo"]
      print("summarizing", echo["method"], echo["path"])
      print("OUTPUT: " + json.dumps({
          "method": echo["method"],
          "sent": json.loads(echo["body"]),
          "query": echo["query"],
          "path": echo["path"],
      }))

  report:
    type: python
    interpreter: PYTHON
    file: scripts/report.py

tasks:
  chain:
    input:
      base_url: { type: string, required: true }
      who: { type: string, default: "Ada Lovelace/&?#" }
    flow:
      call:
        action: fetch
        input:
          base: "<< input.base_url >>"
          who: "<< input.who >>"
      summarize:
        depends_on: [call]
        action: digest
        input:
          echo: "<< steps.call.output.body >>"
      write-report:
        depends_on: [summarize]
        action: report
        input:
          status: "<< steps.call.output.status >>"
          summary: "<< steps.summarize.output >>"

  flaky:
    input:
      base_url: { type: string, required: true }
      key: { type: string, required: true }
    flow:
      call:
        type: http
        input:
          base_url: "<< input.base_url >>"
          key: "<< input.key >>"
        url: "<< input.base_url >>/flaky/<< input.key >>"
        query: { fail: 2 }
        retry: { max_attempts: 3, delay: 0.1s }

  rejected:
    input:
      base_url: { type: string, required: true }
    flow:
      call:
        type: http
        input: { base_url: "<< input.base_url >>" }
        url: "<< input.base_url >>/status/418"
      after:
        depends_on: [call]
        type: python
        interpreter: PYTHON
        script: print("never")

  injected:
    input:
      base_url: { type: string, required: true }
      note: { type: string, required: true }
    flow:
      call:
        type: http
        input: { base_url: "<< input.base_url >>", note: "<< input.note >>" }
        url: "<< input.base_url >>/echo"
        headers:
          X-Note: "<< input.note >>"

  literal:
    input:
      code: { type: string, required: true }
    flow:
      run:
        type: python
        interpreter: PYTHON
        input:
          code: "<< input.code >>"
        script: |
          import json, os
          # Templates are not rendered in python source: this stays a literal string.
          template = "<< input.code >>"
          given = json.loads(os.environ["PARTITUR_INPUT"])["code"]
          print("OUTPUT: " + json.dumps({"template": template, "given": given}))
"""

REPORT = """\
import json, os, sys

data = json.load(sys.stdin)
summary = data["summary"]
line = f"{summary['method']} -> {data['status']} for {summary['sent']['who']}"
print(line)
with open(os.environ["PARTITUR_OUTPUT"], "w") as out:
    json.dump({"line": line, "cwd": os.path.basename(os.getcwd())}, out)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    with echo_server() as srv:
        yield srv


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "actions-ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / "scripts").mkdir()
    (ws / ".workflows" / "actions.yaml").write_text(
        WORKFLOW.replace("PYTHON", json.dumps(sys.executable)))
    (ws / "scripts" / "report.py").write_text(REPORT)
    return ws


def partitur(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args],
                          capture_output=True, text=True, timeout=60)


def run_json(workspace: Path, task: str, **inputs: str) -> tuple[int, dict[str, Any], str]:
    args = ["run", task, "--workspace", str(workspace), "--json"]
    for key, value in inputs.items():
        args += ["-i", f"{key}={value}"]
    result = partitur(*args)
    job = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, job, result.stderr


def steps_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_name"]: step for step in job["steps"]}


def test_cli_chains_http_into_python_inline_and_file(
    server: EchoServer, workspace: Path
) -> None:
    code, job, err = run_json(workspace, "chain", base_url=server.url)
    assert code == 0, err
    assert job["status"] == "completed"
    steps = steps_of(job)
    call = steps["call"]["output"]
    assert call["status"] == 200
    assert call["body"]["headers"]["authorization"] == "Bearer tok-123456"
    # The name went into the path (encoded), the query and the JSON body intact.
    summary = steps["summarize"]["output"]
    assert summary["method"] == "POST"
    assert summary["sent"] == {"who": "Ada Lovelace/&?#", "count": 2}
    assert summary["query"] == [["name", "Ada Lovelace/&?#"]]
    assert summary["path"] == "/echo/users/Ada%20Lovelace/%26%3F%23"
    assert unquote(summary["path"]) == "/echo/users/Ada Lovelace/&?#"
    report = steps["write-report"]["output"]
    assert report == {"line": "POST -> 200 for Ada Lovelace/&?#", "cwd": workspace.name}


def test_cli_logs_the_request_but_not_the_token(server: EchoServer, workspace: Path) -> None:
    result = partitur("run", "chain", "--workspace", str(workspace), "-i",
                      f"base_url={server.url}")
    assert result.returncode == 0, result.stderr
    assert f"POST {server.url}/echo/users/Ada%20Lovelace/%26%3F%23?name=Ada" in result.stdout
    assert "> Authorization: ••••••" in result.stdout
    assert "< 200 OK" in result.stdout
    assert "tok-123456" not in result.stdout
    assert "summarizing POST /echo/users/" in result.stdout


def test_cli_retries_a_failing_request_by_the_retry_policy(
    server: EchoServer, workspace: Path
) -> None:
    code, job, err = run_json(workspace, "flaky", base_url=server.url, key="cli-retry")
    assert code == 0, err
    assert server.hits["cli-retry"] == 3
    assert steps_of(job)["call"]["output"]["body"] == {"hit": 3}


def test_cli_error_status_fails_the_step_and_skips_downstream(
    server: EchoServer, workspace: Path
) -> None:
    code, job, _ = run_json(workspace, "rejected", base_url=server.url)
    assert code == 1
    steps = steps_of(job)
    assert steps["call"]["status"] == "failed"
    assert "answered 418: status 418 says no" in steps["call"]["error_message"]
    assert steps["after"]["status"] == "skipped"


def test_cli_refuses_a_header_with_a_line_break(server: EchoServer, workspace: Path) -> None:
    code, job, _ = run_json(workspace, "injected", base_url=server.url,
                            note="hi\r\nX-Injected: yes")
    assert code == 1
    error = steps_of(job)["call"]["error_message"]
    assert error == "header 'X-Note' contains CR, LF or NUL; refused"


async def test_run_task_chains_http_and_python(server: EchoServer, workspace: Path) -> None:
    run = await run_task(workspace, "chain", {"base_url": server.url, "who": "Grace"})
    assert run.state.status.value == "completed", run.state
    summary = run.state.steps["summarize"].output
    assert summary["sent"] == {"who": "Grace", "count": 2}
    assert run.state.steps["write-report"].output["line"] == "POST -> 200 for Grace"
    assert "summarizing POST /echo/users/Grace" in run.step_lines("summarize")
    assert "Grace" in run.step_lines("write-report")[0]


async def test_run_task_python_source_is_never_templated(workspace: Path) -> None:
    hostile = 'x"; import os; os._exit(7); "'
    run = await run_task(workspace, "literal", {"code": hostile})
    assert run.state.status.value == "completed", run.state
    output = run.state.steps["run"].output
    assert output == {"template": "<< input.code >>", "given": hostile}


async def test_run_task_file_outside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "escape-ws"
    (ws / ".workflows").mkdir(parents=True)
    (tmp_path / "evil.py").write_text("print('OUTPUT: 1')")
    (ws / ".workflows" / "w.yaml").write_text(textwrap.dedent(f"""\
        tasks:
          escape:
            flow:
              run:
                type: python
                interpreter: {json.dumps(sys.executable)}
                file: ../evil.py
    """))
    run = await run_task(ws, "escape")
    assert run.state.status.value == "failed"
    assert run.state.steps["run"].error == (
        "python file '../evil.py' is outside the workspace folder")
