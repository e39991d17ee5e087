"""Misbehaving "directors" on loopback: raw TCP and hand-driven HTTP/2 (h2), scripted per test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

import h2.config
import h2.connection
import h2.events

from shardclient.messages import ExperimentData

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def grpc_frame(payload: bytes, *, declared_length: int | None = None) -> bytes:
    """A gRPC length-prefixed message (uncompressed), optionally lying about its length."""
    length = len(payload) if declared_length is None else declared_length
    return b"\x00" + length.to_bytes(4, "big") + payload


def chunk(data: bytes, *, size: int | None = None) -> bytes:
    """A framed ExperimentData message whose size field is ``size`` (default: honest)."""
    message = ExperimentData(size=len(data) if size is None else size, npbytes=data)
    return grpc_frame(bytes(message))


@dataclass
class H2Script:
    """What the HTTP/2 server does once a request has fully arrived."""

    body: bytes = b""  # DATA after the response headers (already gRPC-framed)
    # "trailers", "stall", "close", "end" (END_STREAM, no trailers), "break" (an invalid
    # HTTP/2 frame: DATA on stream 0), "goaway" (GOAWAY, then the trailers anyway)
    then: str = "trailers"
    status: int = 0  # grpc-status in the trailers
    message: str = ""  # grpc-message in the trailers


class HostileServer:
    """A server on 127.0.0.1 that runs ``handler`` for every connection."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()


HTTP1_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def garbage(payload: bytes) -> Handler:
    """Answer every connection with ``payload`` (not HTTP/2) and keep it open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        await reader.read()  # keep the connection open until the client gives up

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the connection, read everything, never answer."""
    while await reader.read(65536):
        pass


def _trailers_after_goaway(stream_id: int) -> bytes:
    """A HEADERS frame with grpc-status 0 and END_STREAM, encoded by hand (h2 refuses to
    send anything once it sent GOAWAY)."""
    import hpack
    import hyperframe.frame

    block = hpack.Encoder().encode([("grpc-status", "0")])
    frame = hyperframe.frame.HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"])
    return frame.serialize()


def h2_server(script: H2Script) -> Handler:
    """An HTTP/2 server that answers every request per ``script`` and acks pings."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        window_open = asyncio.Event()
        responders: list[asyncio.Task[None]] = []

        async def send_body(stream_id: int, data: bytes) -> None:
            view = memoryview(data)
            while view:
                room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if room <= 0:
                    window_open.clear()
                    await window_open.wait()
                    continue
                conn.send_data(stream_id, bytes(view[:room]))
                view = view[room:]
                writer.write(conn.data_to_send())
                await writer.drain()

        async def respond(stream_id: int) -> None:
            conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/grpc")])
            writer.write(conn.data_to_send())
            await send_body(stream_id, script.body)
            if script.then == "trailers":
                trailers = [("grpc-status", str(script.status))]
                if script.message:
                    trailers.append(("grpc-message", script.message))
                conn.send_headers(stream_id, trailers, end_stream=True)
            elif script.then == "end":
                conn.end_stream(stream_id)
            elif script.then == "close":
                writer.close()
                return
            elif script.then == "break":
                writer.write(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")  # DATA, stream 0
                await writer.drain()
                return
            elif script.then == "goaway":
                conn.close_connection(error_code=11)  # ENHANCE_YOUR_CALM: too_many_pings
                writer.write(conn.data_to_send())
                # RFC 9113 lets a server finish streams after GOAWAY (gRPC C-core does)
                writer.write(_trailers_after_goaway(stream_id))
                await writer.drain()
                return
            writer.write(conn.data_to_send())
            await writer.drain()

        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    if isinstance(event, h2.events.StreamEnded):
                        responders.append(asyncio.create_task(respond(event.stream_id)))
                    if isinstance(event, h2.events.WindowUpdated):
                        window_open.set()
                writer.write(conn.data_to_send())  # ping acks, settings acks, window updates
                await writer.drain()
        finally:
            for responder in responders:
                responder.cancel()
            await asyncio.gather(*responders, return_exceptions=True)

    return handle
