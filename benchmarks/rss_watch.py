"""`python -m benchmarks.rss_watch INTERVAL PID...`: peak RSS of process trees, sampled
from a process of its own.

`common.RssSampler` starts it. Sampling with psutil costs ~3–5 ms of CPU per sample
(`children()` reads every process of the machine); done by a thread of the harness it
held the GIL of the process being measured (W1 and W2 run the engine in the harness
process) and of the W3 client. Here it costs a core a few percent and nobody's GIL.

Every INTERVAL seconds it sums the RSS of each tree; on stdin, `add PID` adds a tree
and `stop` (or end of file) takes a last sample and prints the peaks as one JSON line:
`{"total": …, "largest": …, "of": {"PID": …}}` (bytes).
"""

from __future__ import annotations

import json
import os
import select
import sys

import psutil  # type: ignore[import-untyped]


def before_exec(proc: psutil.Process) -> bool:
    """A child between `vfork` and `exec` runs in its parent's memory, and psutil reports
    the parent's whole RSS for it: counting it would count the parent twice. Such a child
    still has its parent's command line."""
    parent = proc.parent()
    return parent is not None and proc.cmdline() == parent.cmdline()


class Peaks:
    """The peaks of the summed RSS, of the largest process, and of each tree."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.total = 0
        self.largest = 0
        self.of: dict[int, int] = {pid: 0 for pid in roots}
        self.own = os.getpid()

    def sample(self) -> None:
        total = 0
        for root in list(self.roots):
            try:
                proc = psutil.Process(root)
                procs = [proc, *proc.children(recursive=True)]
            except psutil.Error:
                continue
            tree = 0
            for p in procs:
                if p.pid == self.own:
                    continue  # this sampler, a child of the harness it measures
                try:
                    if p is not proc and before_exec(p):
                        continue
                    rss = int(p.memory_info().rss)
                except psutil.Error:
                    continue
                tree += rss
                self.largest = max(self.largest, rss)
            self.of[root] = max(self.of.get(root, 0), tree)
            total += tree
        self.total = max(self.total, total)


def main(argv: list[str]) -> int:
    interval = float(argv[0])
    peaks = Peaks([int(pid) for pid in argv[1:]])
    peaks.sample()
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], interval)
        if readable:
            line = sys.stdin.readline()
            if line.startswith("add "):
                pid = int(line.split()[1])
                peaks.roots.append(pid)
                peaks.of.setdefault(pid, 0)
            elif not line or line.startswith("stop"):
                break
        peaks.sample()
    peaks.sample()
    print(json.dumps({"total": peaks.total, "largest": peaks.largest,
                      "of": {str(k): v for k, v in peaks.of.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
