"""AsyncShardDirectorClient: every Director RPC an envoy makes, over one grpclib channel.

All protocol logic lives here: deadlines, retries, and the mapping from grpclib's
exceptions to shardclient's. The sync ShardDirectorClient only forwards to this class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, SupportsIndex, TypeVar

import anyio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from shardclient._compat import (
    connection_broken,
    director_spoke,
    early_tls_close,
    framing_error,
    goaway_received,
    open_channel,
    unparseable_reply,
    went_silent,
)
from shardclient._descriptor import ShardDescriptor, shard_info_from_descriptor
from shardclient._download import (
    DownloadedExperiment,
    ProgressCallback,
    RawChunk,
    archive_filename,
    save_archive,
)
from shardclient._errors import (
    ClientClosedError,
    DirectorProtocolError,
    DirectorUnavailableError,
    ShardClientError,
    describe_value,
    tls_closed_early,
    translate_error,
)
from shardclient._options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
    ClientOptions,
)
from shardclient._retry import RetryPolicy, call_with_retry, is_retryable
from shardclient._stream import DataStream, recv_chunk, recv_raw_chunk
from shardclient._tls import PathLike, client_ssl_context
from shardclient._wire import check_message, check_outgoing, unencodable
from shardclient.messages import (
    CudaDeviceInfo,
    DirectorStub,
    ExperimentData,
    GetExperimentDataRequest,
    SetExperimentFailedRequest,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
    UpdateShardInfoRequest,
    WaitExperimentRequest,
    WaitExperimentResponse,
)

__all__ = ["AsyncShardDirectorClient", "CudaDevicesInfo"]

logger = logging.getLogger("shardclient")

T = TypeVar("T")
M = TypeVar("M")

CudaDevicesInfo = Iterable[CudaDeviceInfo | Mapping[str, object]]
"""Health-check GPU readings: CudaDeviceInfo messages, or OpenFL's dicts of the same fields."""

_CONNECTION_WINDOW = 2**31 - 1
"""HTTP/2 connection window: HTTP/2's largest. Memory stays bounded by each stream's own
4 MiB window (grpclib's default); a smaller connection window only lets a few held streams
stop every other call on the connection."""

_GET_EXPERIMENT_DATA = "/openfl.director.Director/GetExperimentData"
_CUDA_FIELDS = (
    "index", "memory_total", "memory_utilized", "device_utilization",
    "cuda_driver_version", "cuda_version", "name",
)  # fmt: skip
_MAX_CUDA_DEVICES = 1024  # an endless iterable of readings is refused, not held


def cuda_device_messages(items: CudaDevicesInfo | None) -> list[CudaDeviceInfo]:
    """Convert health-check GPU readings to messages, naming the entry and key at fault."""
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise ValueError(
            f"cuda_devices_info must be a list of CudaDeviceInfo or dicts, got {describe_value(items)}"
        )
    try:
        readings = list(itertools.islice(items, _MAX_CUDA_DEVICES + 1))
    except Exception as exc:  # noqa: BLE001 - whatever a hostile iterable raises names the argument
        raise ValueError(f"cuda_devices_info: iterating it raised {describe_value(exc)}") from None
    if len(readings) > _MAX_CUDA_DEVICES:
        raise ValueError(f"cuda_devices_info: more than {_MAX_CUDA_DEVICES} devices")
    messages: list[CudaDeviceInfo] = []
    for position, item in enumerate(readings):
        where = f"cuda_devices_info[{position}]"
        if isinstance(item, CudaDeviceInfo):
            check_outgoing(item, where)
            messages.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ValueError(
                f"{where} must be a CudaDeviceInfo or a dict, got {describe_value(item)}"
            )
        try:
            entries = list(itertools.islice(item.items(), len(_CUDA_FIELDS) + 1))
        except Exception:  # noqa: BLE001 - a hostile mapping names the entry
            raise ValueError(f"{where}: cannot read it, got {describe_value(item)}") from None
        message = CudaDeviceInfo()
        for key, value in entries:
            if not isinstance(key, str) or key not in _CUDA_FIELDS:
                raise ValueError(
                    f"{where}: unknown key {describe_value(key)}; known keys: {', '.join(_CUDA_FIELDS)}"
                )
            setattr(message, key, value)
        check_outgoing(message, where)
        messages.append(message)
    return messages


