"""DirectorConnection: what every director client shares, whatever the generation.

One grpclib channel to one director, opened lazily on the loop that uses it and re-opened by
grpclib after a restart; the connection's tuning and keepalive; each call's deadline,
retries and error mapping; the long poll's rule for a cut; the health check's period; and
archive downloads. A generation's client (``interactive_aio``, ``workflow_aio``) adds only
its RPCs and messages on top.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import betterproto
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import ProtocolError

from shardclient._checks import check_text
from shardclient._client.chunks import ChunkType, recv_message, recv_raw
from shardclient._client.download import DownloadedExperiment, ProgressCallback, save_archive
from shardclient._client.http2.channel import director_configuration, open_channel
from shardclient._client.http2.diagnosis import diagnose
from shardclient._client.options import (
    DEFAULT_KEEPALIVE_TIME,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_TIMEOUT,
    ClientOptions,
)
from shardclient._client.probe import speaks_plain_http2, speaks_tls
from shardclient._client.retry import RetryBudget, RetryPolicy, call_with_retry, is_retryable
from shardclient._client.tls import PathLike, client_ssl_context
from shardclient._client.translate import (
    NotFound,
    maybe_tls_mismatch,
    tls_mismatch,
    translate,
)
from shardclient._client.wire import check_message
from shardclient._errors import ClientClosedError, InvalidArgumentError, ShardClientError
from shardclient._generation import Generation
from shardclient._text import archive_filename

__all__ = ["AsyncDirectorClient", "DirectorConnection"]

logger = logging.getLogger("shardclient.client")

T = TypeVar("T")
M = TypeVar("M", bound=betterproto.Message)
R = TypeVar("R")
C = TypeVar("C", bound="AsyncDirectorClient[Any]")
S = TypeVar("S", bound=betterproto.ServiceStub)


class _ReplyCodec(ProtoCodec):
    """grpclib's protobuf codec (over betterproto's messages), except that a reply that does
    not decode is a grpclib ProtocolError, which maps to DirectorProtocolError."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            check_message(data, message_type)  # betterproto alone accepts wrong wire types
            return super().decode(data, message_type)
        except Exception as exc:  # betterproto raises ValueError, EOFError, ... on bad input
            raise ProtocolError(f"malformed {message_type.__name__} message: {exc}") from exc


