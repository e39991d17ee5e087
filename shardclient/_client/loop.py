"""LoopThread: an asyncio event loop in a thread of its own, for the sync client.

Calling threads hand coroutines to the loop and wait for them on a threading.Event, which
Ctrl-C interrupts: the call is then cancelled, its cleanup awaited (a second Ctrl-C stops
waiting), and the KeyboardInterrupt goes on. Nothing here touches signal handlers or any
other process-wide state. ``stop()`` may be called from any thread, a signal handler
included: it cancels every call in flight (their callers see LoopStoppedError), closes the
loop and ends the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["LoopStoppedError", "LoopThread"]

logger = logging.getLogger("shardclient.client")

T = TypeVar("T")

_STOP_JOIN_TIMEOUT = 10.0  # seconds stop() waits for the calls' cleanup and the thread


class LoopStoppedError(RuntimeError):
    """The loop was stopped before or while the call ran."""


class _Call(Generic[T]):
    """One coroutine handed to the loop, and what became of it."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro: Coroutine[Any, Any, T] | None = coro
        self.task: asyncio.Task[T] | None = None
        self.done = threading.Event()
        self.cancelled = False  # asked to cancel before or after it started
        self.scheduled = False  # handed to the loop
        self.abandoned = False  # in flight at interpreter exit: its caller stays blocked

    def close(self) -> None:
        """Never started: drop the coroutine."""
        coro, self.coro = self.coro, None
        if coro is not None:
            coro.close()
        self.done.set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        coro, self.coro = self.coro, None
        if coro is None:
            return
        if self.cancelled:
            coro.close()
            self.done.set()
            return
        self.task = loop.create_task(coro)
        self.task.add_done_callback(lambda _: self.done.set())

    def cancel(self) -> None:
        """On the loop: cancel the call, started or not."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()
        elif self.coro is not None:
            self.coro.close()
            self.coro = None
            self.done.set()


class LoopThread:
    """An event loop run by a daemon thread of its own, started on first use."""

    def __init__(self, name: str = "shardclient-loop") -> None:
        self._name = name
        self._lock = threading.RLock()  # reentrant: stop() may run in a signal handler
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._calls: set[_Call[Any]] = set()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def abandon_waiters(self) -> None:
        """At interpreter exit: the callers of the calls in flight now (daemon threads, the
        only ones left by then) stay blocked until the exit freezes them, instead of waking
        with an error that the dying interpreter prints as a traceback."""
        with self._lock:
            for call in self._calls:
                call.abandoned = True

    @staticmethod
    def hold_if_abandoned(call: _Call[Any]) -> None:
        """Block for good when ``call`` was abandoned (see abandon_waiters)."""
        if call.abandoned:
            threading.Event().wait()

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._loop is not None and not self._stopped

    def in_loop(self) -> bool:
        """Whether the current thread is this loop's thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def _started(self) -> asyncio.AbstractEventLoop:
        if self._stopped:
            raise LoopStoppedError("the client's event loop was stopped")
        if self._loop is None:
            loop = asyncio.new_event_loop()
            running = threading.Event()
            thread = threading.Thread(
                target=self._serve, args=(loop, running), name=self._name, daemon=True
            )
            thread.start()
            running.wait()
            self._loop, self._thread = loop, thread
            if self.stopped:  # stop() ran meanwhile (a signal handler on this thread)
                self._stopped = False
                self.stop()
                raise LoopStoppedError("the client's event loop was stopped")
        return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, running: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(running.set)
        try:
            loop.run_forever()
        finally:
            try:
                _finish(loop)
            finally:
                loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread).

        An exception raised in this thread while it waits (Ctrl-C's KeyboardInterrupt)
        cancels the call; it propagates once the call's cleanup is done, or at once on a
        second one. LoopStoppedError when the loop was stopped before or during the call.
        """
        call = self.prepare(coro)
        try:
            self.start(call)
            call.done.wait()
        except BaseException:
            self.cancel(call)  # the call's cleanup; a second Ctrl-C ends this wait
            raise
        self.hold_if_abandoned(call)
        self._forget(call)
        task = call.task
        if task is None or not task.done() or task.cancelled():
            raise LoopStoppedError("the call was cancelled: the client was closed")
        return task.result()

    def prepare(self, coro: Coroutine[Any, Any, T]) -> _Call[T]:
        """A call for ``coro``, not started yet. Start it with ``start`` inside a ``try``
        whose handler calls ``cancel``: an interrupt at any point between then cancels
        whatever part of the call already exists."""
        if self.in_loop():
            coro.close()
            raise RuntimeError(
                "the sync client cannot be called from its own event loop thread (e.g. from "
                "a download progress callback): that would wait on itself"
            )
        return _Call(coro)

    def start(self, call: _Call[Any]) -> None:
        """Hand a prepared call to the loop (starting the loop thread on first use)."""
        with self._lock:
            loop = self._started()
            self._calls.add(call)
            call.scheduled = True
            try:
                loop.call_soon_threadsafe(call.start, loop)
            except RuntimeError:  # closed by a stop() that ran meanwhile
                call.scheduled = False
                self._calls.discard(call)
                raise LoopStoppedError("the client's event loop was stopped") from None

    def cancel(self, call: _Call[Any], *, wait: bool = True) -> None:
        """Cancel a call, started or not, and (unless on the loop, or ``wait`` is False)
        wait for its cleanup."""
        if not call.scheduled:
            call.close()
        else:
            self._cancel(call)
            if wait and not self.in_loop():
                try:
                    call.done.wait()
                finally:
                    self._forget(call)
                return
        self._forget(call)

    def _cancel(self, call: _Call[Any]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(call.cancel)
        except RuntimeError:  # the loop is closed: stop() ended every call already
            call.done.set()

    def _forget(self, call: _Call[Any]) -> None:
        with self._lock:
            self._calls.discard(call)

    def stop(self) -> None:
        """Cancel every call, close the loop and end its thread. Idempotent; callable from
        any thread, the loop's own and signal handlers included."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
            calls = list(self._calls)
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        if threading.current_thread() is not thread:
            thread.join(_STOP_JOIN_TIMEOUT)
            if thread.is_alive():
                logger.warning(
                    "The client's event loop did not stop within %.0f s", _STOP_JOIN_TIMEOUT
                )
        for call in calls:  # calls the loop never started end as stopped too
            call.done.set()


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """After run_forever: start what was handed over meanwhile, cancel every task and let
    their cleanup run, then close async generators."""
    loop.run_until_complete(asyncio.sleep(0))  # callbacks queued before the stop
    for _ in range(3):  # cleanup may start a few tasks of its own (stream closing)
        tasks = asyncio.all_tasks(loop)
        if not tasks:
            break
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
