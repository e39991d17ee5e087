"""The sync client's event-loop thread: Ctrl-C during any blocking call, close() from a
signal handler, and no process-wide state touched."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest
from anyio.from_thread import start_blocking_portal
from grpclib.server import Server

from shardclient import ClientClosedError, ShardDirectorClient
from shardclient._client.loop import LoopStoppedError, LoopThread
from shardclient.messages import (
    DirectorBase,
    ExperimentData,
    GetExperimentDataRequest,
    SetExperimentFailedRequest,
    SetExperimentFailedResponse,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
    UpdateShardInfoRequest,
    UpdateShardInfoResponse,
    WaitExperimentRequest,
    WaitExperimentResponse,
)
from shardclient.testing import CHUNK_SIZE, LocalDirector
from tests.helpers.director import Descriptor

PACKAGE = Path(__file__).resolve().parents[1] / "shardclient"


class Stalling(DirectorBase):
    """A director that accepts every call and never answers; it notes arrivals and
    cancellations (a call the client gave up on is reset, which cancels its handler)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.cancelled = threading.Event()

    async def _stall(self) -> None:
        self.arrived.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def update_shard_info(self, request: UpdateShardInfoRequest) -> UpdateShardInfoResponse:
        await self._stall()
        raise AssertionError("unreachable")

    async def update_envoy_status(
        self, request: UpdateEnvoyStatusRequest
    ) -> UpdateEnvoyStatusResponse:
        await self._stall()
        raise AssertionError("unreachable")

    async def wait_experiment(self, request: WaitExperimentRequest) -> WaitExperimentResponse:
        await self._stall()
        raise AssertionError("unreachable")

    async def get_experiment_data(
        self, request: GetExperimentDataRequest
    ) -> AsyncIterator[ExperimentData]:
        await self._stall()
        yield ExperimentData()

    async def set_experiment_failed(
        self, request: SetExperimentFailedRequest
    ) -> SetExperimentFailedResponse:
        await self._stall()
        raise AssertionError("unreachable")


@pytest.fixture
def stalling() -> Iterator[tuple[Stalling, int]]:
    service = Stalling()
    with start_blocking_portal() as portal:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]

        async def serve() -> Server:
            server = Server([service])  # on the portal's loop: grpclib binds to it
            await server.start(sock=sock)
            return server

        server = portal.call(serve)
        yield service, port

        async def close() -> None:  # on the server's loop, like everything grpclib does
            server.close()
            await server.wait_closed()

        portal.call(close)