class DirectorConnection:
    """The connection to one director, and the call patterns every RPC is one of."""

    def __init__(
        self,
        *,
        director_host: str,
        director_port: int,
        tls: bool,
        root_certificate: PathLike | None,
        private_key: PathLike | None,
        certificate: PathLike | None,
        options: ClientOptions,
    ) -> None:
        check_text("director_host", director_host)
        if (
            isinstance(director_port, bool)
            or not isinstance(director_port, int)
            or not 0 < director_port < 65536
        ):
            raise InvalidArgumentError(
                f"director_port must be an int in 1..65535, got {director_port!r}",
                argument="director_port",
            )
        self.host = director_host
        self.port = director_port
        self.options = options
        self.ssl = (
            client_ssl_context(
                root_certificate=root_certificate, private_key=private_key, certificate=certificate
            )
            if tls
            else None
        )
        self._channel: Channel | None = None
        self.closed = False
        self.answered = False  # whether any call ever got an answer
        self._health_period: int | None = None  # the last health period the director named

    @property
    def address(self) -> str:
        """The director's ``host:port``, as error messages name it."""
        return f"{self.host}:{self.port}"

    def channel(self) -> Channel:
        """The channel, created on first use so that it binds to the running loop."""
        if self.closed:
            raise ClientClosedError(f"client for {self.address} is closed")
        if self._channel is None:
            config = director_configuration(
                keepalive_time=self.options.keepalive_time,
                keepalive_timeout=self.options.keepalive_timeout,
            )
            self._channel = open_channel(
                self.host, self.port, ssl=self.ssl, config=config, codec=_ReplyCodec()
            )
        return self._channel

    def close(self) -> None:
        """Close the connection; calls still in flight end with ClientClosedError."""
        self.closed = True
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()

    async def error(
        self, exc: Exception, what: str, *, not_found: NotFound | None = None
    ) -> Exception:
        """Our error for what call ``what`` raised (see shardclient._client.translate); a
        possible TLS mismatch is confirmed by one short probe of the director first."""
        seen = diagnose(self._channel)
        tls = self.ssl is not None
        if not self.closed and maybe_tls_mismatch(exc, seen, tls=tls):
            probe = speaks_plain_http2 if tls else speaks_tls
            if await probe(self.host, self.port):
                return tls_mismatch(what, self.address, client_tls=tls)
        return translate(
            exc,
            what=what,
            address=self.address,
            closed=self.closed,
            diagnosis=seen,
            tls=tls,
            answered=self.answered,
            keepalive_timeout=self.options.keepalive_timeout,
            not_found=not_found,
        )

    async def unary(
        self,
        what: str,
        call: Callable[[Channel], Awaitable[T]],
        *,
        not_found: NotFound | None = None,
        retry: RetryPolicy | None = None,
    ) -> T:
        """One unary call with the options' retries (or ``retry``'s)."""

        async def attempt() -> T:
            channel = self.channel()
            try:
                result = await call(channel)
            except ShardClientError:
                raise
            except Exception as exc:
                raise await self.error(exc, what, not_found=not_found) from exc
            self.answered = True
            return result

        return await call_with_retry(retry or self.options.retry, what, attempt)

    async def health_check(
        self, what: str, call: Callable[[Channel], Awaitable[timedelta]], *, not_found: NotFound
    ) -> int:
        """A health check: the director's period in whole seconds (as OpenFL reads it). Its
        retries wait at most one period: a director that comes back is seen within a period,
        as a health loop that called again would see it."""
        policy = self.options.retry
        if policy is not None and self._health_period is not None:
            policy = dataclasses.replace(
                policy, max_delay=min(policy.max_delay, max(self._health_period, 0.5))
            )
        answer = await self.unary(what, call, not_found=not_found, retry=policy)
        period = int(answer.total_seconds())
        if period > 0:
            self._health_period = period
        return period

    async def long_poll(self, what: str, call: Callable[[Channel], Awaitable[T]]) -> T:
        """A call with no deadline that waits for the director (WaitExperiment).

        The rule for a cut: a poll that had been waiting for at least ``keepalive_time`` on a
        connection the director spoke on, from a director that answered before, is sent again
        with a fresh retry budget (a director restart, a proxy's idle cut, GOAWAY
        too_many_pings); a director that stops answering keepalive pings counts as a cut. A
        peer that never spoke gRPC, or a frozen one whose kernel still accepts connections,
        gets only the retry budget: it cannot keep the caller waiting forever."""
        policy = self.options.retry
        established = self.options.keepalive_time or DEFAULT_KEEPALIVE_TIME
        if policy is not None:  # a poll that outlived the whole retry budget was answering
            established = min(established, policy.total_timeout)
        budget = RetryBudget(policy, what)
        while True:
            started = time.monotonic()
            try:
                channel = self.channel()
                answer = await call(channel)
            except ShardClientError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped, then retried or raised
                error = await self.error(exc, what)
                if error is not exc:
                    error.__cause__ = exc
                waited = time.monotonic() - started
                cut = self.answered and waited >= established and diagnose(self._channel).spoke
                if cut and policy is not None and is_retryable(error):
                    logger.info("%s: the long poll was cut after %.0f s (%s); polling again",
                                what, waited, error)  # fmt: skip
                    budget.restart()
                    continue
                await budget.after(error)  # raises it when it is not retried
                continue
            self.answered = True
            return answer

    async def stream_chunks(
        self,
        what: str,
        path: str,
        request: betterproto.Message,
        chunk_type: ChunkType[M],
        recv: Callable[..., Awaitable[R | None]],
    ) -> AsyncIterator[R]:
        """The chunks of a server-streaming download call at ``path``, each read by ``recv``
        (recv_message or recv_raw). Opening the stream is retried until the first chunk
        arrives; a failure after that ends the iteration with an error (the caller has
        consumed data). Each chunk must arrive within ``timeout`` and fit
        ``max_message_size``."""
        timeout = self.options.timeout

        async def next_chunk(stream: Stream[Any, M]) -> R | None:
            with anyio.fail_after(timeout):
                chunk = await recv(
                    stream,
                    chunk_type,
                    limit=self.options.max_message_size,
                    address=self.address,
                    what=what,
                )
                if chunk is None:
                    await stream.recv_trailing_metadata()  # raises the director's error status
                return chunk

        async def open_stream() -> tuple[AsyncExitStack, Stream[Any, M], R | None]:
            stack = AsyncExitStack()
            try:
                with anyio.fail_after(timeout):
                    stream = await stack.enter_async_context(
                        self.channel().request(
                            path, Cardinality.UNARY_STREAM, type(request), chunk_type.message
                        )
                    )
                    await stream.send_message(request, end=True)
                first = await next_chunk(stream)
                self.answered = True
            except BaseException as exc:
                # not aclose(): grpclib's Stream.__aexit__ must see the error, or it waits
                # for the response it was abandoning
                await stack.__aexit__(type(exc), exc, exc.__traceback__)
                if isinstance(exc, Exception) and not isinstance(exc, ShardClientError):
                    raise await self.error(exc, what) from exc
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
                    raise await self.error(exc, what) from exc

    def chunks(
        self, what: str, path: str, request: betterproto.Message, chunk_type: ChunkType[M]
    ) -> AsyncIterator[M]:
        """The archive's chunks as messages."""
        return self.stream_chunks(what, path, request, chunk_type, recv_message)

    async def download(
        self,
        what: str,
        path: str,
        request: betterproto.Message,
        chunk_type: ChunkType[M],
        *,
        experiment_name: str,
        dest_dir: str | os.PathLike[str],
        progress: ProgressCallback | None,
    ) -> DownloadedExperiment:
        """The archive saved into ``dest_dir`` as archive_filename names it, atomically."""
        destination = Path(dest_dir) / archive_filename(experiment_name)
        chunks = self.stream_chunks(what, path, request, chunk_type, recv_raw)
        return await save_archive(chunks, destination, progress=progress)


