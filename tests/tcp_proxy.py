"""A small TCP proxy (asyncio, in a thread of its own) that stands for a cluster endpoint
that fails over by itself (Aurora's, RDS's): new connections go to the current target;
``flip(port)`` points it at another node. Connections already open stay where they are,
as they do behind a DNS endpoint, unless ``flip(..., close=True)``."""

from __future__ import annotations

import asyncio
import contextlib
import threading


class TcpProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target = target_port
        self.connections = 0  # accepted so far
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, host, 0), self._loop).result(5)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target)
        except OSError:
            writer.close()
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open.discard(writer)
            self._open.discard(up_writer)

    def flip(self, target_port: int, *, close: bool = False) -> None:
        def run() -> None:
            self.target = target_port
            if close:
                for w in list(self._open):
                    w.close()
        self._loop.call_soon_threadsafe(run)

    def close(self) -> None:
        def run() -> None:
            self._server.close()
            for w in list(self._open):
                w.close()
        self._loop.call_soon_threadsafe(run)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
