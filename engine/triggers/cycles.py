"""Loops of event triggers (task a's end starts b, b's end starts a), refused at load."""

from __future__ import annotations

from collections.abc import Mapping

from engine.model import TriggerSpec


def event_cycles(triggers: Mapping[str, TriggerSpec]) -> list[tuple[str, list[str]]]:
    """Event triggers that close a loop: `(trigger name, [task, …, task])` per loop.

    Task A's end starting task B (an event trigger `on: {task: A}`, `task: B`) is an edge
    A → B; a cycle would start jobs forever. Each cycle is reported once, at the trigger
    that closes it (disabled triggers count too: enabling one must not create a loop).
    """
    edges: dict[str, list[tuple[str, str]]] = {}
    for name, spec in triggers.items():
        if spec.type == "event" and spec.on is not None:
            edges.setdefault(spec.on.task, []).append((spec.task, name))
    found: list[tuple[str, list[str]]] = []
    done: set[str] = set()
    for start in sorted(edges):
        if start in done:
            continue
        # Iterative depth-first search; `path` holds the tasks on the current branch.
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(edges.get(start, []))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                finished = path.pop()
                done.add(finished)
                on_path.discard(finished)
                continue
            target, trigger = step
            if target in on_path:
                cycle = [*path[path.index(target):], target]
                found.append((trigger, cycle))
            elif target not in done:
                path.append(target)
                on_path.add(target)
                stack.append(iter(edges.get(target, [])))
    return found
