"""The sync ShardDirectorClient against a LocalDirector on loopback."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import itertools
import logging
import operator
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from grpclib.const import Status

from shardclient import (
    ClientClosedError,
    CudaDeviceInfo,
    DirectorRPCError,
    DirectorUnavailableError,
    RetryPolicy,
    ShardDirectorClient,
    ShardNotFoundError,
)
from shardclient.messages import DirectorStub
from shardclient.testing import CHUNK_SIZE, LocalDirector
from tests.helpers.director import PERIOD, Descriptor


@pytest.fixture
def client(director: LocalDirector) -> Iterator[ShardDirectorClient]:
    with ShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1", tls=False
    ) as sync_client:
        yield sync_client


def test_signature_matches_openfl() -> None:
    params = inspect.signature(ShardDirectorClient.__init__).parameters
    openfl_names = [
        "director_host",
        "director_port",
        "shard_name",
        "tls",
        "root_certificate",
        "private_key",
        "certificate",
    ]
    for name in openfl_names:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["tls"].default is True
    health = inspect.signature(ShardDirectorClient.send_health_check).parameters
    assert all(
        health[n].kind is inspect.Parameter.KEYWORD_ONLY
        for n in ("envoy_name", "is_experiment_running", "cuda_devices_info")
    )
    failed = inspect.signature(ShardDirectorClient.set_experiment_failed).parameters
    assert failed["error_code"].default == 1 and failed["error_description"].default == ""


def test_report_shard_info_accepted(client: ShardDirectorClient, director: LocalDirector) -> None:
    assert client.report_shard_info(Descriptor(), [0, 1]) is True
    info = director.shards["s1"]
    assert info.sample_shape == ["28", "28"]
    assert info.target_shape == ["1"]
    assert info.shard_description == "test shard"
    assert [d.index for d in info.node_info.cuda_devices] == [0, 1]
    assert client.shard_name == "s1"


def test_report_shard_info_refused(client: ShardDirectorClient, director: LocalDirector) -> None:
    assert client.report_shard_info(Descriptor(sample_shape=[32, 32]), []) is False
    assert director.shards == {}


def test_health_check_returns_period_and_delivers_readings(
    client: ShardDirectorClient, director: LocalDirector
) -> None:
    client.report_shard_info(Descriptor(), [0, 1])
    readings: list[CudaDeviceInfo | dict[str, object]] = [
        {
            "index": 0,
            "memory_total": 100,
            "memory_utilized": 5,
            "device_utilization": "3%",
            "cuda_driver_version": "580.159.04",
            "cuda_version": "13.0",
            "name": "NVIDIA H200",
        },
        CudaDeviceInfo(index=1, memory_total=200, name="NVIDIA H200"),
    ]
    period = client.send_health_check(
        envoy_name="s1", is_experiment_running=True, cuda_devices_info=readings
    )
    assert period == PERIOD and isinstance(period, int)
    status = director.statuses["s1"]
    assert status.is_experiment_running is True
    assert [d.memory_total for d in status.cuda_devices] == [100, 200]
    assert status.cuda_devices[0].device_utilization == "3%"


def test_health_check_from_unknown_shard(client: ShardDirectorClient) -> None:
    with pytest.raises(ShardNotFoundError, match="s1") as caught:
        client.send_health_check(envoy_name="s1", is_experiment_running=False)
    assert caught.value.shard_name == "s1"
    assert caught.value.details == "Unknown shard s1"


class _RaisingMapping(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise RuntimeError("no")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no")

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("readings", "message"),
    [
        ([{"index": 0, "memory": 1}], r"cuda_devices_info\[0\]: unknown key 'memory'"),
        (
            [{"index": "0"}],
            r"^cuda_devices_info\[0\].index must be an int in 0..18446744073709551615, got '0' \(str\)$",
        ),
        (
            [{"index": -1}],
            r"^cuda_devices_info\[0\].index must be an int in 0..18446744073709551615, got -1",
        ),
        (
            [CudaDeviceInfo(index=0, name=5)],  # type: ignore[arg-type]  # wrong on purpose
            r"^cuda_devices_info\[0\].name must be a str, got 5 \(int\)$",
        ),
        (
            [{"index": 0, "name": "gpu\ud800"}],
            r"^cuda_devices_info\[0\].name is not valid Unicode text",
        ),
        (itertools.count(), r"^cuda_devices_info: more than 1024 CUDA device readings$"),
        (
            map(operator.truediv, [1], [0]),
            r"^cuda_devices_info: expected a sequence of CUDA device readings, got .*\(iterating it raised ZeroDivisionError",
        ),
        ([_RaisingMapping()], r"^cuda_devices_info\[0\]: cannot read it, got "),
        ([{0: 1}], r"^cuda_devices_info\[0\]: unknown key 0 \(int\); known keys: index, "),
        ([7], r"cuda_devices_info\[0\] must be a CudaDeviceInfo or a dict"),
        ({"index": 0}, r"^cuda_devices_info: expected a sequence of CUDA device readings, got"),
    ],
)
def test_bad_health_readings_are_rejected_before_sending(
    client: ShardDirectorClient, director: LocalDirector, readings: object, message: str
) -> None:
    client.report_shard_info(Descriptor(), [0])
    with pytest.raises(ValueError, match=message):
        client.send_health_check(
            envoy_name="s1",
            is_experiment_running=False,
            cuda_devices_info=readings,  # type: ignore[arg-type]  # wrong on purpose
        )
    assert director.statuses == {}


def test_experiment_cycle(client: ShardDirectorClient, director: LocalDirector) -> None:
    archive = bytes(range(256)) * (3 * CHUNK_SIZE // 256) + b"tail"
    director.submit_experiment("exp-1", archive, ["s1", "other"])
    assert client.wait_experiment() == "exp-1"
    chunks = list(client.get_experiment_data("exp-1"))
    assert [c.size for c in chunks] == [CHUNK_SIZE] * 3 + [4]
    assert all(c.size == len(c.npbytes) for c in chunks)
    received = b"".join(c.npbytes for c in chunks)
    assert hashlib.sha256(received).digest() == hashlib.sha256(archive).digest()
    client.set_experiment_failed("exp-1", error_code=3, error_description="no GPU memory")
    (failure,) = director.failures
    assert (failure.experiment_name, failure.collaborator_name) == ("exp-1", "s1")
    assert (failure.error_code, failure.error_description) == (3, "no GPU memory")


def test_unknown_experiment_data(client: ShardDirectorClient) -> None:
    with pytest.raises(DirectorRPCError) as caught:
        list(client.get_experiment_data("nope"))
    assert caught.value.status is Status.NOT_FOUND
    assert "nope" in caught.value.details


def test_abandoned_stream_leaves_client_usable(
    client: ShardDirectorClient, director: LocalDirector
) -> None:
    director.submit_experiment("big", b"x" * (4 * CHUNK_SIZE), ["s1"])
    stream = client.get_experiment_data("big")
    assert next(stream).size == CHUNK_SIZE
    stream.close()  # type: ignore[attr-defined]  # a generator underneath
    client.report_shard_info(Descriptor(), [])
    assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == PERIOD


def test_concurrent_calls_share_one_connection(
    client: ShardDirectorClient, director: LocalDirector
) -> None:
    client.report_shard_info(Descriptor(), [])
    waited: list[str] = []
    waiter = threading.Thread(target=lambda: waited.append(client.wait_experiment()))
    waiter.start()
    periods: list[int] = []
    lock = threading.Lock()

    def check() -> None:
        for _ in range(10):
            period = client.send_health_check(envoy_name="s1", is_experiment_running=False)
            with lock:
                periods.append(period)

    checkers = [threading.Thread(target=check) for _ in range(6)]
    for thread in checkers:
        thread.start()
    for thread in checkers:
        thread.join(30)
    assert periods == [PERIOD] * 60
    assert waiter.is_alive()  # still long-polling while the health checks went through
    director.submit_experiment("exp-2", b"data", ["s1"])
    waiter.join(30)
    assert waited == ["exp-2"]


def test_close_releases_a_blocked_waiter(director: LocalDirector, no_thread_leak: None) -> None:
    client = ShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1", tls=False
    )
    client.report_shard_info(Descriptor(), [])
    outcome: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            client.wait_experiment()
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    started.wait(10)
    # the waiter is in flight once the director sees the call; a health check round trip
    # afterwards proves the connection carries both
    client.send_health_check(envoy_name="s1", is_experiment_running=False)
    client.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ClientClosedError)
    with pytest.raises(ClientClosedError):
        client.send_health_check(envoy_name="s1", is_experiment_running=False)
    client.close()  # idempotent


def test_works_inside_a_running_event_loop(director: LocalDirector) -> None:
    async def notebook_cell() -> bool:
        with ShardDirectorClient(
            director_host=director.host, director_port=director.port, shard_name="s1", tls=False
        ) as inner:
            return inner.report_shard_info(Descriptor(), [])

    assert asyncio.run(notebook_cell()) is True


def test_stub_is_the_generated_stub(client: ShardDirectorClient) -> None:
    assert isinstance(client.stub, DirectorStub)


def test_unreachable_director_names_the_address(
    free_port: int, caplog: pytest.LogCaptureFixture, no_thread_leak: None
) -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.01, jitter=0)
    with (
        ShardDirectorClient(
            director_host="127.0.0.1",
            director_port=free_port,
            shard_name="s1",
            tls=False,
            retry=policy,
        ) as client,
        caplog.at_level(logging.WARNING, logger="shardclient.retry"),
    ):
        with pytest.raises(DirectorUnavailableError, match=f"127.0.0.1:{free_port}") as caught:
            client.send_health_check(
                envoy_name="s1", is_experiment_running=False, raise_on_failure=True
            )
    assert caught.value.address == f"127.0.0.1:{free_port}"
    retries = [r for r in caplog.records if "next in" in r.getMessage()]
    assert len(retries) == 2  # three attempts, a warning before each retry


def test_health_checks_live_through_an_outage_as_openfl_envoy_loops_expect(
    director: LocalDirector, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenFL's Envoy sleeps whatever send_health_check returns and catches only
    ShardNotFoundError: an outage must give it a delay, and the director's return a
    ShardNotFoundError to re-register on."""
    policy = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01, jitter=0)
    with (
        ShardDirectorClient(
            director_host=director.host,
            director_port=director.port,
            shard_name="s1",
            tls=False,
            retry=policy,
        ) as client,
        caplog.at_level(logging.WARNING, logger="shardclient"),
    ):
        client.report_shard_info(Descriptor(), [])
        assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == PERIOD
        director.stop_sync()
        for _ in range(3):  # an outage: the period to try again, one warning for all three
            assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == PERIOD
        director.forget_shards()
        director.start_sync()
        with pytest.raises(ShardNotFoundError):
            client.send_health_check(envoy_name="s1", is_experiment_running=False)
        assert client.report_shard_info(Descriptor(), [])
        assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == PERIOD
    outage = [
        r
        for r in caplog.records
        if "failed" in r.getMessage() and "once per outage" in r.getMessage()
    ]
    assert len(outage) == 1
    assert any("again" in r.getMessage() and "reach" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shard_name": ""}, "shard_name"),
        ({"director_port": 0}, "director_port"),
        ({"director_port": "50051"}, "director_port"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"keepalive_time": float("nan")}, "keepalive_time"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"retry": 3}, "retry"),
    ],
)
def test_bad_options_fail_at_construction(
    kwargs: dict[str, object], message: str, no_thread_leak: None
) -> None:
    arguments: dict[str, object] = {
        "director_host": "127.0.0.1",
        "director_port": 50051,
        "shard_name": "s1",
        "tls": False,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ShardDirectorClient(**arguments)  # type: ignore[arg-type]  # wrong on purpose


def test_calls_from_the_progress_callback_fail_instead_of_deadlocking(
    client: ShardDirectorClient, director: LocalDirector, tmp_path: Path
) -> None:
    director.submit_experiment("exp", b"data", ["s1"])
    raised: list[BaseException] = []

    def progress(received: int, total: int | None) -> None:
        try:
            client.send_health_check(envoy_name="s1", is_experiment_running=True)
        except RuntimeError as exc:
            raised.append(exc)

    client.download_experiment("exp", tmp_path, progress=progress)
    assert len(raised) == 1 and "own event loop" in str(raised[0])


def test_a_client_never_closed_closes_its_connection_when_collected(
    director: LocalDirector, no_thread_leak: None
) -> None:
    client = ShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1", tls=False
    )
    client.report_shard_info(Descriptor(), [])
    aio = client.aio
    assert not aio.closed
    del client
    gc.collect()
    assert aio.closed


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("shardclient-")]


