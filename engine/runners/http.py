"""The http runner: one HTTP request per attempt, with httpx.

The action's `url`, `headers`, `query`, `body` and `form` arrive rendered. Before anything
is sent the runner checks what templating cannot: the URL's scheme is `http` or `https`
and it names a host; header names are tokens and no header name or value holds CR, LF
or NUL (no header injection, whatever a template produced). Query values go through
httpx's `params`, so they are URL-encoded; values spliced into the URL itself are the
template's business (`<< x | urlencode >>`).

A mapping or list `body` is sent as JSON, any other body as text; `form` is sent as
`application/x-www-form-urlencoded`. Redirects are not followed: a 3xx is the step's
answer (its `Location` is in the output headers). The output is `{status, headers, body}`,
with the body parsed when the response is JSON; an action with an `output` schema gets the
body itself. A status ≥ 400 fails the step unless it is listed in `accept_status`; a
body over `max_body` bytes (10 MiB) fails it too.
Transport errors fail with kind `error` and timeouts with kind `timeout`, so the step's
retry policy decides what happens next. The log shows the request line and the status;
headers that may carry credentials are masked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from engine.runners.base import COMPLETED, FAILED, LogSink, RunResult, StepRun

if TYPE_CHECKING:
    import httpx  # imported by the first http step, not at every start

DEFAULT_TIMEOUT = 30.0
# The body ends up in an event; a step is not a download manager.
MAX_BODY = 10 * 1024 * 1024
BODY_EXCERPT = 200
MASK = "••••••"
SENSITIVE_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
    "api-key", "x-auth-token", "x-access-token", "x-csrf-token", "x-xsrf-token",
})
_SENSITIVE_PARTS = ("token", "secret", "password", "key", "auth", "session", "signature")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_HEADER_CHARS = re.compile(r"[\r\n\x00]")


class RequestRefused(ValueError):
    """The rendered request is not one the runner will send."""


def is_sensitive_header(name: str) -> bool:
    """Whether a header's value is masked in logs (credentials, cookies, tokens)."""
    lowered = name.lower()
    return lowered in SENSITIVE_HEADERS or any(part in lowered for part in _SENSITIVE_PARTS)


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` with the values of sensitive ones replaced by `••••••`."""
    return {k: MASK if is_sensitive_header(k) else v for k, v in headers.items()}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value, default=str).decode()


def check_url(value: Any) -> httpx.URL:
    """The parsed URL; `RequestRefused` unless it is an absolute http(s) URL."""
    import httpx

    if not isinstance(value, str) or not value.strip():
        raise RequestRefused("http action has no url")
    if _BAD_HEADER_CHARS.search(value):
        raise RequestRefused("url contains a line break or NUL; refused")
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL as exc:
        raise RequestRefused(f"invalid url {value!r}: {exc}") from None
    if url.scheme not in ("http", "https"):
        shown = url.scheme or "none"
        raise RequestRefused(f"url scheme must be http or https, not {shown!r}")
    if not url.host:
        raise RequestRefused(f"url {value!r} names no host")
    return url


def check_headers(value: Any) -> dict[str, str]:
    """Header names and values as strings; `RequestRefused` on CR/LF/NUL or a bad name."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestRefused("headers must be a mapping of name to value")
    headers: dict[str, str] = {}
    for name, raw in value.items():
        name = str(name)
        text = _text(raw)
        if _BAD_HEADER_CHARS.search(name) or _BAD_HEADER_CHARS.search(text):
            raise RequestRefused(f"header {name.strip()!r} contains CR, LF or NUL; refused")
        if not _TOKEN.match(name):
            raise RequestRefused(f"invalid header name {name!r}")
        headers[name] = text
    return headers


def query_params(value: Any, what: str = "query") -> httpx.QueryParams:
    """Parameters from a mapping; a list value repeats the parameter, `null` drops it."""
    import httpx

    if value is None:
        return httpx.QueryParams()
    if not isinstance(value, Mapping):
        raise RequestRefused(f"{what} must be a mapping of name to value")
    pairs: list[tuple[str, str | int | float | bool | None]] = []
    for name, raw in value.items():
        for item in raw if isinstance(raw, list) else [raw]:
            if item is not None:
                pairs.append((str(name), _text(item)))
    return httpx.QueryParams(pairs)


def _has(headers: Mapping[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)


def request_body(action: Mapping[str, Any], headers: dict[str, str]) -> bytes | None:
    """The encoded body (`body` or `form`), setting Content-Type in `headers` if unset."""
    body, form = action.get("body"), action.get("form")
    if body is not None and form is not None:
        raise RequestRefused("http action takes 'body' or 'form', not both")
    if form is not None:
        content = str(query_params(form, "form")).encode()
        if not _has(headers, "content-type"):
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return content
    if body is None:
        return None
    if isinstance(body, str):
        if not _has(headers, "content-type"):
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return body.encode()
    if not _has(headers, "content-type"):
        headers["Content-Type"] = "application/json"
    return orjson.dumps(body, default=str)


def response_body(content_type: str, raw: bytes, text: str) -> Any:
    """The body parsed as JSON when the content type says JSON (and it is), else text."""
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            pass
    return text


class BodyTooLarge(Exception):
    """The response body is over the runner's limit."""


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= BODY_EXCERPT else text[:BODY_EXCERPT] + "…"


class HttpRunner:
    """Sends http steps' requests. `transport` exists for tests that need a custom one."""

    def __init__(
        self,
        *,
        default_timeout: float = DEFAULT_TIMEOUT,
        max_body: int = MAX_BODY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.default_timeout = default_timeout
        self.max_body = max_body
        self.transport = transport

    async def run(
        self, run: StepRun, log: LogSink, on_start: Callable[[int | None], None]
    ) -> RunResult:
        import httpx

        on_start(None)
        action = run.action
        method = str(action.get("method") or "GET").upper()
        timeout = run.timeout or self.default_timeout
        try:
            if not _TOKEN.match(method):
                raise RequestRefused(f"invalid http method {method!r}")
            url = check_url(action.get("url"))
            headers = check_headers(action.get("headers"))
            content = request_body(action, headers)
            url = url.copy_merge_params(query_params(action.get("query")))
        except RequestRefused as exc:
            log.line("stderr", f"request refused: {exc}")
            return RunResult(FAILED, error=str(exc))

        log.line("stdout", f"{method} {url}")
        for name, value in masked_headers(headers).items():
            log.line("stdout", f"> {name}: {value}")
        try:
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(
                    timeout=timeout, follow_redirects=False, transport=self.transport,
                    trust_env=False,
                ) as client,
                client.stream(method, url, headers=headers, content=content) as response,
            ):
                log.line("stdout", f"< {response.status_code} {response.reason_phrase}".rstrip())
                raw = await _read_capped(response, self.max_body)
        except (TimeoutError, httpx.TimeoutException):
            log.line("stderr", f"no response within {timeout:g}s")
            return RunResult(FAILED, error=f"{method} {url} timed out after {timeout:g}s",
                             kind="timeout")
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            log.line("stderr", f"request failed: {reason}")
            return RunResult(FAILED, error=f"{method} {url} failed: {reason}")
        except BodyTooLarge:
            return RunResult(FAILED, error=(
                f"{method} {url} answered {response.status_code} with a body over "
                f"{self.max_body} bytes"))

        text = raw.decode(response.encoding or "utf-8", errors="replace")
        body = response_body(response.headers.get("content-type", ""), raw, text)
        accepted = {int(code) for code in action.get("accept_status") or ()}
        if response.status_code >= 400 and response.status_code not in accepted:
            excerpt = _excerpt(text)
            error = f"{method} {url} answered {response.status_code}"
            return RunResult(FAILED, error=f"{error}: {excerpt}" if excerpt else error)
        if action.get("output"):
            return RunResult(COMPLETED, output=body)
        output = {"status": response.status_code, "headers": dict(response.headers), "body": body}
        return RunResult(COMPLETED, output=output)
