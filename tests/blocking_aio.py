"""The asyncio client driven by blocking test code: the same test body runs against
:class:`kvgrpc.client.KeyValueClient` and :class:`kvgrpc.aio.KeyValueClient`.

:class:`BlockingAioClient` owns an event loop on its own thread; it creates the asyncio
client in that loop and runs each coroutine there (``run_coroutine_threadsafe``), so
calls may come from any test thread, as they may with the blocking client. Async
iterators (scan, watch) become iterators. Nothing is reimplemented: every call is the
asyncio client's own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import grpc

from kvgrpc import aio
from kvgrpc.client import WatchEvent

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="aio-client-loop")
        self._thread.start()

    def run(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()  # type: ignore[arg-type]

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.run(iterator.__anext__())
            except StopAsyncIteration:
                return

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class BlockingWatch:
    """An :class:`kvgrpc.aio.Watch` as an iterator (as :class:`kvgrpc.client.Watch`)."""

    def __init__(self, loop: _Loop, watch: aio.Watch) -> None:
        self._loop = loop
        self._watch = watch
        self._events = loop.iterate(watch)

    @property
    def revision(self) -> int | None:
        return self._watch.revision

    def __iter__(self) -> BlockingWatch:
        return self

    def __next__(self) -> WatchEvent:
        return next(self._events)

    def __enter__(self) -> BlockingWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._watch.cancel)


class BlockingAioClient:
    """The asyncio client with blocking methods (for tests)."""

    def __init__(self, target: str, **kwargs: Any) -> None:
        self._loop = _Loop()
        self.target = target

        async def create() -> aio.KeyValueClient:
            return aio.KeyValueClient(target, **kwargs)

        self.aio = self._loop.run(create())
        self._sync_channel: grpc.Channel | None = None

    @property
    def _channel(self) -> grpc.Channel:
        """A blocking channel to the same target, for tests that talk to the server
        through raw stubs (the asyncio client's own channel belongs to its loop)."""
        if self._sync_channel is None:
            self._sync_channel = grpc.insecure_channel(self.target)
        return self._sync_channel

    def __enter__(self) -> BlockingAioClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sync_channel is not None:
            self._sync_channel.close()
        self._loop.run(self.aio.close())
        self._loop.stop()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.aio, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if isinstance(result, aio.Watch):
                return BlockingWatch(self._loop, result)
            if hasattr(result, "__anext__"):
                return self._loop.iterate(result)
            if asyncio.iscoroutine(result):
                return self._loop.run(result)
            return result

        return call
