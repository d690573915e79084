"""A lean HTTP/1.1 client for the benchmark's submitters and pollers.

The submitter of W3/W7 and the pollers that stamp jobs done run on the same 2-core
machine as the server they measure. httpx spends about 3 ms of CPU per request here
(its connection pool checks every connection on every request, and each request looks
for async libraries through the import system), so 100 POSTs and a poll every 10 ms took
most of a core away from the server. This client does what they need and no more:
keep-alive connections (at most `connections`, opened on demand), `Content-Length` and
chunked bodies, JSON in and out. Its `get`/`post` return an object with the part of
`httpx.Response` the callers use (`status_code`, `json()`, `raise_for_status()`).

W5, whose figure is a request's latency, keeps httpx (BENCHMARKS.md names it).
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson


class HTTPError(Exception):
    """A response with a status of 400 or more, or a broken exchange."""


class Response:
    """A status and a body."""

    __slots__ = ("body", "path", "status_code")

    def __init__(self, status_code: int, body: bytes, path: str) -> None:
        self.status_code = status_code
        self.body = body
        self.path = path

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return orjson.loads(self.body)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise HTTPError(f"{self.status_code} for {self.path}: {self.body[:200]!r}")


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """Requests to one `http://host:port` over a few keep-alive connections."""

    def __init__(self, base_url: str, connections: int = 16, timeout: float = 60.0) -> None:
        url = urlsplit(base_url)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Response:
        if params:
            path = f"{path}?{urlencode(params)}"
        return await self.request("GET", path)

    async def post(self, path: str, json: Any = None) -> Response:
        return await self.request("POST", path, orjson.dumps(json))

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")
        async with self._slots:
            # A kept connection the server closed meanwhile (uvicorn closes one idle for
            # 5 s) fails at once: one more try on a new connection (these requests are
            # safe to send twice only when no answer came, which is the case the retry
            # covers). The other kept connections were idle as long: they go too.
            for attempt in (1, 2):
                fresh = not self._idle
                reader, writer = (self._idle.pop() if self._idle
                                  else await asyncio.open_connection(self.host, self.port))
                try:
                    writer.write(message)
                    status, data, keep = await asyncio.wait_for(
                        _read_response(reader), self.timeout)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    writer.close()
                    if fresh or attempt == 2:
                        raise HTTPError(f"{method} {path}: {exc!r}") from exc
                    stale, self._idle = self._idle, []
                    for _, other in stale:
                        other.close()
                    continue
                except BaseException:
                    writer.close()
                    raise
                if keep:
                    self._idle.append((reader, writer))
                else:
                    writer.close()
                return Response(status, data, path)
        raise AssertionError("unreachable")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection may be kept)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        return status, b"".join(chunks), keep
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"])), keep
    return status, await reader.read(), False
