"""What every sync facade shares: the client's event-loop thread, forwarding a call to it,
iterating a chunk stream from another thread, the health-check outage policy, and closing.

A generation's facade (``interactive_sync``, ``workflow_sync``) subclasses SyncClient and
keeps that generation's OpenFL method names and signatures; each method forwards to the async
client on the loop thread and holds no protocol logic of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import queue
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from shardclient._client.loop import LoopStoppedError, LoopThread
from shardclient._errors import ClientClosedError, ShardClientError
from shardclient._log import OnceLog

__all__ = ["AsyncClient", "SyncClient"]

logger = logging.getLogger("shardclient.client")

T = TypeVar("T")
A = TypeVar("A", bound="AsyncClient")
S = TypeVar("S", bound="SyncClient")  # type: ignore[type-arg]  # any SyncClient

_OUTAGE_RETRY_DELAY = 10  # seconds between health checks in an outage, before any period
_READ_AHEAD = 2  # chunks a sync chunk iterator holds ready (4 MiB: one HTTP/2 stream window)


class AsyncClient(Protocol):
    """What a facade needs of the async client it forwards to."""

    @property
    def address(self) -> str: ...

    async def close(self) -> None: ...


class SyncClient(Generic[A]):
    """A thread-safe sync client over an async one, run by an event-loop thread of its own.

    One connection serves calls from any number of threads at once, run by one loop thread
    (started on the first call). Ctrl-C during a call cancels it. ``close()`` (or leaving a
    ``with`` block), from any thread or a signal handler, ends calls still blocked in other
    threads with ClientClosedError and leaves no thread, socket or loop behind; a client
    never closed (as OpenFL code never closes its client) is closed when it is collected,
    or at interpreter exit.
    """

    def __init__(self, aio: A, thread_name: str) -> None:
        self._aio = aio
        self._loop = LoopThread(thread_name[:40])
        self._health_period: int | None = None  # the last period the director named
        self._outage = OnceLog(logger, f"Health checks to {aio.address}")
        self._finalizer = weakref.finalize(self, _shut_down, self._loop, self._aio)
        self._finalizer.atexit = False
        _open_clients.add(self)

    @property
    def aio(self) -> A:
        """The async client doing the work (use it only on this client's loop)."""
        return self._aio

    def _call(self, func: Callable[[], Awaitable[T]]) -> T:
        """Run ``func()`` on the client's loop and wait for it.

        Ctrl-C (or another exception raised in this thread while waiting) cancels the call
        and waits for its cleanup, e.g. a partial download's removal, before it propagates.
        """

        async def run() -> T:
            return await func()

        try:
            return self._loop.run(run())
        except LoopStoppedError as exc:
            raise ClientClosedError(f"client for {self._aio.address} is closed") from exc

    def _iterate(self, chunks: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate, from this thread, over the async iterator ``chunks()`` makes on the loop.

        The loop reads up to two items ahead of the caller; leaving the loop early (or
        dropping the iterator) closes the stream."""
        ahead: _ReadAhead[T] = _ReadAhead(_READ_AHEAD)
        call = self._loop.prepare(ahead.pump(chunks))
        try:
            self._loop.start(call)
            while True:
                try:
                    item = ahead.take()
                except BaseException:
                    self._loop.hold_if_abandoned(call)
                    raise
                if item is None:
                    return
                yield item
        except LoopStoppedError as exc:
            raise ClientClosedError(f"client for {self._aio.address} is closed") from exc
        finally:
            self._loop.cancel(call)  # closes the stream, whatever ended the iteration

    def _health(
        self,
        check: Callable[[], Awaitable[int]],
        *,
        raise_on_failure: bool,
        lost: tuple[type[BaseException], ...],
    ) -> int:
        """A health check through ``check()``, surviving outages as OpenFL's envoy needs.

        ``lost`` (the director no longer knows this envoy) and ClientClosedError propagate.
        Any other failure, once the retries are spent, is logged once per outage and answered
        with the seconds to wait before trying again, so that a health loop written for
        OpenFL (which dies on anything it does not expect) lives through outages of any
        length and re-registers when the director is back; ``raise_on_failure`` raises it."""
        try:
            period = self._call(check)
        except ShardClientError as exc:
            if raise_on_failure or isinstance(exc, (*lost, ClientClosedError)):
                raise
            delay = self._health_period or _OUTAGE_RETRY_DELAY
            self._outage.problem(
                "outage", f"failed: {exc}; trying again every {delay} s", until="per outage"
            )
            return delay
        self._outage.recovered("they reach the director again")
        self._health_period = period
        return period

    def close(self) -> None:
        """Close the connection and the event loop; calls blocked in other threads end
        with ClientClosedError. Safe to call more than once, from any thread, and from a
        signal handler."""
        if self._loop.stopped:
            return
        self._finalizer.detach()
        _shut_down(self._loop, self._aio)

    def __enter__(self: S) -> S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _ReadAhead(Generic[T]):
    """Items pumped off an async iterator on the loop into a queue the caller reads from,
    at most ``depth`` of them unread (HTTP/2 flow control holds the rest at the director)."""

    def __init__(self, depth: int) -> None:
        self._items: queue.SimpleQueue[tuple[T | None, BaseException | None]] = queue.SimpleQueue()
        self._depth = depth
        self._room: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def pump(self, make: Callable[[], AsyncIterator[T]]) -> None:
        """Move what ``make()`` yields into the queue (what it raises too, even at once)."""
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Semaphore(self._depth)
        try:
            items = make()
            async with contextlib.aclosing(items):  # type: ignore[type-var]  # an async generator
                async for item in items:
                    await self._room.acquire()
                    self._items.put((item, None))
        except asyncio.CancelledError:
            self._items.put((None, LoopStoppedError("the chunk stream was cancelled")))
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._items.put((None, exc))
            return
        self._items.put((None, None))

    def take(self) -> T | None:
        """The next item (None at the end); raises what ended the stream. Blocks; Ctrl-C
        interrupts it."""
        item, error = self._items.get()
        if error is not None:
            raise error
        if item is not None and self._loop is not None and self._room is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to free
                self._loop.call_soon_threadsafe(self._room.release)
        return item


def _shut_down(loop: LoopThread, aio: AsyncClient, *, at_exit: bool = False) -> None:
    """Close ``aio``'s connection on ``loop``, then stop the loop (also the finalizer). At
    interpreter exit, the threads still waiting on a call are left blocked (see
    LoopThread.abandon_waiters)."""
    if at_exit:
        loop.abandon_waiters()
    try:
        if loop.running and not loop.in_loop():
            loop.run(aio.close())
    except LoopStoppedError:
        pass
    finally:
        loop.stop()


_open_clients: weakref.WeakSet[SyncClient] = weakref.WeakSet()  # type: ignore[type-arg]


@atexit.register
def _close_at_exit() -> None:
    """Close every client still open when the interpreter exits (after its non-daemon threads
    ended, and after atexit handlers registered later, which may still close them as usual)."""
    for client in list(_open_clients):
        if client._finalizer.detach() is not None:
            _shut_down(client._loop, client._aio, at_exit=True)
