"""Masking secrets in what the API shows: job inputs, step inputs and outputs, events.

Three kinds of values are secret (DESIGN §10): the workspace's `secrets`, connection
properties marked `secret: true`, and job input fields marked `secret: true`. The log
redactor (`engine.logs.redact.Redactor`) already masks their text in log lines; this
module masks them in JSON values: a secret input field is replaced whole, and every
string that contains a known secret value has it replaced by `••••••`.

The orchestrator masks the `jobs`/`steps` projection rows before they are written, so
the job list and detail never hold them; `mask_event` is for routes that show raw events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from engine.core.projections import JobRow, StepRow
from engine.logs.redact import MASK, Redactor

__all__ = ["MASK", "JobMasker", "mask_input", "mask_value", "secret_input_values"]


def mask_value(value: Any, redactor: Redactor) -> Any:
    """`value` with every known secret in its strings (at any depth) masked."""
    if not redactor:
        return value
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, Mapping):
        return {k: mask_value(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v, redactor) for v in value]
    return value


def secret_input_values(value: Mapping[str, Any], secret_paths: Iterable[str]) -> list[str]:
    """The values of a job input's fields marked `secret` (a connection's values too)."""
    found: list[str] = []
    for name in secret_paths:
        item = value.get(name)
        if isinstance(item, Mapping):
            found.extend(str(v) for v in item.values() if v not in (None, ""))
        elif item not in (None, ""):
            found.append(str(item))
    return found


def mask_input(value: Mapping[str, Any], secret_paths: Iterable[str]) -> dict[str, Any]:
    """A job input with the fields marked `secret` replaced by `••••••` (when set)."""
    out = dict(value)
    for name in secret_paths:
        if out.get(name) not in (None, ""):
            out[name] = MASK
    return out


class JobMasker:
    """Masks one job's values: its secret input fields and every known secret value."""

    __slots__ = ("redactor", "secret_paths")

    def __init__(self, redactor: Redactor, secret_paths: Iterable[str] = ()) -> None:
        self.redactor = redactor
        self.secret_paths = tuple(secret_paths)

    def __bool__(self) -> bool:
        return bool(self.redactor) or bool(self.secret_paths)

    def value(self, value: Any) -> Any:
        return mask_value(value, self.redactor)

    def job_input(self, value: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.value(mask_input(value, self.secret_paths)))

    def job_row(self, row: JobRow) -> JobRow:
        """The `jobs` row with its input, output and error masked."""
        if not self:
            return row
        return replace(row, input=self.job_input(row.input), output=self.value(row.output),
                       error=self.value(row.error))

    def step_row(self, row: StepRow) -> StepRow:
        """A `steps` row with its input, output, error and message masked."""
        if not self.redactor:
            return row
        return replace(row, input=self.value(row.input), output=self.value(row.output),
                       error_message=self.value(row.error_message),
                       message=self.value(row.message))

    def event(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The payload of a stored event (`RecordedEvent.to_dict()`), masked.

        `JobCreated.input` also loses its secret fields; the plan is left as written (it
        holds templates, not values).
        """
        out = dict(data)
        payload = dict(out.get("data") or {})
        if out.get("type") == "JobCreated" and isinstance(payload.get("input"), Mapping):
            payload["input"] = self.job_input(payload["input"])
        for key, item in payload.items():
            if key not in ("plan", "input") or out.get("type") != "JobCreated":
                payload[key] = self.value(item)
        out["data"] = payload
        return out
