"""What the drop-in promise needs from OpenFL's side, without importing openfl.

OpenFL's Envoy keeps its shard registered by catching
``openfl.transport.grpc.exceptions.ShardNotFoundError`` around its health checks (in 1.5.1
to 1.7.1 the only director-client exception OpenFL's envoy code catches by type; the rest is
caught as ``Exception``). Our ShardNotFoundError is raised as an instance of OpenFL's class
too whenever OpenFL's exceptions module is already loaded (it always is where OpenFL's
Envoy runs); otherwise it is plain ours. Importing shardclient never imports openfl.
"""

from __future__ import annotations

import sys

from shardclient._errors import ShardNotFoundError

__all__ = ["OPENFL_EXCEPTIONS", "shard_not_found_class"]

OPENFL_EXCEPTIONS = "openfl.transport.grpc.exceptions"


def shard_not_found_class() -> type[ShardNotFoundError]:
    """ShardNotFoundError, or a subclass that is also OpenFL's when OpenFL has loaded it."""
    theirs = getattr(sys.modules.get(OPENFL_EXCEPTIONS), "ShardNotFoundError", None)
    if not isinstance(theirs, type) or not issubclass(theirs, Exception):
        return ShardNotFoundError
    both = _made.get(theirs)
    if both is None:
        # one class per OpenFL class; it names itself (and pickles) as ours
        both = type(
            "ShardNotFoundError",
            (ShardNotFoundError, theirs),
            {"__module__": ShardNotFoundError.__module__, "__doc__": ShardNotFoundError.__doc__},
        )
        _made[theirs] = both
    return both


_made: dict[type[Exception], type[ShardNotFoundError]] = {}
