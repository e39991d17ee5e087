"""The ``shardclient`` command.

``commands``: the click group and its commands (run, demo, register, health, wait,
download, gpus) and ``main``, the entry point. ``options``: the connection flags and the
client they make. ``terminal``: progress and the review prompt. ``signals``: a command's
event loop, cancelled by SIGINT/SIGTERM. ``exits``: exit codes and error lines. ``demo``:
the whole cycle against an in-process director.
"""

from shardclient._cli.commands import cli, main

__all__ = ["cli", "main"]
