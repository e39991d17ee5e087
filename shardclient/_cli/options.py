"""The flags every command talking to a director takes, and the client they describe.

Flags match OpenFL's ``fx envoy start`` where they overlap; each can also come from a
SHARDCLIENT_* environment variable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import click

from shardclient import AsyncShardDirectorClient, RetryPolicy
from shardclient._errors import InvalidArgumentError

__all__ = ["config_option", "connection_options", "env", "make_client"]

P = ParamSpec("P")
T = TypeVar("T")


def env(name: str) -> str:
    return f"SHARDCLIENT_{name}"


def connection_options(func: Callable[P, T]) -> Callable[P, T]:
    """The flags every command talking to a director takes (as in ``fx envoy start``)."""
    options = [
        click.option(
            "-n",
            "--shard-name",
            required=True,
            envvar=env("SHARD_NAME"),
            help="This envoy's shard (collaborator) name.",
        ),
        click.option(
            "-dh",
            "--director-host",
            required=True,
            envvar=env("DIRECTOR_HOST"),
            help="The director's host name or address.",
        ),
        click.option(
            "-dp",
            "--director-port",
            required=True,
            type=click.IntRange(1, 65535),
            envvar=env("DIRECTOR_PORT"),
            help="The director's port.",
        ),
        click.option(
            "--disable-tls",
            is_flag=True,
            envvar=env("DISABLE_TLS"),
            help="Plain-text connection (the director must run with --disable-tls).",
        ),
        click.option(
            "-rc",
            "--root-cert-path",
            type=click.Path(path_type=Path),
            envvar=env("ROOT_CERT_PATH"),
            help="CA certificate the director's is signed by.",
        ),
        click.option(
            "-pk",
            "--private-key-path",
            type=click.Path(path_type=Path),
            envvar=env("PRIVATE_KEY_PATH"),
            help="This envoy's private key.",
        ),
        click.option(
            "-oc",
            "--public-cert-path",
            type=click.Path(path_type=Path),
            envvar=env("PUBLIC_CERT_PATH"),
            help="This envoy's certificate.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=30.0,
            envvar=env("TIMEOUT"),
            show_default=True,
            help="Seconds for each call to the director.",
        ),
        click.option(
            "--retry-attempts",
            type=click.IntRange(min=1),
            default=6,
            show_default=True,
            envvar=env("RETRY_ATTEMPTS"),
            help="Attempts per call while the director is unreachable (1: no retry).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_option(func: Callable[P, T]) -> Callable[P, T]:
    return click.option(
        "-ec",
        "--envoy-config-path",
        type=click.Path(path_type=Path),
        default=Path("envoy_config.yaml"),
        show_default=True,
        envvar=env("ENVOY_CONFIG_PATH"),
        help="OpenFL envoy config (YAML): shard descriptor and CUDA devices.",
    )(func)


def make_client(
    *,
    shard_name: str,
    director_host: str,
    director_port: int,
    disable_tls: bool,
    root_cert_path: Path | None,
    private_key_path: Path | None,
    public_cert_path: Path | None,
    timeout: float,
    retry_attempts: int,
) -> AsyncShardDirectorClient:
    """The client the connection options describe (TLS files are checked here)."""
    if not disable_tls:
        flags = {"-rc/--root-cert-path": root_cert_path, "-pk/--private-key-path":
                 private_key_path, "-oc/--public-cert-path": public_cert_path}  # fmt: skip
        missing = [flag for flag, value in flags.items() if value is None]
        if missing:
            raise click.UsageError(
                f"TLS (the default) needs {', '.join(missing)}; or give --disable-tls "
                "for a director started with --disable-tls"
            )
    try:
        return AsyncShardDirectorClient(
            director_host=director_host,
            director_port=director_port,
            shard_name=shard_name,
            tls=not disable_tls,
            root_certificate=root_cert_path,
            private_key=private_key_path,
            certificate=public_cert_path,
            timeout=timeout,
            retry=RetryPolicy(max_attempts=retry_attempts) if retry_attempts > 1 else None,
        )
    except InvalidArgumentError as exc:  # a value click let through (nan, text not UTF-8)
        flag = _FLAG_OF.get(exc.argument, exc.argument)
        raise click.UsageError(flag + str(exc).removeprefix(exc.argument)) from None


_FLAG_OF = {
    "shard_name": "-n/--shard-name",
    "director_host": "-dh/--director-host",
    "director_port": "-dp/--director-port",
    "timeout": "--timeout",
}
