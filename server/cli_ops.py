"""The operator commands of the `partitur` CLI: `execute`, `pause`, `resume`, `rerun`,
`diff`, `approve` and `reject`.

Like `jobs`, `logs` and `cancel` (`server.cli_client`), they talk to a running server over
the workspace API (`/api`) with `--server` and `--token`:

- `execute TASK --workspace WS [-i K=V]… [--priority N] [--dry-run] [--follow]` →
  `POST /api/workspaces/{ws}/tasks/{name}/execute` (or `…/dry-run`);
- `pause JOB` / `resume JOB` → `POST /api/jobs/{id}/pause|resume`;
- `pause --workspace WS [--task T]` / `resume --workspace WS [--task T]` →
  `POST /api/workspaces/{ws}[/tasks/{name}]/pause|resume`;
- `rerun JOB [--from-step S] [-i K=V]… [--input-json J]` → `POST /api/jobs/{id}/rerun`;
- `diff A B` → `GET /api/jobs/{a}/diff/{b}`;
- `approve JOB STEP [-i K=V]…` / `reject JOB STEP [--reason R]` →
  `POST /api/jobs/{id}/steps/{step}/approve`.

Every command prints one line (or `--json`), exits 0 on success, 1 when the server
refuses or cannot be reached, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from server.cli_client import _common, _error, _follow, _headers
from server.cli_control import format_plan

if TYPE_CHECKING:
    import httpx


class UsageError(Exception):
    """A bad combination of options (exit 2)."""


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def _input_flags(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-i", "--input", dest="inputs", action="append", default=[],
                        metavar="KEY=VALUE",
                        help=f"{what} (text, coerced by the input schema on the server)")
    parser.add_argument("--input-json", default=None, help="the values as a JSON object")


def add_ops_parsers(sub: Any) -> None:
    """`partitur execute|pause|resume|rerun|diff|approve|reject`."""
    execute = sub.add_parser("execute", help="start a job of a task on a server")
    execute.add_argument("task")
    execute.add_argument("--workspace", required=True)
    _input_flags(execute, "an input value")
    execute.add_argument("--priority", type=int, choices=range(1, 6), metavar="1-5",
                         help="1 (highest) to 5; default: the task's")
    execute.add_argument("--dry-run", action="store_true",
                         help="print the server's plan; start nothing, record no job")
    execute.add_argument("--follow", "-f", action="store_true",
                         help="stream the job's log lines until it ends")
    _json_flag(execute)
    _common(execute)

    for name, verb in (("pause", "pause"), ("resume", "resume")):
        parser = sub.add_parser(
            name, help=f"{verb} a job, or a whole task or workspace (--workspace)")
        parser.add_argument("job", nargs="?", help="the job (omit with --workspace)")
        parser.add_argument("--workspace", help=f"{verb} every new job of this workspace")
        parser.add_argument("--task", help=f"with --workspace: {verb} only this task")
        if name == "pause":
            parser.add_argument("--reason", help="why (recorded with the event)")
        _json_flag(parser)
        _common(parser)

    rerun = sub.add_parser("rerun", help="run a job's task again, optionally edited")
    rerun.add_argument("job")
    rerun.add_argument("--from-step", help="reuse the outputs upstream of this step")
    _input_flags(rerun, "change one input value of the original job")
    _json_flag(rerun)
    _common(rerun)

    diff = sub.add_parser("diff", help="compare two jobs: inputs, steps, outputs, durations")
    diff.add_argument("a", help="the baseline job")
    diff.add_argument("b", help="the job compared with it")
    _json_flag(diff)
    _common(diff)

    approve = sub.add_parser("approve", help="approve a step waiting for approval")
    approve.add_argument("job")
    approve.add_argument("step")
    _input_flags(approve, "a value the approval asks for")
    _json_flag(approve)
    _common(approve)

    reject = sub.add_parser("reject", help="reject a step waiting for approval")
    reject.add_argument("job")
    reject.add_argument("step")
    reject.add_argument("--reason", help="why (recorded with the event)")
    _json_flag(reject)
    _common(reject)


# --- HTTP ----------------------------------------------------------------------------


def _url(args: argparse.Namespace, *parts: str) -> str:
    return str(args.server).rstrip("/") + "/api/" + "/".join(quote(p, safe="") for p in parts)


def _call(args: argparse.Namespace, method: str, url: str,
          body: dict[str, Any] | None = None) -> dict[str, Any] | int:
    """The JSON answer, or the exit code after printing the error."""
    import httpx  # client commands only: `partitur serve` does not load it

    try:
        response = httpx.request(method, url, json=body, headers=_headers(args), timeout=30.0)
    except httpx.HTTPError as exc:
        return _error(args, None, exc)
    if response.status_code != 200:
        _error(args, response)
        _issues(response)
        return 1
    answer: dict[str, Any] = response.json()
    return answer


def _issues(response: httpx.Response) -> None:
    """One line per bad field, unless the error message already names them all."""
    try:
        data = response.json()
        issues = data.get("issues") or []
        message = str(data.get("error", ""))
    except (ValueError, AttributeError):
        return
    if all(str(issue.get("message", "")) in message for issue in issues):
        return
    for issue in issues:
        path = f"{issue['path']}: " if issue.get("path") else ""
        sys.stderr.write(f"  {path}{issue.get('message', '')}\n")


def _print(args: argparse.Namespace, answer: dict[str, Any], text: str) -> int:
    if args.json:
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


def _values(args: argparse.Namespace) -> dict[str, Any] | None:
    """`--input-json` then every `-i KEY=VALUE` over it; None when neither is given."""
    if args.input_json is None and not args.inputs:
        return None
    values: dict[str, Any] = {}
    if args.input_json is not None:
        try:
            loaded = json.loads(args.input_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--input-json is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError("--input-json must be a JSON object")
        values.update(loaded)
    for item in args.inputs:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-i expects KEY=VALUE, got {item!r}")
        values[key] = text
    return values


def _usage(message: str) -> int:
    sys.stderr.write(f"partitur: error: {message}\n")
    return 2


# --- commands ------------------------------------------------------------------------


def cmd_execute(args: argparse.Namespace) -> int:
    try:
        values = _values(args) or {}
    except UsageError as exc:
        return _usage(str(exc))
    if args.dry_run and (args.priority is not None or args.follow):
        return _usage("--dry-run takes no --priority or --follow")
    body: dict[str, Any] = {"input": values}
    if args.priority is not None:
        body["priority"] = args.priority
    verb = "dry-run" if args.dry_run else "execute"
    answer = _call(args, "POST", _url(args, "workspaces", args.workspace, "tasks", args.task,
                                      verb), body)
    if isinstance(answer, int):
        return answer
    if args.dry_run:
        _print(args, answer, format_plan(answer))
        return 1 if any(s["action"] == "fail" for s in answer["steps"]) else 0
    _print(args, answer, f"job {answer['job_id']}")
    if not args.follow:
        return 0
    sys.stdout.flush()
    args.job, args.step = answer["job_id"], None
    return asyncio.run(_follow(args))


def _by(answer: dict[str, Any]) -> str:
    who = answer.get("paused_by")
    reason = answer.get("reason")
    return (f" by {who}" if who else "") + (f": {reason}" if reason else "")


def _scope(args: argparse.Namespace, pause: bool) -> int:
    if args.job is not None and args.workspace is not None:
        return _usage("give a JOB or --workspace, not both")
    if args.job is None and args.workspace is None:
        return _usage("give a JOB, or --workspace WS [--task T]")
    if args.task is not None and args.workspace is None:
        return _usage("--task needs --workspace")
    verb = "pause" if pause else "resume"
    body = {"reason": args.reason} if pause and args.reason else {}
    if args.job is not None:
        answer = _call(args, "POST", _url(args, "jobs", args.job, verb), body)
        if isinstance(answer, int):
            return answer
        state = "paused" + _by(answer) if answer["paused"] else f"resumed ({answer['status']})"
        return _print(args, answer, f"job {args.job}: {state}")
    parts = ["workspaces", args.workspace]
    if args.task is not None:
        parts += ["tasks", args.task]
    answer = _call(args, "POST", _url(args, *parts, verb), body)
    if isinstance(answer, int):
        return answer
    what = (f"task {args.workspace}/{args.task}" if args.task
            else f"workspace {args.workspace}")
    if answer.get("paused"):
        held = answer.get("paused_scope")
        note = (f" (still held: workspace {args.workspace} is paused)"
                if not pause and held == "workspace" else "")
        state = ("paused" + _by(answer)) if pause else "still paused" + note
    else:
        state = "resumed"
    return _print(args, answer, f"{what}: {state}")


def cmd_pause(args: argparse.Namespace) -> int:
    return _scope(args, pause=True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _scope(args, pause=False)


def cmd_rerun(args: argparse.Namespace) -> int:
    try:
        values = _values(args)
    except UsageError as exc:
        return _usage(str(exc))
    body: dict[str, Any] = {}
    if args.from_step:
        body["from_step"] = args.from_step
    if values is not None:
        # Changes over the original job's input, merged by the server (which holds the
        # unmasked values of secret inputs).
        body["input_changes"] = values
    answer = _call(args, "POST", _url(args, "jobs", args.job, "rerun"), body)
    if isinstance(answer, int):
        return answer
    return _print(args, answer, f"job {answer['job_id']} (re-run of {args.job})")


def _show(value: Any) -> str:
    return orjson.dumps(value).decode()


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def format_diff(data: dict[str, Any]) -> str:
    """The text `partitur diff A B` prints."""
    task = data["task"]
    head = (f"job {data['a']} → {data['b']}"
            + (f" ({task['a']})" if data["same_task"] else f" ({task['a']} → {task['b']})"))
    lines = [head, f"status: {data['status']['a']} → {data['status']['b']}",
             f"duration: {_seconds(data['duration']['a'])} → "
             f"{_seconds(data['duration']['b'])}"]
    for section in ("input", "output"):
        changes = data[section]["changes"]
        lines.append(f"{section}: " + ("same" if not changes else f"{len(changes)} change(s)"))
        lines.extend(_change_lines(changes, "  "))
    lines.append("steps:")
    width = max((len(s["step"]) for s in data["steps"]), default=0)
    for step in data["steps"]:
        status = step["status"]
        shown = (status["a"] if not step["status_changed"]
                 else f"{status['a'] or '-'} → {status['b'] or '-'}")
        marks = []
        if step.get("only_in"):
            marks.append(f"only in {step['only_in']}")
        if step["output_changed"]:
            marks.append("output differs")
        if step.get("error"):
            marks.append("error differs")
        duration = step["duration"]
        line = (f"  {step['step'].ljust(width)}  {shown:<22} "
                f"{_seconds(duration['a'])} → {_seconds(duration['b'])}")
        if marks:
            line += "  " + ", ".join(marks)
        lines.append(line)
        if step["output_changed"]:
            lines.extend(_change_lines(step["output"]["changes"], "      "))
    return "\n".join(lines)


def _change_lines(changes: list[dict[str, Any]], indent: str) -> list[str]:
    out = []
    for change in changes:
        path = change["path"] or "(value)"
        if change.get("only_in") == "a":
            out.append(f"{indent}{path}: {_show(change['a'])} → (absent)")
        elif change.get("only_in") == "b":
            out.append(f"{indent}{path}: (absent) → {_show(change['b'])}")
        else:
            out.append(f"{indent}{path}: {_show(change['a'])} → {_show(change['b'])}")
    return out


def cmd_diff(args: argparse.Namespace) -> int:
    answer = _call(args, "GET", _url(args, "jobs", args.a, "diff", args.b))
    if isinstance(answer, int):
        return answer
    return _print(args, answer, format_diff(answer))


def cmd_approve(args: argparse.Namespace) -> int:
    try:
        values = _values(args)
    except UsageError as exc:
        return _usage(str(exc))
    body: dict[str, Any] = {"approved": True}
    if values is not None:
        body["input"] = values
    return _decide(args, body)


def cmd_reject(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"approved": False}
    if args.reason:
        body["rejection_reason"] = args.reason
    return _decide(args, body)


def _decide(args: argparse.Namespace, body: dict[str, Any]) -> int:
    answer = _call(args, "POST", _url(args, "jobs", args.job, "steps", args.step, "approve"),
                   body)
    if isinstance(answer, int):
        return answer
    verb = "approved" if body["approved"] else "rejected"
    return _print(args, answer, f"job {args.job}: step {args.step} {verb} "
                                f"(now {answer['status']})")


HANDLERS = {"execute": cmd_execute, "pause": cmd_pause, "resume": cmd_resume,
            "rerun": cmd_rerun, "diff": cmd_diff, "approve": cmd_approve, "reject": cmd_reject}
