"""The change hub: one change feed per server, fanned out to every Watch.

Modelled on etcd's watchable store. One thread reads the master's change feed
(:meth:`kvgrpc.store.base.Store.changes`: the binlog on MariaDB, the change log on
SQLite) from the revision the hub started at, and appends each revision's changes to a
bounded in-memory log, the *ring*. Watchers do not get queues of their own: each keeps a
cursor into the ring and reads at its own pace, so

- the feed never waits for a watcher, and one slow watcher never delays another;
- memory is bounded by the ring (``max_buffer_bytes``), however many watchers there are;
- a watcher whose cursor falls off the ring's tail (it read slower than the writes came
  for longer than the ring holds) ends with Unavailable naming the revision it reached:
  the client resumes from there, and that watch is then caught up from history;
- watchers that share a filter share the filtered, chunked :class:`WatchBatch` objects of
  each revision (and the transport caches their encoding on them), so a response is built
  and serialised once, not once per watcher.

A watch that starts from a revision older than the ring holds is *unsynced*: it reads
history through a private feed of its own (two more master connections on MariaDB;
at most ``max_catchup`` at once) until it reaches the ring, then joins the others.

Domain code: plain Python types, :mod:`kvgrpc.errors` exceptions, no gRPC. The hub is
driven from one asyncio event loop (the server's); the feed threads hand revisions over
with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from kvgrpc.errors import KvError, OutOfRange, ResourceExhausted, Unavailable
from kvgrpc.records import Event
from kvgrpc.logs import RateLimitedLog
from kvgrpc.store.base import ALL_KEYS, ChangeBatch, KeyFilter

_LOGGER = logging.getLogger(__name__)

#: The most events per response, and about the most bytes of keys and values.
WATCH_CHUNK_EVENTS = 1000
WATCH_CHUNK_BYTES = 1 << 20
#: How often a watch with nothing to deliver reports the revision it has reached.
PROGRESS_SECONDS = 1.0
#: How long the feed keeps running once the last watch has ended (then it stops reading
#: and decoding the binlog, ~2.5 µs of server CPU per record written, until the next watch).
FEED_LINGER_SECONDS = 30.0
#: A change's memory in the ring beyond twice its key and value (objects, view, encoding).
CHANGE_OVERHEAD_BYTES = 320
#: How long the hub keeps retrying a broken feed before it fails its watchers.
FEED_RETRY_SECONDS = 10.0


@dataclass(slots=True, eq=False)
class WatchBatch:
    """One Watch response: events in commit order (the feed's own :class:`Event` s), and
    the revision up to which every matching change has been delivered. ``created`` marks
    the first one (no events).

    Batches of the ring are shared by every watcher with the same filter; ``wire`` is
    where the transport keeps their encoding, so it is made once."""

    revision: int
    events: Sequence[Event] = ()
    created: bool = False
    wire: object = field(default=None, repr=False)


def chunks(events: Sequence[Event], revision: int) -> list[WatchBatch]:
    """Splits one revision's events into responses of bounded size. All but the last report
    the revision before: the revision is complete only once its last event is sent."""
    out: list[WatchBatch] = []
    start, size = 0, 0
    for i, event in enumerate(events):
        size += len(event.key) + len(event.value) + 16
        if (i + 1 - start >= WATCH_CHUNK_EVENTS or size >= WATCH_CHUNK_BYTES) and i + 1 < len(events):
            out.append(WatchBatch(revision - 1, events[start : i + 1]))
            start, size = i + 1, 0
    out.append(WatchBatch(revision, events[start:]))
    return out


class _Entry:
    """One revision in the ring: its events, and their views per filter (built on demand).

    The events are the feed's own, shared by every view: a view is a list of references."""

    __slots__ = ("revision", "events", "size", "_views", "_by_key")

    def __init__(self, revision: int, events: Sequence[Event]) -> None:
        self.revision = revision
        self.events = events
        # What a change costs in memory, measured with tracemalloc (a 14-byte key and a
        # 100-byte value: 523 bytes with one filter's view and its encoding) when the feed
        # made a change and each view an Event of its own: now an upper bound.
        self.size = sum(2 * (len(e.key) + len(e.value)) + CHANGE_OVERHEAD_BYTES for e in events)
        self._views: dict[KeyFilter, list[WatchBatch]] = {}
        self._by_key: dict[str, list[Event]] | None = None

    def view(self, keys: KeyFilter) -> list[WatchBatch]:
        """The responses a watcher of ``keys`` gets for this revision (empty: none match)."""
        found = self._views.get(keys)
        if found is None:
            # Keys are text here (decoded by the feed); a filter's UTF-8 prefix is whole
            # characters, so matching its text is matching its bytes.
            prefix = keys.prefix.decode("utf-8", "replace")
            matching: Sequence[Event]
            if keys.exact:  # one key: index the revision once, for every single-key watcher
                if self._by_key is None:
                    self._by_key = collections.defaultdict(list)
                    for e in self.events:
                        self._by_key[e.key].append(e)
                matching = self._by_key.get(prefix, ())
            elif not prefix:
                matching = self.events
            else:
                matching = [e for e in self.events if e.key.startswith(prefix)]
            found = chunks(matching, self.revision) if matching else []
            self._views[keys] = found
        return found


class ChangeHub:
    """The change feed of one server's master store, shared by all its watches.

    ``start_feed(after)`` (blocking) opens the feed; :meth:`watch` is used on the event
    loop ``loop``. ``executor`` runs the blocking work of catch-up feeds' set-up.
    Bounds: ``max_buffer_bytes`` of changes in the ring, ``max_watchers`` open watches,
    ``max_catchup`` watches reading history at once.
    """

    def __init__(
        self,
        store,
        loop: asyncio.AbstractEventLoop,
        *,
        max_buffer_bytes: int = 32 << 20,
        max_watchers: int = 4096,
        max_catchup: int = 4,
        catchup_wait: float = 30.0,
        feed_retry: float = FEED_RETRY_SECONDS,
    ) -> None:
        self._store = store
        self._feed_retry = feed_retry
        self._loop = loop
        self.max_buffer_bytes = max_buffer_bytes
        self.max_watchers = max_watchers
        self.max_catchup = max_catchup
        self._catchup_wait = catchup_wait
        self._lock = threading.Lock()  # guards the ring and the head, written by the feed thread
        self._ring: collections.deque[_Entry] = collections.deque()
        self._revisions: list[int] = []  # the ring's revisions, for bisect (kept in step)
        self._base = 0  # absolute index of self._ring[0]
        self._bytes = 0
        self._floor = 0  # the ring holds every change after this revision
        self._head = 0  # the latest revision the feed has reached
        self._failure: KvError | None = None
        self._closed = threading.Event()
        # A feed that is down is retried every 0.5 s: its warning once a minute at most.
        self._feed_log = RateLimitedLog(_LOGGER)
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_lock = threading.Lock()
        self._new: asyncio.Future | None = None  # resolved when the ring or the head moves
        self._wake_pending = False
        self.watchers = 0
        self._generation = 0  # of the feed thread: a stopped feed's late batches are ignored
        self._idle_since = time.monotonic()
        self._idle_stop = False  # the feed decided to stop: no watch for feed_linger seconds
        self.feed_linger = FEED_LINGER_SECONDS
        self._catchups = asyncio.Semaphore(max_catchup)
        self.catching_up = 0
        self.fell_behind = 0  # watches ended because they read slower than the ring holds

    # -- the feed (its own thread) -----------------------------------------------------

    @property
    def running(self) -> bool:
        return (self._thread is not None and self._thread.is_alive() and self._failure is None
                and not self._idle_stop)

    def _stopped(self, generation: int) -> bool:
        """The feed thread's stop condition: the hub closed, a newer feed started, or no
        watch for FEED_LINGER_SECONDS (decided under the lock that watches start under)."""
        if self._closed.is_set() or generation != self._generation:
            return True
        with self._lock:
            if (not self._idle_stop and self.watchers == 0
                    and time.monotonic() - self._idle_since > self.feed_linger):
                self._idle_stop = True
            return self._idle_stop

    def ensure_started(self) -> None:
        """Starts the feed from the master's latest revision if it is not running (blocking).

        Raises what the store raises when the feed cannot start (FailedPrecondition for a
        master without a usable binlog, Unavailable when it cannot be reached)."""
        with self._start_lock:
            if self.running or self._closed.is_set():
                return
            head = self._store.head_revision()
            opened = threading.Event()
            errors: list[BaseException] = []
            with self._lock:
                self._generation += 1
                self._idle_stop = False
                self._ring.clear()
                self._revisions.clear()
                self._base += 1  # every old cursor now points before the ring
                self._bytes = 0
                self._floor = self._head = head
                self._failure = None
            self._thread = threading.Thread(target=self._run,
                                            args=(head, opened, errors, self._generation),
                                            name="kvgrpc-change-hub", daemon=True)
            self._thread.start()
            opened.wait()
            if errors:
                raise errors[0]

    def _run(self, after: int, opened: threading.Event, errors: list[BaseException],
             generation: int) -> None:
        retry_until = None
        while not self._stopped(generation):
            try:
                feed = self._store.changes(after, lambda: self._stopped(generation), ALL_KEYS)
                for batch in feed:
                    if not opened.is_set():
                        opened.set()
                    if retry_until is not None:
                        _LOGGER.info("the change feed is back, from revision %d", after)
                        retry_until = None
                    self._append(batch, generation)
                    after = batch.revision
                return
            except KvError as exc:
                if not opened.is_set():
                    errors.append(exc)
                    opened.set()
                    self._fail(exc)
                    return
                if not isinstance(exc, Unavailable):
                    _LOGGER.error("the change feed failed: %s", exc)
                    self._fail(exc)
                    return
                now = time.monotonic()
                # A failover breaks the master's feed; the store may be a
                # routing.MasterFeed, which reopens it on the new master from ``after``.
                retry_until = retry_until or now + self._feed_retry
                if now >= retry_until:
                    _LOGGER.error("the change feed is down: %s", exc)
                    self._fail(Unavailable(f"the change feed is down ({exc}); resume the watch"))
                    return
                self._feed_log.warning("feed", "the change feed broke (%s); reopening it from "
                                       "revision %d every 0.5 s", exc, after)
                self._closed.wait(0.5)
            except BaseException as exc:  # noqa: BLE001 - a bug: fail the watchers loudly
                _LOGGER.exception("the change feed crashed")
                if not opened.is_set():
                    errors.append(exc)
                    opened.set()
                self._fail(Unavailable("the change feed stopped; resume the watch"))
                return

    def _append(self, batch: ChangeBatch, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # a stopped feed's last batch: the new feed has its own ring
            if batch.revision <= self._head and not batch.events:
                return
            if batch.events:
                entry = _Entry(batch.revision, batch.events)
                self._ring.append(entry)
                self._revisions.append(entry.revision)
                self._bytes += entry.size
                while self._bytes > self.max_buffer_bytes and len(self._ring) > 1:
                    old = self._ring.popleft()
                    del self._revisions[0]
                    self._bytes -= old.size
                    self._base += 1
                    self._floor = old.revision
            self._head = max(self._head, batch.revision)
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._wake)

    def _fail(self, error: KvError) -> None:
        with self._lock:
            self._failure = error
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        new, self._new = self._new, None
        if new is not None and not new.done():
            new.set_result(None)

    async def _changed(self, timeout: float) -> None:
        if self._new is None:
            self._new = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._new), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        """Ends every watch (Unavailable: resume on another server) and stops the feed."""
        self._closed.set()
        self._loop.call_soon_threadsafe(self._wake)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- watches (on the event loop) ---------------------------------------------------

    def head(self) -> int:
        with self._lock:
            return self._head

    async def watch(self, keys: KeyFilter, after: int | None, executor: Executor,
                    head_of_database: Callable[[], int]) -> AsyncIterator[WatchBatch]:
        """The responses of one watch of ``keys`` from revision ``after`` (None: now).

        The first has ``created`` set. Ends only by raising: Unavailable when the server
        shuts down, the feed fails or the watch fell behind (each naming the revision to
        resume from); OutOfRange for a revision the database no longer holds or does not
        hold yet. ``head_of_database`` (blocking) is asked when ``after`` is ahead of the hub.
        """
        if self.watchers >= self.max_watchers:
            raise ResourceExhausted(
                f"the server has {self.max_watchers} watches open, its limit "
                "(--max-watches); retry later or on another server")
        with self._lock:  # against the feed deciding to stop for want of watches
            self.watchers += 1
            running = self.running
        try:
            if not running:
                await self._loop.run_in_executor(executor, self.ensure_started)
            if after is None:
                after = self.head()
            elif after > self.head():
                head = await self._loop.run_in_executor(executor, head_of_database)
                if after > head:
                    raise OutOfRange(
                        f"revision {after} is ahead of the database's latest revision {head}")
            if after < self._floor:
                async for batch in self._catch_up(keys, after, executor):
                    yield batch
                    after = batch.revision
            else:
                yield WatchBatch(after, created=True)
            async for batch in self._follow(keys, after):
                yield batch
        finally:
            with self._lock:
                self.watchers -= 1
                if not self.watchers:
                    self._idle_since = time.monotonic()

    def _cursor_after(self, revision: int) -> int:
        """The absolute ring index of the first revision after ``revision``; below the
        ring's start when the ring no longer holds every change after ``revision`` (it
        moved on while the watch's first response was being sent: the follower then
        reports it fell behind, instead of starting past changes it never delivered)."""
        with self._lock:
            if revision < self._floor:
                return self._base - 1
            return self._base + bisect.bisect_right(self._revisions, revision)

    def _check(self, after: int) -> None:
        if self._closed.is_set():
            raise Unavailable(
                f"the server is shutting down; resume the watch from revision {after} on "
                "another server")
        if self._failure is not None:
            raise Unavailable(f"{self._failure}; resume from revision {after}")

    async def _follow(self, keys: KeyFilter, after: int) -> AsyncIterator[WatchBatch]:
        cursor = self._cursor_after(after)
        reported = time.monotonic()
        while True:
            self._check(after)
            with self._lock:
                if cursor < self._base:
                    behind = True
                    entry = None
                else:
                    behind = False
                    i = cursor - self._base
                    entry = self._ring[i] if i < len(self._ring) else None
                    head = self._head
            if behind:
                self.fell_behind += 1
                raise Unavailable(
                    f"this watch read slower than changes arrived and fell behind the server's "
                    f"buffer ({self.max_buffer_bytes} bytes, --watch-buffer-bytes); resume from "
                    f"revision {after}")
            if entry is not None:
                cursor += 1
                if entry.revision <= after:
                    continue
                batches = entry.view(keys)
                for batch in batches:
                    yield batch
                after = entry.revision
                if batches:
                    reported = time.monotonic()
                continue
            waited = time.monotonic() - reported
            if head > after and waited >= PROGRESS_SECONDS:
                after = head
                reported = time.monotonic()
                yield WatchBatch(head)
                continue
            await self._changed(max(0.01, PROGRESS_SECONDS - waited))

    async def _catch_up(self, keys: KeyFilter, after: int,
                        executor: Executor) -> AsyncIterator[WatchBatch]:
        """History from ``after`` through a private feed, until the ring covers the rest."""
        try:
            await asyncio.wait_for(self._catchups.acquire(), self._catchup_wait)
        except TimeoutError:
            raise Unavailable(
                f"{self.max_catchup} watches are already reading history (--max-catchup-watches); "
                f"resume from revision {after} later") from None
        self.catching_up += 1
        stop = threading.Event()
        queue: asyncio.Queue = asyncio.Queue(maxsize=4)
        done = object()

        def put(item) -> None:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), self._loop)
            while not stop.is_set():
                try:
                    future.result(timeout=0.5)
                    return
                except TimeoutError:
                    continue
            future.cancel()

        def read() -> None:
            try:
                for batch in self._store.changes(after, lambda: stop.is_set() or self._closed.is_set(), keys):
                    put(batch)
                    if stop.is_set():
                        return
                put(done)
            except BaseException as exc:  # noqa: BLE001 - handed to the watch
                put(exc)

        reader = threading.Thread(target=read, name="kvgrpc-watch-history", daemon=True)
        reader.start()
        try:
            first = True
            while True:
                self._check(after)
                item = await queue.get()
                if item is done:
                    raise Unavailable(f"the history feed ended; resume from revision {after}")
                if isinstance(item, BaseException):
                    raise item
                if first:
                    first = False
                    yield WatchBatch(after, created=True)
                if item.events:
                    for batch in chunks(item.events, item.revision):
                        yield batch
                reached = max(after, item.revision)
                with self._lock:
                    joined = reached >= self._floor and self._failure is None
                if joined or item.events:
                    if reached > after and not item.events:
                        yield WatchBatch(reached)  # progress, so the follower starts here
                    after = reached
                if joined:
                    return
        finally:
            stop.set()
            self.catching_up -= 1
            self._catchups.release()
            while not queue.empty():  # let a blocked reader finish
                queue.get_nowait()
