"""SharedLoop: one asyncio event loop that the threads calling into it take turns to run.

The sync client needs one loop for its connection, callable from any thread. A loop in a
thread of its own costs two thread hand-offs per call: measured against a grpcio server,
0.3-0.6 ms of a 1.7 ms health check on two cores. Here the calling thread runs the loop
itself while its call is in flight. Calls from other threads meanwhile are run by that
thread, and the turn passes to one of them when its own call is done, so every pending
call always has a thread running the loop. Between calls nobody runs it: the connection
only needs attention while a call is in flight (keepalive pings are per call; a stream
held open across calls gets a Keeper).

On the main thread, Ctrl-C cancels the call in flight, waits for its cleanup (a partial
download's removal, say) and then raises KeyboardInterrupt, as ``asyncio.run`` does. A
second Ctrl-C stops waiting for the cleanup (it goes on when the loop next runs); a third
raises wherever the main thread is, even inside a callback that never returns.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Coroutine
from types import FrameType
from typing import Any, Generic, TypeVar, cast

__all__ = ["CallInterruptedError", "Keeper", "LoopStoppedError", "SharedLoop"]

T = TypeVar("T")

_CLEANUP_WAIT = 30.0
"""Seconds a call interrupted by an exception in its caller may take to clean up."""


class LoopStoppedError(RuntimeError):
    """The loop was stopped before or while the call ran."""


class CallInterruptedError(RuntimeError):
    """A signal's exception (Ctrl-C, sys.exit in a handler) struck the main thread while it
    ran this call for another thread: the main thread got the exception, the call ended."""


_SETTLE_STEPS = 3
"""Loop iterations a call waits before it starts on a loop nobody was running: enough for
a connection closed meanwhile (EOF, then connection_lost; one more step under TLS) to be
noticed first, so the call reconnects instead of writing into the dead connection."""


class _Call(Generic[T]):
    """One coroutine submitted to the loop, and its outcome once ``done``."""

    __slots__ = ("coroutine", "thread", "task", "done", "result", "error", "cancel_requested",
                 "interrupted")

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self.coroutine = coroutine
        self.thread = threading.current_thread()
        self.task: asyncio.Task[T] | None = None
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None
        self.cancel_requested = False
        self.interrupted = False


class SharedLoop:
    """An event loop run by whichever thread is waiting on it; see the module docstring."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._cond = threading.Condition(threading.Lock())
        self._driver: _Call[Any] | None = None  # the call whose thread runs the loop now
        self._unstarted: set[_Call[Any]] = set()  # submitted, no task yet (settling)
        self._stopping = False
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        # Ctrl-C's wake-up line to the loop: a signal that arrives just before the loop
        # blocks in select() would otherwise be handled only when something else wakes it
        self._signal_read, self._signal_write = socket.socketpair()
        self._wakeup_users = 0  # _sigint_cancels pointing the process's wake-up fd at it
        self._line_done = False  # off the loop: closed once no wake-up fd points at it
        for end in (self._signal_read, self._signal_write):
            end.setblocking(False)
        try:
            self._loop.add_reader(self._signal_read.fileno(), self._drain_signals)
        except NotImplementedError:  # Windows' proactor loop: no wake-up line
            self._line_done = True
            self._close_signal_line()

    @property
    def closed(self) -> bool:
        """True once stop() released the loop."""
        return self._closed

    def in_loop(self) -> bool:
        """Whether the caller is code running on this loop (where waiting on it deadlocks)."""
        return _running_loop() is self._loop

    # --- in the loop -------------------------------------------------------------------

    def _close_signal_line(self) -> None:
        self._signal_read.close()
        self._signal_write.close()

    def signal_line(self) -> int | None:
        """The wake-up line's write end, taken for a while (see _sigint_cancels)."""
        with self._cond:
            if self._signal_write.fileno() == -1:
                return None
            self._wakeup_users += 1
            return self._signal_write.fileno()

    def release_signal_line(self) -> None:
        with self._cond:
            self._wakeup_users -= 1
            if self._line_done and not self._wakeup_users:
                self._close_signal_line()

    def _drain_signals(self) -> None:
        try:
            while self._signal_read.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _start(self, call: _Call[Any], settle: int) -> None:
        if settle:
            self._loop.call_soon(self._start, call, settle - 1)
            return
        with self._cond:
            self._unstarted.discard(call)
        if call.done:  # ended meanwhile (stop(), or abandoned by a second Ctrl-C)
            call.coroutine.close()
            return
        if call.cancel_requested:
            call.coroutine.close()
            call.error = asyncio.CancelledError()
            self._finish(call)
            return
        call.task = self._loop.create_task(self._guard(call))
        # on the task: one cancelled before its first step never runs _guard, yet completes
        call.task.add_done_callback(lambda task: self._task_done(call, task))

    async def _guard(self, call: _Call[T]) -> T | None:
        try:
            return await call.coroutine
        except (KeyboardInterrupt, SystemExit) as exc:
            here = threading.current_thread()
            if here is not call.thread and here is threading.main_thread():
                # a signal handler's, raised into the main thread while it ran this call:
                # the main thread gets it; the call's own thread gets an error of its own
                call.error = CallInterruptedError(f"the call was ended by {exc!r}")
                raise
            # raised by the call's own code: it belongs to the thread that made the call,
            # not to whichever thread runs the loop (where asyncio would re-raise it)
            call.error = exc
            return None

    def _task_done(self, call: _Call[T], task: asyncio.Task[T | None]) -> None:
        if call.error is None:  # else _guard kept a KeyboardInterrupt or SystemExit
            if task.cancelled():
                call.coroutine.close()  # never awaited if cancelled before its first step
                call.error = asyncio.CancelledError()
            else:
                call.error = task.exception()
                if call.error is None:
                    call.result = task.result()
        self._finish(call)

    def _finish(self, call: _Call[Any]) -> None:
        with self._cond:
            call.done = True
            if self._driver is call:
                self._loop.stop()  # the caller's own turn ends with its call
            else:
                self._cond.notify_all()

    def _cancel(self, call: _Call[Any]) -> None:
        call.cancel_requested = True
        if call.task is not None:
            call.task.cancel()

    def _abandon(self, call: _Call[Any]) -> None:
        """Release the waiting caller now; the call's cleanup goes on without it."""
        if not call.done:
            self._finish(call)

    # --- in the calling threads ----------------------------------------------------------

    def _submit(self, coroutine: Coroutine[Any, Any, T], *, stopping: bool = False) -> _Call[T]:
        call = _Call(coroutine)
        with self._cond:
            if self._closed or (self._stopping and not stopping):
                coroutine.close()
                raise LoopStoppedError("the event loop was stopped")
            if self._driver is None:  # nobody runs the loop: safe, and I/O may be pending
                self._unstarted.add(call)
                self._loop.call_soon(self._start, call, _SETTLE_STEPS)
            else:
                self._loop.call_soon_threadsafe(self._start, call, 0)
        return call

    def _wait(self, call: _Call[Any], timeout: float | None = None) -> None:
        """Until ``call`` is done: run the loop when nobody else does, else sleep."""
        deadline = None if timeout is None else self._loop.time() + timeout
        with self._cond:
            while not call.done:
                if self._closed:  # stop() finished without this call: nothing will run it
                    raise LoopStoppedError("the event loop was stopped")
                remaining = None if deadline is None else deadline - self._loop.time()
                if remaining is not None and remaining <= 0:
                    return
                if self._driver is not None:
                    self._cond.wait(remaining)
                    continue
                self._driver = call
                self._cond.release()
                timer = None
                try:
                    if remaining is not None:
                        timer = self._loop.call_later(remaining, self._loop.stop)
                    self._loop.run_forever()
                finally:
                    if timer is not None:
                        timer.cancel()
                    self._cond.acquire()
                    self._driver = None
                    self._cond.notify_all()  # the turn passes to a thread still waiting

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop from any thread and return its result.

        LoopStoppedError when the loop was (or gets) stopped. An exception raised in this
        thread while waiting cancels the call and gives it time to clean up first.
        """
        if self.in_loop():
            coroutine.close()
            raise RuntimeError("cannot wait on the event loop from code running on it")
        call: _Call[T] | None = None
        try:
            call = self._submit(coroutine)
            with _sigint_cancels(self, call):
                if _running_loop() is None:
                    self._wait(call)
                else:
                    # another event loop runs in this thread: a helper thread takes the turns
                    helper = threading.Thread(
                        target=self._wait, args=(call,), name="shardclient-loop", daemon=True
                    )
                    helper.start()
                    helper.join()
                    if not call.done:
                        raise LoopStoppedError("the thread running the call ended before it")
        except BaseException:
            if call is not None:
                with self._cond:
                    if not call.done and not self._closed:
                        self._loop.call_soon_threadsafe(self._cancel, call)
                if not call.interrupted and _running_loop() is None:
                    try:
                        self._wait(call, _CLEANUP_WAIT)
                    except LoopStoppedError:
                        pass  # the exception being raised says more
            raise
        if call.interrupted:
            raise KeyboardInterrupt
        if call.error is not None:
            if isinstance(call.error, asyncio.CancelledError) and self._stopping:
                raise LoopStoppedError("the call was cancelled: the loop was stopped")
            raise call.error
        return cast(T, call.result)  # set: the call ended without an error

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` as a background task; call on the loop only. Dropped (closed)
        once the loop is stopping; stop() cancels those still running."""
        if self._stopping:
            coroutine.close()
            return
        task = self._loop.create_task(coroutine)
        self._background.add(task)  # a task nobody references may be collected mid-run
        task.add_done_callback(self._background.discard)

    def keep_running(self) -> Keeper:
        """Run the loop in a helper thread until the returned Keeper is released.

        For a stream consumed across calls (the sync chunk iterator): between them the
        connection keeps being served (flow control, keepalive pings, the director's
        pings), as it would be by a loop thread.
        """
        return Keeper(self)

    def stop(self) -> None:
        """Cancel the calls still running, then close the loop (idempotent, any thread).

        From code running on the loop itself the loop is only marked stopping; a thread
        finishes the job once the current turn ends.
        """
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
        if self.in_loop():  # the running turn must end first: finish in another thread
            threading.Thread(target=self._shut_down, name="shardclient-loop", daemon=True).start()
        elif _running_loop() is not None:  # another loop runs here: shut down beside it
            helper = threading.Thread(target=self._shut_down, name="shardclient-loop")
            helper.start()
            helper.join()
        else:
            self._shut_down()

    def _shut_down(self) -> None:
        shutdown = self._submit(self._cancel_all(), stopping=True)
        self._wait(shutdown)
        with self._cond:
            while self._driver is not None:
                self._cond.wait()
            self._closed = True
            self._cond.notify_all()  # a waiter whose call was lost must not sleep forever
        loop = self._loop
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            with self._cond:
                if not self._line_done:
                    loop.remove_reader(self._signal_read.fileno())
                    self._line_done = True
                    if not self._wakeup_users:  # else the last one to let go closes it
                        self._close_signal_line()
            loop.close()
        if isinstance(shutdown.error, (KeyboardInterrupt, SystemExit)):
            raise shutdown.error  # a Ctrl-C during stop() is not swallowed

    async def _cancel_all(self) -> None:
        with self._cond:  # calls still settling have no task to cancel: end them here
            unstarted, self._unstarted = list(self._unstarted), set()
        for call in unstarted:
            call.coroutine.close()
            call.error = asyncio.CancelledError()
            self._finish(call)
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Keeper:
    """A helper thread that runs the loop until release(): see SharedLoop.keep_running."""

    def __init__(self, shared: SharedLoop) -> None:
        self._shared = shared
        self._released = False  # read and written on the loop only
        self._gate: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._hold, name="shardclient-stream", daemon=True)
        self._thread.start()

    def _hold(self) -> None:
        try:
            self._shared.run(self._idle())
        except LoopStoppedError:
            pass

    async def _idle(self) -> None:
        if not self._released:
            self._gate = asyncio.get_running_loop().create_future()
            await self._gate

    def _open(self) -> None:
        self._released = True
        if self._gate is not None and not self._gate.done():
            self._gate.set_result(None)

    def release(self) -> None:
        """End the helper's turn and wait for its thread to finish (idempotent).

        On the loop itself (a generator collected there) it only ends the turn: waiting
        for the helper from inside the loop could never finish.
        """
        if self._shared.in_loop() or threading.current_thread() is self._thread:
            self._open()
            return
        try:
            self._shared._loop.call_soon_threadsafe(self._open)
        except RuntimeError:  # the loop was closed: the helper's call has ended already
            pass
        self._thread.join()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _sigint_cancels:  # noqa: N801 - used like a function
    """While a main-thread caller waits: Ctrl-C cancels its call instead of raising mid-loop.

    Only where SIGINT has Python's default handler; restored unless someone replaced it.
    """

    __slots__ = ("shared", "call", "previous", "presses", "wakeup")

    def __init__(self, shared: SharedLoop, call: _Call[Any]) -> None:
        self.shared = shared
        self.call = call
        self.previous: object = None
        self.presses = 0
        self.wakeup = -1

    def __enter__(self) -> None:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.previous = signal.signal(signal.SIGINT, self._handle)
            ours = self.shared.signal_line()
            if ours is None:
                return
            theirs = signal.set_wakeup_fd(ours, warn_on_full_buffer=False)
            if theirs == -1:
                self.wakeup = ours
            else:  # someone else's wake-up fd: leave it in place
                signal.set_wakeup_fd(theirs)
                self.shared.release_signal_line()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.presses += 1
        self.call.interrupted = True  # run() raises KeyboardInterrupt once the call ended
        if self.presses > 2:
            raise KeyboardInterrupt
        if not self.call.done:
            # on the loop, never raised into whatever code (maybe h2's) the main thread runs
            action = self.shared._cancel if self.presses == 1 else self.shared._abandon
            self.shared._loop.call_soon_threadsafe(action, self.call)

    def __exit__(self, *exc_info: object) -> None:
        if self.previous is None:
            return
        if self.wakeup != -1:
            current = signal.set_wakeup_fd(-1)
            if current != self.wakeup:  # replaced meanwhile: put that one back
                signal.set_wakeup_fd(current)
            self.shared.release_signal_line()
        if signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, signal.default_int_handler)
