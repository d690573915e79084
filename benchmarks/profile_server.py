"""`python -m benchmarks.profile_server [--runs 100] [--reps 3] [--out FILE]`.

Profiles the W3 path: a real `partitur serve` (SQLite, 8 embedded slots) started under
pyinstrument, one warm-up batch, then `--reps` batches of `--runs` W3 jobs POSTed at t0
and polled until done, exactly as `w3_many.py` does. The server is stopped with SIGTERM
(a graceful shutdown), and the profiler writes the server's main-thread profile to
`--out`. (The server runs under `--profiled-serve`, not pyinstrument's CLI: uvicorn
re-raises SIGTERM after its shutdown, which would end the process before the CLI writes.)
A tool for finding where server time goes, not a benchmark figure: the profiler slows
the server down, so the printed rates are below the benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from benchmarks import api
from benchmarks.common import Server, make_workspace


async def drive(server: Server, runs: int, reps: int) -> None:
    async with api.client(server.url) as http:
        await api.run_many(http, "three", 4)  # warm-up
        for rep in range(reps):
            wall, _, statuses = await api.run_many(http, "three", runs, lambda i: {"r": i})
            bad = [s for s in statuses.values() if s != "completed"]
            print(f"rep {rep}: {runs} runs in {wall:.2f}s ({runs / wall:.1f} runs/s)"
                  f"{f', {len(bad)} not completed' if bad else ''}", flush=True)


def profiled_serve(argv: list[str]) -> int:
    """`--profiled-serve OUT -m server.cli serve …`: the server's CLI under a profiler."""
    from pyinstrument import Profiler

    from server.cli import main as cli_main

    out, rest = Path(argv[0]), argv[3:]

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)  # uvicorn restores and re-raises it: exit cleanly
    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    try:
        cli_main(rest)
    except SystemExit:
        pass
    finally:
        profiler.stop()
        out.write_text(profiler.output_text(unicode=False, color=False))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--profiled-serve"]:
        return profiled_serve(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_server")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="w3-server-profile.txt")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="partitur-profile-") as tmp:
        root = Path(tmp)
        ws = make_workspace(root)
        server = Server(root / "server", f"sqlite:///{root / 'w3.db'}", ws,
                        python_args=["-m", "benchmarks.profile_server", "--profiled-serve",
                                     str(out)])
        server.start(timeout=60)
        try:
            asyncio.run(drive(server, args.runs, args.reps))
        finally:
            server.stop()
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    print(f"server profile: {out}" if out.exists() else "no profile written")
    return 0 if out.exists() else 1


if __name__ == "__main__":
    raise SystemExit(main())
