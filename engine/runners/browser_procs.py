"""Finding and killing the browser's process groups (Linux `/proc`, no extra packages).

Playwright starts Chromium detached, as the leader of a process group of its own, so
killing the driver's group does not reach it. The driver lists the groups of its
descendants right after the launch (`browser_groups`); the runner kills those groups when
the step ends (`kill_groups`), unless a group leader's pid was meanwhile reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from typing import Any

from engine.runners.process import kill_process_group


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time in clock ticks) of `pid`, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None


def descendants(root: int) -> list[int]:
    """Every live descendant pid of `root`."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = proc_stat(int(entry))
                if stat is not None:
                    children.setdefault(stat[0], []).append(int(entry))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def browser_groups() -> list[dict[str, int]]:
    """The process groups of this process's descendants other than its own group."""
    own = os.getpgrp()
    groups: dict[int, int] = {}
    for pid in descendants(os.getpid()):
        stat = proc_stat(pid)
        if stat is None or stat[1] in (own, 0) or stat[1] in groups:
            continue
        leader = proc_stat(stat[1])
        if leader is not None:
            groups[stat[1]] = leader[2]
    return [{"pgid": pgid, "started": started} for pgid, started in groups.items()]


def kill_groups(groups: Iterable[Mapping[str, Any]]) -> int:
    """SIGKILL each reported group still led by the same process; how many were signalled."""
    killed = 0
    for entry in groups:
        pgid = int(entry["pgid"])
        leader = proc_stat(pgid)
        if leader is not None and leader[2] != int(entry["started"]):
            continue  # the pid now belongs to another process
        with contextlib.suppress(ValueError):
            if kill_process_group(pgid, signal.SIGKILL):
                killed += 1
    return killed
