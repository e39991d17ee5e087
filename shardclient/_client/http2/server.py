"""A grpclib Server for the in-process test directors (shardclient.testing) whose stop, like
a process exit, also drops the connections it had: grpclib's own close() cancels the calls in
progress but leaves the TCP connections open, so a client would keep talking to a server
that no longer answers."""

from __future__ import annotations

import weakref

from betterproto.grpc.grpclib_server import ServiceBase
from grpclib.protocol import H2Protocol
from grpclib.server import Server

__all__ = ["RestartableServer"]


class RestartableServer(Server):
    """A grpclib Server that can drop its open connections (see the module)."""

    def __init__(self, handlers: list[ServiceBase]) -> None:
        super().__init__(handlers)  # type: ignore[arg-type]  # betterproto's bases serve
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def drop_connections(self) -> None:
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()