def _text(name: str, value: object, *, empty: bool = False) -> str:
    """``value`` if it is a str (non-empty unless ``empty``) that UTF-8 can encode (no lone
    surrogates: it goes on the wire), else ValueError naming it."""
    if not isinstance(value, str) or (not empty and not value):
        kind = "a str" if empty else "a non-empty str"
        raise ValueError(f"{name} must be {kind}, got {value!r:.200}")
    problem = unencodable(value)
    if problem is not None:
        raise ValueError(f"{name} is not valid Unicode text ({problem}): {value!r:.200}")
    return value


class _ReplyCodec(ProtoCodec):
    """grpclib's protobuf codec (over betterproto's messages), except that a reply that does
    not decode is a grpclib ProtocolError, which maps to DirectorProtocolError."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            check_message(data, message_type)  # betterproto alone accepts wrong wire types
            return super().decode(data, message_type)
        except Exception as exc:  # betterproto raises ValueError, EOFError, ... on bad input
            raise ProtocolError(f"malformed {message_type.__name__} message: {exc}") from exc


class _LongPollDropped(Exception):
    """A long poll that had been waiting lost its connection: poll again, budget reset."""

    def __init__(self, cause: Exception, waited: float) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.waited = waited


class AsyncShardDirectorClient:
    """The envoy's asyncio client for OpenFL's director, one instance per shard.

    Connects lazily on the first call, reconnects by itself after the director restarts,
    and must be closed (``await client.close()`` or ``async with``) on the loop it ran on.
    """

    def __init__(
        self,
        *,
        director_host: str,
        director_port: int,
        shard_name: str,
        tls: bool = True,
        root_certificate: PathLike | None = None,
        private_key: PathLike | None = None,
        certificate: PathLike | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        _text("shard_name", shard_name)
        _text("director_host", director_host)
        if (
            isinstance(director_port, bool)
            or not isinstance(director_port, int)
            or not 0 < director_port < 65536
        ):
            raise ValueError(f"director_port must be an int in 1..65535, got {director_port!r}")
        self.shard_name = shard_name
        self.director_host = director_host
        self.director_port = director_port
        self.options: ClientOptions = ClientOptions(
            timeout=timeout,
            keepalive_time=keepalive_time,
            keepalive_timeout=keepalive_timeout,
            retry=retry,
            max_message_size=max_message_size,
        )
        self._ssl = (
            client_ssl_context(
                root_certificate=root_certificate,
                private_key=private_key,
                certificate=certificate,
            )
            if tls
            else None
        )
        self._channel: Channel | None = None
        self._stub: DirectorStub | None = None
        self._closed = False
        self._answered = False  # whether any call ever got an answer
        self._health_period: int | None = None  # the last health period the director named

    @property
    def address(self) -> str:
        """The director's ``host:port``, as error messages name it."""
        return f"{self.director_host}:{self.director_port}"

    def _open_channel(self) -> Channel:
        """The channel, created on first use so that it binds to the running loop."""
        if self._closed:
            raise ClientClosedError(f"client for {self.address} is closed")
        if self._channel is None:
            keepalive = self.options.keepalive_time
            # grpclib by default sends at most 2 pings between data frames and none within
            # 5 minutes of the last: a long poll would go unwatched. Ping every
            # keepalive_time while a call is in flight instead. (gRPC C-core servers may
            # answer such pings with GOAWAY too_many_pings; wait_experiment re-polls then.)
            config = Configuration(
                # a stream nobody reads (a chunk iterator held by its caller) fills only its
                # own 4 MiB window: other calls still get through, however many are held
                http2_connection_window_size=_CONNECTION_WINDOW,
                _keepalive_time=keepalive,
                _keepalive_timeout=self.options.keepalive_timeout,
                _keepalive_permit_without_calls=False,
                _http2_max_pings_without_data=0,
                _http2_min_sent_ping_interval_without_data=keepalive or 300,
            )
            self._channel = open_channel(
                self.director_host,
                self.director_port,
                ssl=self._ssl,
                config=config,
                codec=_ReplyCodec(),
            )
        return self._channel

    @property
    def stub(self) -> DirectorStub:
        """The generated grpclib stub on this client's channel (use it on this loop only)."""
        if self._stub is None:
            self._stub = DirectorStub(self._open_channel())
        return self._stub

    async def close(self) -> None:
        """Close the connection; calls still in flight end with ClientClosedError."""
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            channel.close()

    async def __aenter__(self) -> AsyncShardDirectorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._closed

    def _translate(self, exc: Exception, what: str, *, shard_rpc: bool = False) -> Exception:
        if self._closed:
            return ClientClosedError(f"{what}: client for {self.address} was closed")
        broken = isinstance(exc, (StreamTerminatedError, TimeoutError, asyncio.TimeoutError))
        garbage = unparseable_reply(self._channel) if broken else None
        tls_hint = "" if self._ssl else ", or does it expect TLS"
        if garbage is not None:
            return DirectorProtocolError(
                f"{what}: {self.address} {garbage} (is it a gRPC director{tls_hint}?)",
                address=self.address,
            )
        framing = framing_error(self._channel) if isinstance(exc, StreamTerminatedError) else None
        if framing is not None:
            return DirectorProtocolError(
                f"{what}: {self.address} broke the HTTP/2 protocol: {framing}",
                address=self.address,
            )
        if isinstance(exc, StreamTerminatedError) and went_silent(self._channel):
            return DirectorUnavailableError(
                f"{what}: the director at {self.address} stopped answering (a keepalive ping "
                f"went unanswered for {self.options.keepalive_timeout:g} s)",
                address=self.address,
            )
        early = early_tls_close(self._channel) if isinstance(exc, StreamTerminatedError) else None
        if early is not None:  # most likely a refused certificate: not a plain lost connection
            return tls_closed_early(what, self.address, early)
        if isinstance(exc, StreamTerminatedError) and goaway_received(self._channel):
            return DirectorUnavailableError(
                f"{what}: the director at {self.address} closed the connection (GOAWAY)",
                address=self.address,
            )
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and connection_broken(
            self._channel
        ):
            return DirectorProtocolError(
                f"{what}: {self.address} closed the connection before answering "
                f"(is it a gRPC director{tls_hint}?)",
                address=self.address,
            )
        mapped = translate_error(
            exc,
            what=what,
            address=self.address,
            shard_name=self.shard_name if shard_rpc else None,
            # a hint about TLS set-up only helps while nothing ever got through
            tls=None if self._answered else self._ssl is not None,
        )
        return mapped if mapped is not None else exc

    async def _unary(
        self,
        what: str,
        call: Callable[[DirectorStub], Awaitable[T]],
        *,
        shard_rpc: bool = False,
        retry: RetryPolicy | None = None,
    ) -> T:
        """One unary call with the client's retries (or ``retry``'s)."""

        async def attempt() -> T:
            stub = self.stub
            try:
                result = await call(stub)
                self._answered = True
                return result
            except ShardClientError:
                raise
            except Exception as exc:
                raise self._translate(exc, what, shard_rpc=shard_rpc) from exc

        return await call_with_retry(retry or self.options.retry, what, attempt)

    async def report_shard_info(
        self,
        shard_descriptor: ShardDescriptor,
        cuda_devices: Iterable[SupportsIndex | CudaDeviceInfo] = (),
    ) -> bool:
        """Register this shard; True when the director accepted its shapes.

        The descriptor is validated first (ShardDescriptorError): nothing is sent otherwise.
        """
        info = shard_info_from_descriptor(
            shard_descriptor, shard_name=self.shard_name, cuda_devices=cuda_devices
        )
        logger.info("Registering shard %s with the director at %s", self.shard_name, self.address)
        request = UpdateShardInfoRequest(shard_info=info)
        response = await self._unary(
            "UpdateShardInfo",
            lambda stub: stub.update_shard_info(request, timeout=self.options.timeout),
        )
        return bool(response.accepted)

    async def wait_experiment(self) -> str:
        """Long-poll until the director has an experiment for this shard; return its name.

        No deadline. A long poll that had been waiting for at least ``keepalive_time`` when
        its connection was cut (a director restart, a proxy's idle cut, GOAWAY
        too_many_pings) is sent again with a fresh retry budget, so only a director that
        stays unreachable ends the wait with an error. A director that stops answering
        keepalive pings is noticed within ``keepalive_time + keepalive_timeout`` and polled
        again the same way; when the new connection hears nothing from it either (a frozen
        process whose kernel still accepts connections), the wait ends with the retry budget.
        """
        what = "WaitExperiment"
        request = WaitExperimentRequest(collaborator_name=self.shard_name)
        policy = self.options.retry
        established_after = self.options.keepalive_time or DEFAULT_KEEPALIVE_TIME

        async def attempt() -> WaitExperimentResponse:
            stub = self.stub
            started = time.monotonic()
            try:
                answer = await stub.wait_experiment(request)
                self._answered = True
                return answer
            except Exception as exc:
                mapped = self._translate(exc, what)
                waited = time.monotonic() - started
                # only a director that answered before gets polled again, and only after a
                # connection it spoke on: a peer that never spoke gRPC, or a frozen director
                # whose kernel still accepts connections, must not keep the caller waiting
                # forever; they get what is left of the retry budget
                dropped = (
                    self._answered and waited >= established_after
                    and director_spoke(self._channel)
                )  # fmt: skip
                if policy is not None and dropped and is_retryable(mapped):
                    raise _LongPollDropped(mapped, waited) from exc
                raise mapped from exc

        while True:
            try:
                response = await call_with_retry(policy, what, attempt)
                break
            except _LongPollDropped as dropped:
                logger.info(
                    "%s: the long poll was cut after %.0f s (%s); polling again",
                    what,
                    dropped.waited,
                    dropped.cause,
                )
        if not response.experiment_name:
            raise ShardClientError(
                f"the director at {self.address} answered WaitExperiment with no experiment name"
            )
        return response.experiment_name

    async def send_health_check(
        self,
        *,
        envoy_name: str,
        is_experiment_running: bool,
        cuda_devices_info: CudaDevicesInfo | None = None,
    ) -> int:
        """Report liveness and GPU readings; return the seconds until the next health check.

        Raises ShardNotFoundError when the director no longer knows the shard.
        """
        request = UpdateEnvoyStatusRequest(
            name=_text("envoy_name", envoy_name),
            is_experiment_running=bool(is_experiment_running),
            cuda_devices=cuda_device_messages(cuda_devices_info),
        )

        async def call(stub: DirectorStub) -> UpdateEnvoyStatusResponse:
            return await stub.update_envoy_status(request, timeout=self.options.timeout)

        # Retries wait at most one health period: a director that comes back is seen within
        # a period, as a health loop that called again would see it.
        policy = self.options.retry
        if policy is not None and self._health_period is not None:
            policy = dataclasses.replace(
                policy, max_delay=min(policy.max_delay, max(self._health_period, 0.5))
            )
        reply = await self._unary("UpdateEnvoyStatus", call, shard_rpc=True, retry=policy)
        # the whole seconds, as OpenFL's client reads them
        period = int(reply.health_check_period.total_seconds())
        if period > 0:
            self._health_period = period
        return period

    async def set_experiment_failed(
        self, experiment_name: str, error_code: int = 1, error_description: str = ""
    ) -> None:
        """Tell the director this shard could not run ``experiment_name``."""
        if isinstance(error_code, bool) or not isinstance(error_code, int):
            raise ValueError(f"error_code must be an int, got {error_code!r}")
        if not 0 <= error_code < 2**32:
            raise ValueError(f"error_code must fit in uint32, got {error_code!r}")
        request = SetExperimentFailedRequest(
            experiment_name=_text("experiment_name", experiment_name),
            collaborator_name=self.shard_name,
            error_code=error_code,
            error_description=_text("error_description", error_description, empty=True),
        )
        await self._unary(
            "SetExperimentFailed",
            lambda stub: stub.set_experiment_failed(request, timeout=self.options.timeout),
        )

    def get_experiment_data(self, experiment_name: str) -> AsyncIterator[ExperimentData]:
        """Stream the experiment archive's chunks as the director sends them.

        Opening the stream is retried until the first chunk arrives; a failure after that
        ends the iteration with an error (the caller has consumed data). Each chunk must
        arrive within ``timeout`` seconds and be at most ``max_message_size`` bytes.
        """
        return self._stream_chunks(experiment_name, recv_chunk)

    async def _stream_chunks(
        self,
        experiment_name: str,
        recv: Callable[..., Awaitable[M | None]],
    ) -> AsyncIterator[M]:
        """get_experiment_data's work, each message read by ``recv`` (recv_chunk's kind)."""
        request = GetExperimentDataRequest(
            experiment_name=_text("experiment_name", experiment_name),
            collaborator_name=self.shard_name,
        )
        what = "GetExperimentData"
        timeout = self.options.timeout

        async def next_chunk(stream: DataStream) -> M | None:
            with anyio.fail_after(timeout):
                chunk = await recv(
                    stream, max_message_size=self.options.max_message_size, address=self.address
                )
                if chunk is None:
                    await stream.recv_trailing_metadata()  # raises the director's error status
                return chunk

        async def open_stream() -> tuple[AsyncExitStack, DataStream, M | None]:
            stack = AsyncExitStack()
            try:
                with anyio.fail_after(timeout):
                    stream = await stack.enter_async_context(
                        self._open_channel().request(
                            _GET_EXPERIMENT_DATA,
                            Cardinality.UNARY_STREAM,
                            GetExperimentDataRequest,
                            ExperimentData,
                        )
                    )
                    await stream.send_message(request, end=True)
                first = await next_chunk(stream)
                self._answered = True
            except BaseException as exc:
                # not aclose(): grpclib's Stream.__aexit__ must see the error, or it waits
                # for the response it was abandoning
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
                if isinstance(exc, Exception) and not isinstance(exc, ShardClientError):
                    raise self._translate(exc, what) from exc
                raise
            return stack, stream, first

        stack, stream, chunk = await call_with_retry(self.options.retry, what, open_stream)
        async with stack:
            while chunk is not None:
                yield chunk
                try:
                    chunk = await next_chunk(stream)
                except ShardClientError:
                    raise
                except Exception as exc:
                    raise self._translate(exc, what) from exc

    async def download_experiment(
        self,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> DownloadedExperiment:
        """Download the archive into ``dest_dir`` as :func:`archive_filename` names it.

        The file appears only when complete; on any error or cancellation nothing in
        ``dest_dir`` changes. ``progress(bytes_so_far, None)`` is called per chunk.
        """
        destination = Path(dest_dir) / archive_filename(experiment_name)
        chunks: AsyncIterator[RawChunk] = self._stream_chunks(experiment_name, recv_raw_chunk)
        return await save_archive(chunks, destination, progress=progress)