def test_an_open_chunk_stream_does_not_hold_up_other_calls(
    client: ShardDirectorClient, director: LocalDirector
) -> None:
    director.submit_experiment("exp", b"q" * (5 * CHUNK_SIZE), ["s1"])
    chunks = client.get_experiment_data("exp")
    first = next(chunks)
    assert len(first.npbytes) == CHUNK_SIZE
    # the unread rest fills the read-ahead and the stream's own HTTP/2 window, not the
    # connection's: other calls still get through
    client.report_shard_info(Descriptor(), [])
    rest = list(chunks)
    assert [len(c.npbytes) for c in rest] == [CHUNK_SIZE] * 4
    early = client.get_experiment_data("exp")
    next(early)
    del early  # abandoned half-way: its stream is closed
    assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == PERIOD


@pytest.mark.parametrize("held", [4, 8])
def test_many_open_chunk_streams_do_not_starve_health_checks(
    director: LocalDirector, held: int
) -> None:
    """Each held stream fills its own 4 MiB window; the connection's is far larger, so the
    envoy's health checks still get through (with a 16 MiB one, eight held streams hung them;
    four still fit)."""
    director.submit_experiment("exp", b"q" * (5 * CHUNK_SIZE), ["s1"])
    with ShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1", tls=False,
        timeout=5, retry=None,
    ) as client:  # fmt: skip
        client.report_shard_info(Descriptor(), [])
        streams = [client.get_experiment_data("exp") for _ in range(held)]
        for stream in streams:
            assert len(next(stream).npbytes) == CHUNK_SIZE
        assert client.send_health_check(envoy_name="s1", is_experiment_running=False) == PERIOD
        for stream in streams:
            assert sum(len(chunk.npbytes) for chunk in stream) == 4 * CHUNK_SIZE


