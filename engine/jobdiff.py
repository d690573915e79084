"""Job diff: how two jobs differ in input, step statuses, outputs and durations (pure).

It compares the projection rows (`JobRow`, `StepRow`) the API shows, so secret values
are already masked. Typical use: a job and its re-run with an edited input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.core.projections import JobRow, StepRow

_MISSING = object()


def _duration(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, end - start), 6)


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 6)


def diff_values(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """The differences between two JSON values, as `{path, a, b}` entries (a key missing
    on one side is reported with `only_in`); objects are compared key by key."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        changes: list[dict[str, Any]] = []
        for key in [*a, *(k for k in b if k not in a)]:
            sub = f"{path}.{key}" if path else str(key)
            left, right = a.get(key, _MISSING), b.get(key, _MISSING)
            if left is _MISSING:
                changes.append({"path": sub, "only_in": "b", "b": right})
            elif right is _MISSING:
                changes.append({"path": sub, "only_in": "a", "a": left})
            else:
                changes.extend(diff_values(left, right, sub))
        return changes
    if a == b and type(a) is type(b):
        return []
    return [{"path": path, "a": a, "b": b}]


def _step_entry(name: str, a: StepRow | None, b: StepRow | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"step": name}
    if a is None or b is None:
        entry["only_in"] = "a" if b is None else "b"
    entry["status"] = {"a": a.status if a else None, "b": b.status if b else None}
    entry["status_changed"] = entry["status"]["a"] != entry["status"]["b"]
    out_a, out_b = (a.output if a else None), (b.output if b else None)
    output_changes = diff_values(out_a, out_b)
    entry["output_changed"] = bool(output_changes)
    if output_changes:
        entry["output"] = {"a": out_a, "b": out_b, "changes": output_changes}
    dur_a = _duration(a.started_at, a.completed_at) if a else None
    dur_b = _duration(b.started_at, b.completed_at) if b else None
    entry["duration"] = {"a": dur_a, "b": dur_b, "delta": _delta(dur_a, dur_b)}
    if a and b and a.attempt != b.attempt:
        entry["attempt"] = {"a": a.attempt, "b": b.attempt}
    errors = (a.error_message if a else None, b.error_message if b else None)
    if errors[0] != errors[1]:
        entry["error"] = {"a": errors[0], "b": errors[1]}
    return entry


def diff_jobs(
    a: JobRow, a_steps: Sequence[StepRow], b: JobRow, b_steps: Sequence[StepRow]
) -> dict[str, Any]:
    """The diff of job `a` against job `b` (`a` is the baseline, usually the older)."""
    steps_a = {s.step_name: s for s in a_steps}
    steps_b = {s.step_name: s for s in b_steps}
    names = [*steps_a, *(n for n in steps_b if n not in steps_a)]
    step_entries = [_step_entry(n, steps_a.get(n), steps_b.get(n)) for n in names]
    dur_a, dur_b = _duration(a.started_at, a.completed_at), _duration(b.started_at,
                                                                      b.completed_at)
    input_changes = diff_values(dict(a.input), dict(b.input))
    output_changes = diff_values(dict(a.output or {}), dict(b.output or {}))
    return {
        "a": a.job_id,
        "b": b.job_id,
        "same_task": (a.workspace, a.task_name) == (b.workspace, b.task_name),
        "task": {"a": f"{a.workspace}/{a.task_name}", "b": f"{b.workspace}/{b.task_name}"},
        "revision": {"a": a.revision, "b": b.revision},
        "status": {"a": a.status, "b": b.status},
        "input": {"a": dict(a.input), "b": dict(b.input), "changes": input_changes},
        "output": {"a": a.output, "b": b.output, "changes": output_changes},
        "duration": {"a": dur_a, "b": dur_b, "delta": _delta(dur_a, dur_b)},
        "steps": step_entries,
        "summary": {
            "input_changed": bool(input_changes),
            "output_changed": bool(output_changes),
            "steps_with_other_status": [e["step"] for e in step_entries if e["status_changed"]],
            "steps_with_other_output": [e["step"] for e in step_entries if e["output_changed"]],
        },
    }