class AsyncDirectorClient(Generic[S]):
    """What every generation's async client is: one DirectorConnection, its options and
    address, its generated stub, closed with ``close()`` or ``async with`` on the loop it
    ran on."""

    generation: Generation
    """The director generation (its value names it in error messages: ``OpenFL 1.9``)."""
    stub_class: type[S]
    """The generation's generated grpclib stub."""

    def __init__(
        self,
        *,
        director_host: str,
        director_port: int,
        tls: bool,
        root_certificate: PathLike | None = None,
        private_key: PathLike | None = None,
        certificate: PathLike | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        keepalive_time: float | None = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self._connection = DirectorConnection(
            director_host=director_host,
            director_port=director_port,
            tls=tls,
            root_certificate=root_certificate,
            private_key=private_key,
            certificate=certificate,
            options=ClientOptions(
                timeout=timeout,
                keepalive_time=keepalive_time,
                keepalive_timeout=keepalive_timeout,
                retry=retry,
                max_message_size=max_message_size,
            ),
        )
        self._stub: S | None = None

    @property
    def stub(self) -> S:
        """The generated grpclib stub on this client's channel (use it on this loop only)."""
        return self._stub_on(self._connection.channel())

    def _stub_on(self, channel: Channel) -> S:
        if self._stub is None or self._stub.channel is not channel:
            self._stub = self.stub_class(channel)
        return self._stub

    @property
    def director_host(self) -> str:
        return self._connection.host

    @property
    def director_port(self) -> int:
        return self._connection.port

    @property
    def options(self) -> ClientOptions:
        """The client's validated options."""
        return self._connection.options

    @property
    def address(self) -> str:
        """The director's ``host:port``, as error messages name it."""
        return self._connection.address

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._connection.closed

    def _what(self, rpc: str) -> str:
        """How errors name a call: the RPC and the director generation."""
        return f"{rpc} ({self.generation.value})"

    async def close(self) -> None:
        """Close the connection; calls still in flight end with ClientClosedError."""
        self._connection.close()
        self._stub = None

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
