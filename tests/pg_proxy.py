"""A TCP proxy to PostgreSQL that loses one answer of the server on purpose.

`CuttingProxy(url)` listens on a free local port; `await proxy.start()` returns the URL
to connect through it. Once `armed`, it drops the next answer of the server and closes
that client connection: the statement ran, the client never hears how it ended (what a
connection lost at the worst moment looks like). Import as `from pg_proxy import …`
(tests/ is on `sys.path`).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class CuttingProxy:
    """A TCP proxy to PostgreSQL that, once armed, lets the next answer of the server
    go nowhere and closes that client connection: the statement ran, the client never
    hears how it ended."""

    def __init__(self, url: str) -> None:
        self.url = urlsplit(url)
        self.target = (self.url.hostname or "127.0.0.1", self.url.port or 5432)
        self.armed = False
        self.cuts = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        """Start listening; the URL that connects through the proxy."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return self.url._replace(netloc=f"{self.url.username}@127.0.0.1:{port}").geturl()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       answers: bool) -> None:
            try:
                while data := await src.read(65536):
                    if answers and self.armed:
                        self.armed = False
                        self.cuts += 1
                        writer.close()
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