def _signal_main_when(event: threading.Event, signum: int) -> threading.Thread:
    """Send ``signum`` to the main thread once ``event`` is set (the call is in flight)."""
    main = threading.main_thread().ident or 0
    seen: list[object] = []

    def send() -> None:
        if event.wait(30):
            seen.append(signal.getsignal(signal.SIGINT))  # as the call runs
            signal.pthread_kill(main, signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.seen = seen  # type: ignore[attr-defined]  # read back by the test
    thread.start()
    return thread


BLOCKING_CALLS: dict[str, Callable[[ShardDirectorClient, Path], object]] = {
    "report_shard_info": lambda c, _: c.report_shard_info(Descriptor(), []),
    "send_health_check": lambda c, _: c.send_health_check(
        envoy_name="s1", is_experiment_running=False, raise_on_failure=True
    ),
    "wait_experiment": lambda c, _: c.wait_experiment(),
    "get_experiment_data": lambda c, _: next(iter(c.get_experiment_data("e"))),
    "download_experiment": lambda c, folder: c.download_experiment("e", folder),
    "set_experiment_failed": lambda c, _: c.set_experiment_failed("e", 1, "x"),
}


@pytest.mark.parametrize("call", BLOCKING_CALLS)
def test_ctrl_c_cancels_each_blocking_call(
    stalling: tuple[Stalling, int], call: str, tmp_path: Path
) -> None:
    service, port = stalling
    handler_before = signal.getsignal(signal.SIGINT)
    with ShardDirectorClient(director_host="127.0.0.1", director_port=port, shard_name="s1",
                             tls=False, timeout=60) as client:  # fmt: skip
        sender = _signal_main_when(service.arrived, signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            BLOCKING_CALLS[call](client, tmp_path)
        sender.join(10)
        assert service.cancelled.wait(30)  # the call was cancelled, its stream reset
        assert list(tmp_path.iterdir()) == []  # a download left nothing behind
    assert sender.seen == [handler_before]  # type: ignore[attr-defined]  # untouched during the call
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert signal.set_wakeup_fd(-1) == -1  # nobody set a wake-up fd


def test_close_from_a_signal_handler_ends_the_blocked_call(
    stalling: tuple[Stalling, int],
) -> None:
    service, port = stalling
    client = ShardDirectorClient(director_host="127.0.0.1", director_port=port,
                                 shard_name="s1", tls=False)  # fmt: skip

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        client.close()  # the application's own handler, run while the call blocks

    previous = signal.signal(signal.SIGUSR1, on_usr1)
    try:
        _signal_main_when(service.arrived, signal.SIGUSR1)
        with pytest.raises(ClientClosedError):
            client.wait_experiment()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not any(t.name == "shardclient-s1" for t in threading.enumerate())
    with pytest.raises(ClientClosedError):
        client.wait_experiment()


def test_no_module_touches_signal_handlers_or_the_wakeup_fd() -> None:
    pattern = re.compile(r"signal\.(signal|set_wakeup_fd|siginterrupt)\(|add_signal_handler")
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "cli.py" and pattern.search(path.read_text())
    ]
    assert offenders == []  # the CLI owns its process; the library owns nothing of it


def test_a_second_ctrl_c_stops_waiting_for_the_cleanup() -> None:
    loop = LoopThread("shardclient-test")
    started = threading.Event()
    cleaning = threading.Event()

    async def stubborn() -> None:
        try:
            started.set()
            await asyncio.sleep(60)
        finally:
            cleaning.set()
            await asyncio.sleep(60)  # a cleanup that takes its time

    main = threading.main_thread().ident or 0

    def press_twice() -> None:
        if started.wait(10):
            signal.pthread_kill(main, signal.SIGINT)
        if cleaning.wait(10):
            signal.pthread_kill(main, signal.SIGINT)

    presser = threading.Thread(target=press_twice, daemon=True)
    presser.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run(stubborn())
        assert cleaning.is_set()
    finally:
        loop.stop()
    presser.join(10)


def test_results_errors_and_stopping() -> None:
    loop = LoopThread("shardclient-test")

    async def answer() -> int:
        return 42

    async def fail() -> None:
        raise ValueError("boom")

    assert loop.run(answer()) == 42
    with pytest.raises(ValueError, match="boom"):
        loop.run(fail())
    waiting = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        waiting.set()
        await asyncio.Event().wait()

    def call() -> None:
        try:
            loop.run(forever())
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    waiting.wait(10)
    loop.stop()
    caller.join(10)
    assert [type(e) for e in outcome] == [LoopStoppedError]
    with pytest.raises(LoopStoppedError):
        loop.run(answer())
    loop.stop()  # idempotent


def test_a_thread_running_its_own_loop_can_call(stalling: tuple[Stalling, int]) -> None:
    loop = LoopThread("shardclient-test")

    async def answer() -> str:
        return "ok"

    async def notebook_cell() -> str:
        return loop.run(answer())  # blocks this loop, as any sync call would; no deadlock

    try:
        assert asyncio.run(notebook_cell()) == "ok"
    finally:
        loop.stop()


_EXIT_WITH_A_CALL_IN_FLIGHT = """
import sys, threading, time
from shardclient import ShardDirectorClient
from tests.helpers.director import Descriptor
client = ShardDirectorClient(director_host="127.0.0.1", director_port=int(sys.argv[1]),
                             shard_name="s1", tls=False)
client.report_shard_info(Descriptor(), [])
started = threading.Event()
def blocked():
    started.set()
    if sys.argv[2] == "wait":
        client.wait_experiment()
    else:
        while True:  # a download still in flight at exit
            for _ in client.get_experiment_data("big"):
                pass
threading.Thread(target=blocked, daemon=True).start()
started.wait()
time.sleep(0.2)  # let the call reach the director; what is checked is the exit, not timing
print("exiting", flush=True)
"""


@pytest.mark.parametrize("call", ["wait", "download"])
def test_exit_with_a_call_in_flight_in_a_daemon_thread_is_quiet(
    director: LocalDirector, call: str
) -> None:
    """The interpreter exits with the client never closed and a daemon thread blocked in a
    call: the exit closes the connection, and the daemon thread is not woken with an error
    the dying interpreter would print as a traceback."""
    director.submit_experiment("big", b"x" * (8 * CHUNK_SIZE), ["s1"])
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _EXIT_WITH_A_CALL_IN_FLIGHT, str(director.port), call],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exiting\n"
    assert done.stderr == ""
