"""The control commands of the `partitur` CLI: `explain JOB` and `run --dry-run`.

`explain` asks a server (`GET /api/jobs/{id}/explain`) and prints one line per step that
has not run; `run --dry-run` computes the plan locally with `engine.dryrun`, the same
function the dry-run route calls, so nothing executes and no store is opened.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "PARTITUR_SERVER"
TOKEN_ENV = "PARTITUR_TOKEN"


def add_explain_parser(sub: Any) -> None:
    """`partitur explain JOB [--server URL] [--token T] [--json]`."""
    explain = sub.add_parser("explain", help="say why a job's steps have not run")
    explain.add_argument("job")
    explain.add_argument("--server", default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
                         help=f"the server's URL (default ${SERVER_ENV} or {DEFAULT_SERVER})")
    explain.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                         help=f"an API key or access token (default ${TOKEN_ENV})")
    explain.add_argument("--json", action="store_true", help="print the answer as JSON")


def format_explanation(data: dict[str, Any]) -> str:
    """The text `partitur explain` prints."""
    head = f"job {data['job_id']}: {data['status']}"
    if data.get("reason"):
        head += f" ({data['reason']})"
    lines = [head]
    steps = data.get("steps") or []
    width = max((len(s["step"]) for s in steps), default=0)
    for step in steps:
        lines.append(f"  {step['step'].ljust(width)}  {step['status']:<9}  {step['reason']}")
    if not steps:
        lines.append("  every step ran")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    import httpx  # client commands only: `partitur serve` does not load it

    url = f"{args.server.rstrip('/')}/api/jobs/{args.job}/explain"
    try:
        response = httpx.get(url, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"partitur: cannot reach {args.server}: {exc}\n")
        return 1
    if response.status_code != 200:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        sys.stderr.write(f"partitur: {message} (HTTP {response.status_code})\n")
        return 1
    data = response.json()
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_explanation(data) + "\n")
    return 0


def format_plan(data: dict[str, Any]) -> str:
    """The text `partitur run --dry-run` prints."""
    lines = [f"dry run of {data['workspace']}/{data['task']} (revision {data['revision']})",
             f"input: {orjson.dumps(data['input']).decode()}"]
    for step in data["steps"]:
        line = f"  {step['step']}: {step['action']}"
        if step.get("reason"):
            line += f" ({step['reason']})"
        lines.append(line)
        if step.get("input_needs"):
            lines.append(f"      input: needs the output of {', '.join(step['input_needs'])}")
        elif step.get("input") and step["action"] != "expand":
            lines.append(f"      input: {orjson.dumps(step['input']).decode()}")
        for instance in step.get("instances") or []:
            shown = orjson.dumps(instance.get("input")).decode()
            lines.append(f"      {instance['step']}: {shown}")
    return "\n".join(lines)


def dry_run_local(workspace: Path, task: str, raw_input: dict[str, Any], as_json: bool) -> int:
    """Print the plan of `task` in the workspace folder; 1 if a step would fail to render."""
    import time

    from engine.dryrun import FAIL, dry_run
    from engine.workspaces import WorkspaceRegistry

    name = workspace.name
    registry = WorkspaceRegistry({name: workspace}, None)
    registry.load_all()
    result = dry_run(registry.get(name), task, raw_input, now=time.time()).to_dict()
    if as_json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_plan(result) + "\n")
    return 1 if any(s["action"] == FAIL for s in result["steps"]) else 0
