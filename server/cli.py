"""The `partitur` command line: serve, run, validate, rebuild, migrate.

Every subcommand prints a clear one-line error and exits 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from engine import eventloop
from server.cli_client import add_client_parsers, cmd_cancel, cmd_jobs, cmd_logs
from server.cli_control import add_explain_parser, cmd_explain, dry_run_local
from server.cli_ops import HANDLERS as OPS_HANDLERS
from server.cli_ops import add_ops_parsers


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"partitur: error: {message} (see {self.prog} --help)\n")


def _fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"partitur: error: {message}\n")
    raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="partitur", description="An event-sourced workflow engine.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser("serve", help="serve the API, UI and embedded workers")
    serve.add_argument("--config", type=Path, default=None,
                       help="config file (default: ./server-config.yaml when it exists)")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)

    run = sub.add_parser("run", help="run a task locally and stream its logs")
    run.add_argument("task")
    run.add_argument("--workspace", type=Path, default=Path.cwd(),
                     help="workspace folder (holding .workflows/); default: current folder")
    run.add_argument("-i", "--input", dest="inputs", action="append", default=[],
                     metavar="KEY=VALUE", help="an input value, coerced by the input schema")
    run.add_argument("--input-json", default=None, help="the whole input as a JSON object")
    run.add_argument("--json", action="store_true", help="print the final job as JSON")
    run.add_argument("--db", default=None, help="store URL to keep the job in (default: temp)")
    run.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    run.add_argument("--quiet", action="store_true", help="do not stream log lines")
    run.add_argument("--dry-run", action="store_true",
                     help="print what the job would do (rendered inputs); run nothing")

    add_explain_parser(sub)
    add_client_parsers(sub)
    add_ops_parsers(sub)

    validate = sub.add_parser("validate", help="validate a workspace")
    validate.add_argument("path", nargs="?", type=Path, default=Path.cwd())

    rebuild = sub.add_parser("rebuild", help="rebuild the projections from the event log")
    rebuild.add_argument("--config", type=Path, default=None)
    rebuild.add_argument("--db", default=None, help="store URL (overrides the config)")
    rebuild.add_argument(
        "--workers", type=int, default=None,
        help="processes replaying the log, one shard of its jobs each (default: one per "
             "core, up to 4, and one per 50,000 events)")

    worker = sub.add_parser("worker", help="run steps for a server (a remote worker)")
    worker.add_argument("--server", required=True, help="the server's URL")
    worker.add_argument("--token", default=os.environ.get("PARTITUR_WORKER_TOKEN"),
                        help="the worker token (default: $PARTITUR_WORKER_TOKEN)")
    worker.add_argument("--tags", default="", help="comma-separated tags of this worker")
    worker.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    worker.add_argument("--name", default=None)
    worker.add_argument("--cache-dir", type=Path, default=None)

    migrate = sub.add_parser("migrate", help="apply store migrations")
    migrate.add_argument("--config", type=Path, default=None)
    migrate.add_argument("--db", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        raise SystemExit(2)
    handler = {"serve": cmd_serve, "run": cmd_run, "validate": cmd_validate,
               "rebuild": cmd_rebuild, "migrate": cmd_migrate,
               "worker": cmd_worker, "explain": cmd_explain,
               "jobs": cmd_jobs, "logs": cmd_logs, "cancel": cmd_cancel,
               **OPS_HANDLERS}[args.command]
    raise SystemExit(handler(args))


# --- validate ------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.compiler.validate import report
    from engine.sources.snapshot import copy_and_hash

    path: Path = args.path
    if not path.exists():
        _fail(f"no such folder: {path}")
    # The revision a server shows for this folder: a hash of every file it would copy.
    text, code = report(path, copy_and_hash(path.resolve(), None, None))
    if text:
        print(text)
    return code


# --- run -----------------------------------------------------------------------------


def _parse_inputs(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if args.input_json:
        try:
            loaded = json.loads(args.input_json)
        except json.JSONDecodeError as exc:
            _fail(f"--input-json is not valid JSON: {exc}")
        if not isinstance(loaded, dict):
            _fail("--input-json must be a JSON object")
        values.update(loaded)
    for item in args.inputs:
        key, sep, text = item.partition("=")
        if not sep or not key:
            _fail(f"-i expects KEY=VALUE, got {item!r}")
        # Text is coerced by the input schema together with every other field, so all
        # bad fields are reported at once.
        values[key] = text
    return values


def cmd_run(args: argparse.Namespace) -> int:
    from engine.errors import PartiturError

    workspace: Path = args.workspace.resolve()
    if not (workspace / ".workflows").is_dir():
        _fail(f"{workspace} is not a workspace (no .workflows/ folder)")
    try:
        if args.dry_run:
            return dry_run_local(workspace, args.task, _parse_inputs(args), args.json)
        return eventloop.run(_run(args, workspace))
    except PartiturError as exc:
        issues = getattr(exc, "issues", None)
        if issues:
            title = {"invalid_input": "invalid input"}.get(exc.code, exc.code.replace("_", " "))
            sys.stderr.write(f"partitur: {title}:\n")
            for issue in issues:
                sys.stderr.write(f"  {issue}\n")
        else:
            sys.stderr.write(f"partitur: {exc.message}\n")
        return 2 if exc.code in {"invalid_input", "invalid_workspace", "not_found",
                                 "compile_error"} else 1


async def _run(args: argparse.Namespace, workspace: Path) -> int:
    from engine.clock import new_job_id
    from engine.core import commands as cmd
    from engine.logs.model import LogLine
    from engine.runtime import Runtime, RuntimeOptions
    from engine.store.base import JobFilter  # noqa: F401  (keeps the import graph explicit)
    from engine.views import job_detail

    with tempfile.TemporaryDirectory(prefix="partitur-run-") as tmp:
        tmp_path = Path(tmp)
        name = workspace.name
        options = RuntimeOptions(
            db_url=args.db or f"sqlite:///{tmp_path / 'partitur.db'}",
            logs_dir=tmp_path / "logs", artifacts_dir=tmp_path / "artifacts",
            workspaces={name: workspace}, concurrency=max(1, args.concurrency),
            snapshot_folders=False,  # one job, run in place: its files land in the folder
        )
        runtime = Runtime(options)
        await runtime.open()
        try:
            ws = runtime.workspaces.get(name)
            loaded = ws.require()
            task = loaded.spec.tasks.get(args.task)
            if task is None:
                known = ", ".join(sorted(loaded.spec.tasks)) or "none"
                _fail(f"task {args.task!r} not found in {workspace} (tasks: {known})")
            raw_input = _parse_inputs(args)
            job_id = new_job_id()
            subscription = runtime.bus.subscribe(job_id)
            await runtime.orchestrator.create_job(name, args.task, raw_input, source_type="user",
                                                  source_id="cli", job_id=job_id)
            loop = asyncio.get_running_loop()
            cancelled = asyncio.Event()
            pending: list[asyncio.Future[Any]] = []

            def on_interrupt() -> None:
                if cancelled.is_set():
                    return
                cancelled.set()
                sys.stderr.write("partitur: cancelling the job…\n")
                pending.append(asyncio.ensure_future(runtime.orchestrator.command(
                    job_id, cmd.Cancel(by="cli", reason="interrupted"))))

            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            loop.add_signal_handler(signal.SIGTERM, on_interrupt)
            width = max((len(s) for s in task.flow), default=8)
            out = sys.stdout
            async for item in subscription:
                if args.quiet or args.json or not isinstance(item, LogLine):
                    continue
                if item.step == "_server":
                    continue
                prefix = item.step.ljust(width)
                out.write(f"{prefix} | {item.line}\n")
                out.flush()
            state = await runtime.orchestrator.wait(job_id)
            await runtime.orchestrator.settle(60)  # hooks and retries of the job finish
            row = await runtime.store.get_job(job_id)
            steps = await runtime.store.get_steps(job_id)
            if args.json and row is not None:
                sys.stdout.write(orjson.dumps(
                    job_detail(row, steps), option=orjson.OPT_INDENT_2).decode() + "\n")
            elif not args.quiet:
                took = (state.completed_at or time.time()) - state.created_at
                sys.stderr.write(f"job {job_id} {state.status.value} in {took:.2f}s\n")
                if state.error:
                    sys.stderr.write(f"  {state.error}\n")
            return 0 if state.status.value == "completed" else 1
        finally:
            await runtime.close()


# --- serve, rebuild, migrate ----------------------------------------------------------


def _settings(config: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    from engine.errors import ConfigInvalid
    from server.config import load_settings

    if config is not None and not config.exists():
        _fail(f"no such config file: {config}")
    try:
        return load_settings(config, overrides=overrides or {})
    except ConfigInvalid as exc:
        lines = [str(i) for i in exc.issues] or [exc.message]
        _fail("invalid configuration:\n  " + "\n  ".join(lines))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    config = args.config
    if config is None and Path("server-config.yaml").is_file():
        config = Path("server-config.yaml")
    settings = _settings(config, {"host": args.host, "port": args.port})
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            lifespan="on", ws_ping_interval=20, timeout_graceful_shutdown=None,
                            loop=eventloop.loop_name(), http="httptools")
    server = uvicorn.Server(config)
    sys.stderr.write(f"partitur: serving on http://{settings.host}:{settings.port}\n")
    server.run()
    return 0


def _db_url(args: argparse.Namespace) -> tuple[str, Path]:
    if args.db:
        return args.db, Path.cwd()
    settings = _settings(args.config)
    base = args.config.resolve().parent if args.config else Path.cwd()
    return settings.db.url, base


def cmd_rebuild(args: argparse.Namespace) -> int:
    from engine.errors import PartiturError
    from engine.store.rebuild_shards import rebuild_store

    url, base = _db_url(args)
    if args.workers is not None and args.workers < 1:
        sys.stderr.write("partitur rebuild: --workers must be at least 1\n")
        return 2

    async def go() -> int:
        try:
            stats = await rebuild_store(url, base_dir=base, workers=args.workers)
        except PartiturError as exc:
            sys.stderr.write(f"partitur rebuild: {exc}\n"
                             "partitur rebuild: the projections are incomplete until a "
                             "rebuild succeeds\n")
            return 1
        rate = stats.events / stats.seconds if stats.seconds else 0.0
        print(f"replayed {stats.events} events of {stats.jobs} jobs in {stats.seconds:.2f}s "
              f"({rate:,.0f} events/s, {stats.processes} "
              f"process{'es' if stats.processes > 1 else ''})")
        return 0

    return eventloop.run(go())


def cmd_migrate(args: argparse.Namespace) -> int:
    from engine.store.factory import open_store

    url, base = _db_url(args)

    async def go() -> int:
        store = open_store(url, base_dir=base)
        await store.open()
        await store.close()
        print("migrations applied")
        return 0

    return eventloop.run(go())


# --- worker --------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.worker import WorkerOptions
    from engine.worker import main as run_worker

    if not args.token:
        _fail("--token (or $PARTITUR_WORKER_TOKEN) is required")
    if not args.server.startswith(("http://", "https://")):
        _fail(f"--server must be an http(s) URL, not {args.server!r}")
    if args.concurrency < 1:
        _fail("--concurrency must be at least 1")
    options = WorkerOptions(server=args.server, token=args.token,
                            tags=tuple(t.strip() for t in args.tags.split(",") if t.strip()),
                            concurrency=args.concurrency)
    if args.name:
        options.name = args.name
    if args.cache_dir:
        options.cache_dir = args.cache_dir
    return run_worker(options)


if __name__ == "__main__":
    main()
