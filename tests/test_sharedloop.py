"""SharedLoop: calling threads take turns running one event loop; no call is ever stranded."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from shardclient import sharedloop
from shardclient.sharedloop import CallInterruptedError, LoopStoppedError, SharedLoop

WAIT = 10.0  # generous bound on any thread join: only a deadlock reaches it


@pytest.fixture
def shared() -> Iterator[SharedLoop]:
    loop = SharedLoop()
    yield loop
    loop.stop()


class Gate:
    """A waiting point inside the loop that another thread opens."""

    def __init__(self, shared: SharedLoop) -> None:
        self.shared = shared
        self.entered = threading.Event()
        self.future: asyncio.Future[str] | None = None

    async def wait(self, value: str) -> str:
        self.future = asyncio.get_running_loop().create_future()
        self.entered.set()
        await self.future
        return value

    def open(self) -> None:
        assert self.entered.wait(WAIT)
        future = self.future
        assert future is not None
        future.get_loop().call_soon_threadsafe(future.set_result, "")


def run_in_thread(shared: SharedLoop, gate: Gate, value: str) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(shared.run(gate.wait(value)))
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_results_and_errors_reach_the_caller(shared: SharedLoop) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        raise ValueError("bad value")

    assert shared.run(answer()) == 42
    with pytest.raises(ValueError, match="bad value"):
        shared.run(fail())
    assert shared.run(answer()) == 42


def test_the_turn_passes_to_a_thread_still_waiting(shared: SharedLoop) -> None:
    first, second = Gate(shared), Gate(shared)
    a, a_outcome = run_in_thread(shared, first, "a")
    assert first.entered.wait(WAIT)  # a runs the loop now
    b, b_outcome = run_in_thread(shared, second, "b")
    assert second.entered.wait(WAIT)  # b's call started on a's turn
    first.open()  # a's call ends while b's is still pending: b must take over the loop
    a.join(WAIT)
    assert a_outcome == ["a"]
    second.open()
    b.join(WAIT)
    assert not b.is_alive() and b_outcome == ["b"]


def test_stop_ends_calls_in_flight(shared: SharedLoop) -> None:
    gate = Gate(shared)
    thread, outcome = run_in_thread(shared, gate, "never")
    assert gate.entered.wait(WAIT)
    shared.stop()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], LoopStoppedError)
    assert shared.closed
    with pytest.raises(LoopStoppedError):
        shared.run(asyncio.sleep(0))


def test_a_call_cancelled_before_its_first_step_still_ends(shared: SharedLoop) -> None:
    ran = threading.Event()

    async def never_started() -> None:
        ran.set()

    # what a Ctrl-C right after submitting does: the cancel is queued before the task runs
    call = shared._submit(never_started())
    shared._loop.call_soon_threadsafe(shared._cancel, call)
    shared._wait(call, WAIT)
    assert call.done and isinstance(call.error, asyncio.CancelledError)
    assert not ran.is_set()


def test_a_keeper_runs_the_loop_until_released(shared: SharedLoop) -> None:
    ticks: list[int] = []

    async def tick_until_stopped() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    background = shared._submit(tick_until_stopped())  # a task nobody waits for
    keeper = shared.keep_running()
    while len(ticks) < 100:  # only a running loop advances it
        threading.Event().wait(0.001)
    keeper.release()
    keeper.release()  # idempotent
    assert not any(t.name == "shardclient-stream" for t in threading.enumerate())
    shared._loop.call_soon_threadsafe(shared._cancel, background)
    shared._wait(background, WAIT)
    assert background.done


def test_stop_ends_a_call_still_starting(
    shared: SharedLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a call submitted to an idle loop starts some loop steps later; stop() in between
    # (submitted while a thread runs the loop, so without that delay) must still end it
    monkeypatch.setattr(sharedloop, "_SETTLE_STEPS", 20_000)
    keeper = shared.keep_running()
    while shared._driver is None:  # the keeper's thread runs the loop; its call is settling
        threading.Event().wait(0.001)
    assert shared._unstarted
    stopper = threading.Thread(target=shared.stop)
    stopper.start()
    stopper.join(WAIT)
    assert not stopper.is_alive() and shared.closed
    keeper.release()


def test_a_keeper_released_from_the_loop_itself(shared: SharedLoop) -> None:
    keeper = shared.keep_running()

    async def release_here() -> str:
        keeper.release()  # e.g. a chunk iterator collected on the loop: must not wait on it
        return "released"

    assert shared.run(release_here()) == "released"
    keeper.release()  # from outside: waits for the helper, which has ended
    assert not any(t.name == "shardclient-stream" for t in threading.enumerate())


def test_exit_and_interrupt_reach_only_their_own_caller(shared: SharedLoop) -> None:
    async def exits() -> None:
        raise SystemExit(3)

    async def notebook_cell() -> None:
        shared.run(exits())  # run by a helper thread: SystemExit must still come back here

    with pytest.raises(SystemExit):
        asyncio.run(notebook_cell())

    gate = Gate(shared)
    driver, outcome = run_in_thread(shared, gate, "unharmed")
    assert gate.entered.wait(WAIT)

    async def interrupted() -> None:
        raise KeyboardInterrupt

    other: list[BaseException] = []

    def call_interrupted() -> None:
        try:
            shared.run(interrupted())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            other.append(exc)

    thread = threading.Thread(target=call_interrupted)
    thread.start()
    thread.join(WAIT)
    gate.open()
    driver.join(WAIT)
    assert [type(e) for e in other] == [KeyboardInterrupt]
    assert outcome == ["unharmed"]  # the thread running the loop did not get it


def test_an_interrupt_on_the_main_thread_is_the_main_threads(shared: SharedLoop) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread")
    gate = Gate(shared)

    async def interrupted() -> None:
        # as a signal handler's exception lands in the main thread while it runs this
        raise KeyboardInterrupt

    other: list[BaseException] = []

    def call_interrupted() -> None:
        assert gate.entered.wait(WAIT)  # the main thread runs the loop now
        try:
            shared.run(interrupted())
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            other.append(exc)

    thread = threading.Thread(target=call_interrupted)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        shared.run(gate.wait("never returned"))
    thread.join(WAIT)
    assert not thread.is_alive()
    assert [type(e) for e in other] == [CallInterruptedError]  # not a second KeyboardInterrupt


def test_the_signal_line_outlives_stop_while_in_use() -> None:
    shared = SharedLoop()
    line = shared.signal_line()
    assert line is not None
    shared.stop()
    os.fstat(line)  # still open: a wake-up fd may point at it
    shared.release_signal_line()
    with pytest.raises(OSError):
        os.fstat(line)


def test_code_on_the_loop_cannot_wait_on_it(shared: SharedLoop) -> None:
    async def nested() -> str:
        inner = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="running on it"):
            shared.run(inner)
        return "refused"

    assert shared.run(nested()) == "refused"


def test_a_thread_running_another_loop_can_call(shared: SharedLoop) -> None:
    async def value() -> str:
        return "from the shared loop"

    async def notebook_cell() -> str:
        return shared.run(value())

    assert asyncio.run(notebook_cell()) == "from the shared loop"


def test_ctrl_c_cancels_the_call_and_waits_for_its_cleanup(shared: SharedLoop) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C reaches the main thread only")
    cleaned = threading.Event()
    started = threading.Event()

    async def long_call() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself needs the loop
            cleaned.set()

    def press_ctrl_c() -> None:
        assert started.wait(WAIT)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        shared.run(long_call())
    presser.join(WAIT)
    assert cleaned.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1  # the wake-up line was taken down too

    async def still_works() -> str:
        return "ok"

    assert shared.run(still_works()) == "ok"


def test_a_second_ctrl_c_stops_waiting_for_the_cleanup(shared: SharedLoop) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C reaches the main thread only")
    started = threading.Event()
    cleaning = threading.Event()

    async def slow_cleanup() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await asyncio.Event().wait()  # a cleanup that never ends by itself

    def press_twice() -> None:
        main = threading.main_thread().ident or 0
        assert started.wait(WAIT)
        signal.pthread_kill(main, signal.SIGINT)
        assert cleaning.wait(WAIT)
        signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_twice)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        shared.run(slow_cleanup())
    presser.join(WAIT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