def test_one_loop_thread_per_client_started_on_first_use_and_ended_by_close(
    director: LocalDirector,
) -> None:
    before = _client_threads()
    client = ShardDirectorClient(
        director_host=director.host, director_port=director.port, shard_name="s1", tls=False
    )
    assert _client_threads() == before  # nothing started by the constructor
    client.report_shard_info(Descriptor(), [])
    director.submit_experiment("exp", b"z" * (3 * CHUNK_SIZE), ["s1"])
    for _ in client.get_experiment_data("exp"):
        assert len(_client_threads()) == len(before) + 1  # no thread per chunk or per call
    client.close()
    assert _client_threads() == before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.send_health_check(envoy_name=None, is_experiment_running=False),
            "envoy_name must be a non-empty str",
        ),
        (lambda c: c.set_experiment_failed("", 1), "experiment_name must be a non-empty str"),
        (lambda c: c.set_experiment_failed("e", 1, b"bytes"), "error_description must be a str"),
        (lambda c: list(c.get_experiment_data(3)), "experiment_name must be a non-empty str"),
    ],
)
def test_bad_arguments_are_named(
    client: ShardDirectorClient,
    director: LocalDirector,
    call: Callable[[ShardDirectorClient], object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        call(client)
    assert director.failures == []


def test_shard_not_found_is_caught_by_openfl_s_except_clause(
    client: ShardDirectorClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where OpenFL's exceptions module is loaded (always, where OpenFL's Envoy runs), the
    error is also an instance of OpenFL's ShardNotFoundError, which its health thread
    catches to re-register."""
    openfl_exceptions = types.ModuleType("openfl.transport.grpc.exceptions")

    class OpenflShardNotFoundError(Exception):
        pass

    openfl_exceptions.ShardNotFoundError = OpenflShardNotFoundError  # type: ignore[attr-defined]  # a stand-in module
    with pytest.raises(ShardNotFoundError) as plain:
        client.send_health_check(envoy_name="s1", is_experiment_running=False)
    assert not isinstance(plain.value, OpenflShardNotFoundError)
    monkeypatch.setitem(sys.modules, "openfl.transport.grpc.exceptions", openfl_exceptions)
    with pytest.raises(OpenflShardNotFoundError) as caught:
        client.send_health_check(envoy_name="s1", is_experiment_running=False)
    assert isinstance(caught.value, ShardNotFoundError)
    assert caught.value.shard_name == "s1"
    assert type(caught.value).__name__ == "ShardNotFoundError"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.send_health_check(envoy_name="s\udc80", is_experiment_running=False),
            "envoy_name is not valid Unicode",
        ),
        (lambda c: c.set_experiment_failed("e\udc80", 1), "experiment_name is not valid Unicode"),
        (lambda c: c.set_experiment_failed("e", 1, "\ud800"), "error_description is not valid"),
        (lambda c: list(c.get_experiment_data("\udcff")), "experiment_name is not valid Unicode"),
        (lambda c: c.download_experiment("\udcff", "."), "experiment_name is not valid Unicode"),
        (
            lambda c: c.report_shard_info(Descriptor(dataset_description="\udc80"), []),
            "dataset_description is not valid Unicode",
        ),
    ],
)
def test_lone_surrogates_are_refused_naming_the_argument(
    client: ShardDirectorClient,
    director: LocalDirector,
    call: Callable[[ShardDirectorClient], object],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        call(client)
    assert director.failures == [] and director.shards == {}
