"""Server configuration: `server-config.yaml` → `Settings` (DESIGN §9).

`load_settings()` reads the YAML file, applies `PARTITUR__SECTION__KEY` environment
overrides and then explicit overrides (CLI flags such as `--host`/`--port`), and validates
the result into frozen models. Relative paths (SQLite file, workspace folders, log folder,
SSH keys) are resolved against the config file's folder, or the current folder when there
is no file. Every problem is reported at once as a `ConfigInvalid` whose issues name the
key path and, when the value came from the file, its line.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from engine.auth.acl import AclSettings
from engine.auth.settings import AuthSettings
from engine.cloudtenancy import WORKSPACE_PREFIX as CLOUD_WORKSPACE_PREFIX
from engine.errors import ConfigInvalid, Issue
from engine.model import Duration, OptDuration

ENV_PREFIX = "PARTITUR__"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
SQLITE_PREFIX = "sqlite:///"
MiB = 1024 * 1024

_BYTE_UNITS: dict[str, int] = {"": 1, "b": 1}
for _power, _letter in enumerate("kmgt", start=1):
    _BYTE_UNITS[_letter] = _BYTE_UNITS[f"{_letter}i"] = _BYTE_UNITS[f"{_letter}ib"] = 1024**_power
    _BYTE_UNITS[f"{_letter}b"] = 1000**_power
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_WORKSPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_bytes(value: Any) -> int:
    """`1048576`, `512KiB`, `1MiB`, `50MB`, `1g` → a number of bytes.

    `KB`/`MB`/`GB` are powers of 1000; `KiB`/`MiB`/`GiB` and the bare `k`/`m`/`g` are
    powers of 1024 (as nginx reads `client_max_body_size 1m`).
    """
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '1MiB'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return int(value)
    if isinstance(value, str):
        match = _BYTES.match(value)
        if match and match.group(2).lower() in _BYTE_UNITS:
            return int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])
    raise ValueError(f"invalid size {value!r}: use bytes or a string like '512KiB', '1MiB', '50MB'")


ByteSize = Annotated[int, BeforeValidator(parse_bytes)]


def _split_listen(value: str) -> tuple[str, str]:
    """`host:port` → (host, port) without validating; `[::1]:80` keeps its brackets."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return "", value
    return host, port


def _parse_listen(value: Any) -> str:
    """Normalize `listen`: `host:port`, or a bare port meaning the default host."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("listen must be a string like '127.0.0.1:8080'")
    host, port = _split_listen(value.strip())
    if not host:
        host = DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {value!r}: expected host:port, port 0-65535")
    return f"{host}:{int(port)}"


def _resolve(path: Path, info: ValidationInfo) -> Path:
    """Make `path` absolute against the config folder carried in the validation context."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    context = info.context if isinstance(info.context, dict) else {}
    base = context.get("base_dir")
    return (Path(base) if base is not None else Path.cwd()) / path


