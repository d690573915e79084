"""The remote-client commands of the `partitur` CLI: `jobs`, `logs` and `cancel`.

They talk to a running server over the workspace API (`/api`), so they work the same
against one laptop and a cluster. `logs --follow` streams over the WebSocket and ends
when the job does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

if TYPE_CHECKING:
    import httpx  # imported by the commands: `partitur serve` does not load it

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "PARTITUR_SERVER"
TOKEN_ENV = "PARTITUR_TOKEN"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
                        help=f"the server's URL (default ${SERVER_ENV} or {DEFAULT_SERVER})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"an API key or access token (default ${TOKEN_ENV})")


def add_client_parsers(sub: Any) -> None:
    """`partitur jobs`, `partitur logs JOB [--follow]`, `partitur cancel JOB`."""
    jobs = sub.add_parser("jobs", help="list jobs on a server, newest first")
    jobs.add_argument("--workspace")
    jobs.add_argument("--task")
    jobs.add_argument("--status", help="comma-separated statuses")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true", help="print the list as JSON")
    _common(jobs)
    logs = sub.add_parser("logs", help="print a job's log lines")
    logs.add_argument("job")
    logs.add_argument("--step", help="only this step (`_server` for the engine's notes)")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep streaming until the job ends")
    _common(logs)
    cancel = sub.add_parser("cancel", help="cancel a running job")
    cancel.add_argument("job")
    _common(cancel)


def _headers(args: argparse.Namespace) -> dict[str, str]:
    return {"Authorization": f"Bearer {args.token}"} if args.token else {}


def _get(args: argparse.Namespace, path: str, **params: Any) -> httpx.Response:
    import httpx

    query = {k: v for k, v in params.items() if v is not None}
    url = f"{args.server.rstrip('/')}{path}"
    return httpx.get(url, params=query, headers=_headers(args), timeout=30.0)


def _error(args: argparse.Namespace, response: httpx.Response | None,
           exc: Exception | None = None) -> int:
    if exc is not None:
        sys.stderr.write(f"partitur: cannot reach {args.server}: {exc}\n")
        return 1
    assert response is not None
    try:
        message = response.json().get("error", response.text)
    except ValueError:
        message = response.text
    sys.stderr.write(f"partitur: {response.status_code}: {message}\n")
    return 1


def cmd_jobs(args: argparse.Namespace) -> int:
    import httpx

    try:
        response = _get(args, "/api/jobs", workspace=args.workspace, task_name=args.task,
                        status=args.status, limit=args.limit)
    except httpx.HTTPError as exc:
        return _error(args, None, exc)
    if response.status_code != 200:
        return _error(args, response)
    jobs = response.json()
    if args.json:
        sys.stdout.write(orjson.dumps(jobs, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    total = response.headers.get("x-total-count", str(len(jobs)))
    for job in jobs:
        task = f"{job['workspace']}/{job['task_name']}"
        stuck = "  stuck" if job.get("stuck") else ""
        sys.stdout.write(f"{job['job_id']}  {job['status']:<10} {task:<32} "
                         f"{job['created_at']}{stuck}\n")
    sys.stdout.write(f"({len(jobs)} of {total})\n")
    return 0


def _print_line(record: dict[str, Any]) -> None:
    sys.stdout.write(f"{record.get('step', '')} | {record.get('line', '')}\n")
    sys.stdout.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    if args.follow:
        return asyncio.run(_follow(args))
    path = (f"/api/jobs/{args.job}/steps/{args.step}/logs" if args.step
            else f"/api/jobs/{args.job}/logs")
    import httpx

    try:
        response = _get(args, path)
    except httpx.HTTPError as exc:
        return _error(args, None, exc)
    if response.status_code != 200:
        return _error(args, response)
    for line in response.json().get("logs", "").splitlines():
        if line.strip():
            _print_line(orjson.loads(line))
    return 0


async def _follow(args: argparse.Namespace) -> int:
    import websockets

    base = args.server.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    query = {"format": "events"}
    if args.step:
        query["step"] = args.step
    url = f"{base}/api/jobs/{args.job}/logs/stream?{urlencode(query)}"
    status = None
    try:
        async with websockets.connect(url, additional_headers=_headers(args)) as ws:
            async for message in ws:
                frame = orjson.loads(message)
                if frame.get("type") == "log":
                    _print_line(frame)
                elif frame.get("type") == "end":
                    status = frame.get("status")
    except (OSError, websockets.WebSocketException) as exc:
        sys.stderr.write(f"partitur: cannot stream from {args.server}: {exc}\n")
        return 1
    if status is not None:
        sys.stderr.write(f"job {args.job} {status}\n")
    return 0 if status in (None, "completed") else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    import httpx

    url = f"{args.server.rstrip('/')}/api/jobs/{args.job}/cancel"
    try:
        response = httpx.post(url, headers=_headers(args), timeout=30.0)
    except httpx.HTTPError as exc:
        return _error(args, None, exc)
    if response.status_code != 200:
        return _error(args, response)
    sys.stdout.write(f"job {args.job}: cancel requested\n")
    return 0
