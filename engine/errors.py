"""The one error vocabulary of Partitur.

Every error the engine raises on purpose is a `PartiturError`. Each subclass carries a
stable `code` (used in API responses and logs) and a `retryable` flag. The docstring of a
class is its default message. `server/errors.py` maps these onto HTTP responses; nothing
else formats errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in user input: where it is and what is wrong.

    `path` is the field path (`tasks.build.flow.test.depends_on[0]`); `file`, `line` and
    `column` (1-based) locate it in a YAML file when it came from one.
    """

    message: str
    path: str = ""
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    severity: str = "error"

    def location(self) -> str:
        """`file:line:column` (as much of it as is known), or the field path."""
        if self.file is None:
            return self.path
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        return loc

    def __str__(self) -> str:
        where = self.location()
        text = f"{where}: " if where else ""
        if self.file is not None and self.path:
            text += f"{self.path}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for API responses."""
        out: dict[str, Any] = {"path": self.path, "message": self.message}
        for key in ("file", "line", "column", "hint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.severity != "error":
            out["severity"] = self.severity
        return out


class PartiturError(Exception):
    """Something went wrong in Partitur."""

    code: str = "error"
    retryable: bool = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip().splitlines()[0])

    @property
    def message(self) -> str:
        return str(self.args[0])


class NotFound(PartiturError):
    """Not found."""

    code = "not_found"


class ValidationFailed(PartiturError):
    """The input is invalid."""

    code = "invalid"

    def __init__(self, message: str | None = None, issues: list[Issue] | None = None) -> None:
        self.issues: list[Issue] = list(issues or [])
        if message is None and self.issues:
            message = "; ".join(str(i) for i in self.issues)
        super().__init__(message)


class InputInvalid(ValidationFailed):
    """The job input is invalid."""

    code = "invalid_input"


class WorkspaceInvalid(ValidationFailed):
    """The workspace does not load."""

    code = "invalid_workspace"


class CompileError(ValidationFailed):
    """The task cannot be compiled into a plan."""

    code = "compile_error"


class ConfigInvalid(ValidationFailed):
    """The server configuration is invalid."""

    code = "invalid_config"


class RenderError(PartiturError):
    """A template could not be rendered."""

    code = "render_error"

    def __init__(self, message: str | None = None, *, where: str = "", name: str | None = None):
        self.where = where
        self.name = name
        text = message or "template error"
        if where:
            text = f"{where}: {text}"
        super().__init__(text)


class Conflict(PartiturError):
    """The request conflicts with the current state."""

    code = "conflict"


class VersionConflict(Conflict):
    """Another writer appended to this stream first."""

    code = "version_conflict"
    retryable = True


class InvalidTransition(Conflict):
    """This state change is not allowed."""

    code = "invalid_transition"

    def __init__(self, subject: str, from_: str, to: str, message: str | None = None) -> None:
        self.subject = subject
        self.from_ = from_
        self.to = to
        super().__init__(message or f"{subject}: cannot go from {from_} to {to}")


class StoreUnavailable(PartiturError):
    """The store cannot be reached."""

    code = "store_unavailable"
    retryable = True


class LimitExceeded(PartiturError):
    """A size or count limit was exceeded."""

    code = "limit_exceeded"


class Unauthorized(PartiturError):
    """Missing or invalid credentials."""

    code = "unauthorized"


class Forbidden(PartiturError):
    """Not allowed."""

    code = "forbidden"


@dataclass(slots=True)
class IssueCollector:
    """Gathers issues so that all of them are reported at once."""

    issues: list[Issue] = field(default_factory=list)

    def add(self, message: str, path: str = "", **where: Any) -> None:
        self.issues.append(Issue(message=message, path=path, **where))

    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity != "error"]