class _Section(BaseModel):
    # Defaults are validated too, so default relative paths get resolved like given ones.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class DbSettings(_Section):
    """`db`: where events, projections and everything else are stored."""

    url: str = "sqlite:///.partitur/partitur.db"
    synchronous: Literal["normal", "full"] = "normal"

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str, info: ValidationInfo) -> str:
        scheme = url.partition("://")[0].lower()
        if scheme not in ("sqlite", "postgresql", "postgres", "memory"):
            raise ValueError(
                f"unsupported database URL {url!r}: use sqlite:///path or postgresql://…"
            )
        if scheme == "sqlite":
            if not url.startswith(SQLITE_PREFIX):
                raise ValueError("a SQLite URL looks like sqlite:///relative/path.db")
            rest = url[len(SQLITE_PREFIX) :]
            if rest and rest != ":memory:":
                return SQLITE_PREFIX + str(_resolve(Path(rest), info))
        return url

    @property
    def backend(self) -> Literal["sqlite", "postgres", "memory"]:
        """Which `EventStore` backend the URL names."""
        scheme = self.url.partition("://")[0].lower()
        if scheme == "sqlite":
            return "sqlite"
        if scheme == "memory":
            return "memory"
        return "postgres"

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file (absolute), or None for another backend or `:memory:`."""
        if self.backend != "sqlite":
            return None
        rest = self.url[len(SQLITE_PREFIX) :]
        return None if rest in ("", ":memory:") else Path(rest)


class GitSource(_Section):
    """A workspace served from a git repository, polled for new revisions."""

    url: str
    ref: str = "main"
    poll_interval: Duration = 30.0
    token: str | None = Field(default=None, repr=False)
    ssh_key: Path | None = None

    @field_validator("ssh_key")
    @classmethod
    def _resolve_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


class WorkspaceSettings(_Section):
    """One workspace: a folder (`path`) or a git repository (`git`), exactly one."""

    path: Path | None = None
    git: GitSource | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # `name: some/folder` is short for `name: {path: some/folder}`.
        if isinstance(data, str | Path):
            return {"path": data}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> WorkspaceSettings:
        if (self.path is None) == (self.git is None):
            raise ValueError("a workspace needs exactly one of 'path' or 'git'")
        return self

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return None if value is None else _resolve(value, info)


class LogsSettings(_Section):
    """`logs`: where job logs are kept (one JSONL file per job with SQLite)."""

    dir: Path = Path(".partitur/logs")

    @field_validator("dir")
    @classmethod
    def _resolve_dir(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve(value, info)


def _cpu_count() -> int:
    return os.cpu_count() or 1


class LocalWorkers(_Section):
    """`workers.local`: the embedded executor pool; 0 runs no steps in the server."""

    concurrency: int = Field(default_factory=_cpu_count, ge=0)


class WorkersSettings(_Section):
    """`workers`: remote worker authentication and the embedded pool."""

    token: str | None = Field(default=None, repr=False)
    local: LocalWorkers = Field(default_factory=LocalWorkers)
    # Who runs steps: `local` (the embedded pool), `remote` (the queue remote workers
    # claim from), `auto` (remote when `local.concurrency` is 0).
    mode: Literal["auto", "local", "remote"] = "auto"


class RecoverySettings(_Section):
    """`recovery`: how long a lease may go without a heartbeat before the step is lost."""

    heartbeat_timeout: Duration = 30.0


class RetentionSettings(_Section):
    """`retention`: how many days finished jobs are kept (0 keeps them forever) and how
    often the leader sweeps expired ones (`engine.retention`)."""

    job_days: int = Field(default=30, ge=0)
    sweep_interval: Duration = Field(default=3600.0, gt=0)


class BrowserSettings(_Section):
    """`browser`: the Chromium that browser steps drive (None: Playwright's, else system)."""

    executable: str | None = None


class LimitsSettings(_Section):
    """`limits`: request body caps; larger requests get 413."""

    body: ByteSize = Field(default=MiB, gt=0)
    upload: ByteSize = Field(default=50 * MiB, gt=0)


class CallbacksSettings(_Section):
    """`callbacks`: outgoing cloud API webhooks (docs/cloud-api.md)."""

    allow_private: bool = False
    retry_for: Duration = 3600.0
    max_attempts: int = Field(default=12, ge=1, le=100)
    timeout: Duration = 10.0


class MetricsSettings(_Section):
    """`metrics`: whether `/metrics` answers without credentials."""

    public: bool = True


class TracingSettings(_Section):
    """`tracing`: OpenTelemetry spans of jobs, steps and HTTP requests, exported over
    OTLP/HTTP to `otlp_endpoint` (absent: no tracing, at no cost)."""

    otlp_endpoint: str | None = None
    service_name: str = "partitur"


class EmailSettings(_Section):
    """`notifications.email`: the SMTP server that failure emails go through."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    sender: str = Field(default="partitur@localhost", alias="from")
    recipients: list[str] = Field(min_length=1)
    timeout: Duration = 10.0
    link_ttl: Duration = 7 * 86400.0  # how long the signed recording link of an email lives


class NotificationsSettings(_Section):
    """`notifications`: emails about failed browser jobs (absent: none are sent)."""

    email: EmailSettings | None = None
    base_url: str | None = None  # links in emails; default http://<listen>


class LlmSettings(_Section):
    """`debug.llm`: an OpenAI-compatible endpoint that may add to debug reports."""

    endpoint: str
    model: str
    api_key: str | None = Field(default=None, repr=False)


class DebugSettings(_Section):
    """`debug`: the optional LLM and the auto-repair task (`workspace/task`)."""

    llm: LlmSettings | None = None
    repair_task: str | None = None


class RecordingsSettings(_Section):
    """`recordings`: how long signed recording URLs live and recordings are kept."""

    url_ttl: Duration = 3600.0
    retention_days: int = Field(default=30, ge=0)  # 0 keeps them forever
    sweep_interval: Duration = 3600.0


class SessionsSettings(_Section):
    """`sessions`: interactive browser sessions of the cloud API."""

    max_per_tenant: int = Field(default=3, ge=0)
    idle_timeout: Duration = 600.0


class SchedulingSettings(_Section):
    """`scheduling`: with `aging` set, a waiting step gains one priority level per
    `aging` of waiting, so a flood of high-priority work cannot starve the rest."""

    aging: OptDuration = None


class ShutdownSettings(_Section):
    """`shutdown`: how long running steps get to finish after SIGTERM."""

    grace: Duration = 10.0


def _check_workspace_name(name: str) -> str:
    if not _WORKSPACE_NAME.match(name):
        raise ValueError(f"invalid workspace name {name!r}: use letters, digits, '_', '.', '-'")
    if name.startswith(CLOUD_WORKSPACE_PREFIX):
        raise ValueError(f"invalid workspace name {name!r}: names starting with "
                         f"'{CLOUD_WORKSPACE_PREFIX}' are kept for cloud deployments")
    return name


WorkspaceName = Annotated[str, AfterValidator(_check_workspace_name)]

_SECTIONS = (
    "db", "workspaces", "logs", "workers", "recovery", "retention", "browser", "limits",
    "metrics", "shutdown", "tracing", "callbacks", "notifications", "debug", "recordings",
    "sessions", "scheduling",
)


class Settings(_Section):
    """The whole server configuration (DESIGN §9)."""

    listen: Annotated[str, BeforeValidator(_parse_listen)] = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
    db: DbSettings = Field(default_factory=DbSettings)
    workspaces: dict[WorkspaceName, WorkspaceSettings] = Field(default_factory=dict)
    logs: LogsSettings = Field(default_factory=LogsSettings)
    workers: WorkersSettings = Field(default_factory=WorkersSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    secrets_key: str | None = Field(default=None, repr=False)
    auth: AuthSettings | None = None
    acl: AclSettings | None = None
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    callbacks: CallbacksSettings = Field(default_factory=CallbacksSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    notifications: NotificationsSettings = Field(default_factory=NotificationsSettings)
    debug: DebugSettings = Field(default_factory=DebugSettings)
    recordings: RecordingsSettings = Field(default_factory=RecordingsSettings)
    sessions: SessionsSettings = Field(default_factory=SessionsSettings)
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    stuck_after: OptDuration = None

    @model_validator(mode="before")
    @classmethod
    def _fill_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # An empty section (`logs:` with nothing under it) means its defaults.
        # Missing sections are validated as `{}` so their paths resolve against base_dir.
        data = {k: v for k, v in data.items() if not (k in _SECTIONS and v is None)}
        for section in _SECTIONS:
            data.setdefault(section, {})
        metrics = data.get("metrics", {})
        if isinstance(metrics, dict) and "public" not in metrics:
            # /metrics is public exactly when the server is open (no auth configured).
            data["metrics"] = {**metrics, "public": data.get("auth") is None}
        return data

    @property
    def host(self) -> str:
        """The host part of `listen`, without IPv6 brackets."""
        return _split_listen(self.listen)[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(_split_listen(self.listen)[1])


# --- loading -------------------------------------------------------------------------

Origin = tuple[str, int | None, int | None]  # (file, line, column) or (what, None, None)


def load_settings(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read `path` (or nothing), apply env and explicit overrides, validate.

    `environ` defaults to `os.environ`; only `PARTITUR__…` variables are read.
    `overrides` maps dotted keys (`db.url`) to values, plus `host` and `port`, which
    replace one half of `listen`; None values are ignored so CLI flags can be passed as
    they are.
    """
    origins: dict[tuple[str | int, ...], Origin] = {}
    data: dict[str, Any] = {}
    base_dir: Path | None = None
    if path is not None:
        path = Path(path)
        data = _read_yaml(path, origins)
        base_dir = path.resolve().parent
    env_raw = _apply_env(data, os.environ if environ is None else environ, origins)
    _apply_overrides(data, overrides or {}, origins)

    context = {"base_dir": base_dir}
    try:
        return Settings.model_validate(data, context=context)
    except ValidationError as first:
        # A YAML-typed env value (`on`, `123`) aimed at a string field: use the raw text.
        retried = False
        for err in first.errors():
            key = tuple(err["loc"])
            if err["type"] == "string_type" and key in env_raw:
                _set(data, key, env_raw[key])
                retried = True
        if not retried:
            raise _config_error(first, origins) from None
        try:
            return Settings.model_validate(data, context=context)
        except ValidationError as second:
            raise _config_error(second, origins) from None


def _read_yaml(path: Path, origins: dict[tuple[str | int, ...], Origin]) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(
            issues=[Issue(f"cannot read config file: {exc.strerror or exc}", file=str(path))]
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigInvalid(
            issues=[
                Issue(
                    f"invalid YAML: {problem}",
                    file=str(path),
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ]
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigInvalid(
            issues=[Issue("the config must be a mapping of sections", file=str(path), line=1)]
        )
    if node is not None:
        _record_positions(node, (), str(path), origins)
    return data


def _record_positions(
    node: yaml.Node,
    prefix: tuple[str | int, ...],
    file: str,
    origins: dict[tuple[str | int, ...], Origin],
    seen: set[int] | None = None,
) -> None:
    # Aliases share nodes: visit each once, so a recursive or exploding alias graph
    # cannot hang the walk (the first path to a node is the one reported).
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (*prefix, str(key_node.value))
                mark = key_node.start_mark
                origins[key] = (file, mark.line + 1, mark.column + 1)
                _record_positions(value_node, key, file, origins, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*prefix, index)
            mark = item.start_mark
            origins[key] = (file, mark.line + 1, mark.column + 1)
            _record_positions(item, key, file, origins, seen)


def _set(data: dict[str, Any], key: tuple[str | int, ...], value: Any) -> None:
    node = data
    for part in key[:-1]:
        child = node.get(str(part))
        if not isinstance(child, dict):
            child = node[str(part)] = {}
        node = child
    node[str(key[-1])] = value


def _claim(
    origins: dict[tuple[str | int, ...], Origin], key: tuple[str | int, ...], origin: Origin
) -> None:
    """Record that `origin` set `key` (and any section it created), replacing the file's."""
    for known in [k for k in origins if k[: len(key)] == key]:
        del origins[known]
    for end in range(1, len(key) + 1):
        origins.setdefault(key[:end], origin)


def _apply_env(
    data: dict[str, Any],
    environ: Mapping[str, str],
    origins: dict[tuple[str | int, ...], Origin],
) -> dict[tuple[str | int, ...], str]:
    raw: dict[tuple[str | int, ...], str] = {}
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigInvalid(
                issues=[Issue(f"malformed override variable {name}: empty key segment")]
            )
        key = tuple(parts)
        text = environ[name]
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _set(data, key, value)
        _claim(origins, key, (f"environment variable {name}", None, None))
        raw[key] = text
    return raw


def _apply_overrides(
    data: dict[str, Any],
    overrides: Mapping[str, Any],
    origins: dict[tuple[str | int, ...], Origin],
) -> None:
    host, port = overrides.get("host"), overrides.get("port")
    if host is not None or port is not None:
        current = data.get("listen", f"{DEFAULT_HOST}:{DEFAULT_PORT}")
        old_host, old_port = _split_listen(str(current))
        data["listen"] = f"{host if host is not None else old_host}:" + str(
            port if port is not None else old_port
        )
        _claim(origins, ("listen",), ("--host/--port", None, None))
    for dotted, value in overrides.items():
        if dotted in ("host", "port") or value is None:
            continue
        key = tuple(dotted.split("."))
        _set(data, key, value)
        _claim(origins, key, (f"override {dotted}", None, None))


# --- errors --------------------------------------------------------------------------


def _config_error(
    exc: ValidationError, origins: dict[tuple[str | int, ...], Origin]
) -> ConfigInvalid:
    issues = [_issue(err, origins) for err in exc.errors()]
    issues.sort(key=lambda i: (i.file is None, i.file or "", i.line or 0, i.column or 0, i.path))
    return ConfigInvalid(issues=issues)


def _dotted(loc: tuple[str | int, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _issue(err: ErrorDetails, origins: dict[tuple[str | int, ...], Origin]) -> Issue:
    loc = tuple(err["loc"])
    if loc and loc[-1] == "[key]":  # an invalid mapping key: blame the key itself
        loc = loc[:-1]
    message = err["msg"].removeprefix("Value error, ")
    hint: str | None = None
    if err["type"] == "extra_forbidden" and loc:
        unknown = str(loc[-1])
        message = f"unknown key {unknown!r}"
        choices = _known_keys(loc[:-1])
        close = difflib.get_close_matches(unknown, choices, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif choices:
            hint = "known keys: " + ", ".join(sorted(choices))
    origin: Origin | None = None
    for end in range(len(loc), -1, -1):
        origin = origins.get(loc[:end])
        if origin is not None:
            break
    path = _dotted(loc)
    if origin is None:
        return Issue(message, path=path, hint=hint)
    where, line, column = origin
    if line is None:
        # Not from the file: say which variable or flag set it.
        note = f"from {where}"
        return Issue(message, path=path, hint=f"{hint}; {note}" if hint else note)
    return Issue(message, path=path, file=where, line=line, column=column, hint=hint)


def _model_of(annotation: Any) -> Any:
    """Strip Optional/Annotated wrappers off a field's type."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed at `loc` in the settings tree (for "did you mean")."""
    current: Any = Settings
    for part in loc:
        current = _model_of(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    current = _model_of(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
