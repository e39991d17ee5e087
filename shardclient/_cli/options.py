"""The flags every command talking to a director takes, and the director they describe.

Flags match OpenFL's ``fx envoy start`` where they overlap, for both generations
(``-n``, ``-c``/``-ec``, ``--tls``/``--disable-tls``, ``-rc``, ``-pk``, ``-oc``; 1.5-1.7's
``-dh``, ``-dp``); each can also come from a SHARDCLIENT_* environment variable. Which
generation's director the envoy talks to comes from ``--api`` or, by default, from the
envoy config's format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from shardclient import (
    AsyncEnvoyDirectorClient,
    AsyncShardDirectorClient,
    EnvoyConfig,
    GpuMonitor,
    RetryPolicy,
    load_envoy_config,
)
from shardclient._config import config_generation
from shardclient._config.workflow import WorkflowEnvoyConfig, load_workflow_config
from shardclient._envoy.directors import Director, InteractiveDirector, WorkflowDirector
from shardclient._errors import InvalidArgumentError
from shardclient._generation import Generation

__all__ = [
    "Connection",
    "EnvoySetup",
    "config_option",
    "connection_options",
    "env",
    "envoy_setup",
]

logger = logging.getLogger("shardclient.cli")

P = ParamSpec("P")
T = TypeVar("T")

_APIS = {"interactive": Generation.INTERACTIVE, "workflow": Generation.WORKFLOW}


def env(name: str) -> str:
    return f"SHARDCLIENT_{name}"


def connection_options(func: Callable[P, T]) -> Callable[P, T]:
    """The flags every command talking to a director takes (as in ``fx envoy start``)."""
    options = [
        click.option(
            "-n",
            "--shard-name",
            "--envoy-name",
            "--envoy_name",
            "shard_name",
            required=True,
            envvar=env("SHARD_NAME"),
            help="This envoy's name: the shard (1.5-1.7) or collaborator (1.9) name.",
        ),
        click.option(
            "-dh",
            "--director-host",
            envvar=env("DIRECTOR_HOST"),
            help="The director's host (1.9: settings.director_host of the config by default).",
        ),
        click.option(
            "-dp",
            "--director-port",
            type=click.IntRange(1, 65535),
            envvar=env("DIRECTOR_PORT"),
            help="The director's port (1.9: settings.director_port of the config by default).",
        ),
        click.option(
            "--api",
            type=click.Choice(["auto", *_APIS]),
            default="auto",
            show_default=True,
            envvar=env("API"),
            help="The director's protocol: interactive (OpenFL 1.5-1.7), workflow (OpenFL "
            "1.9), or auto: as the envoy config's format says.",
        ),
        click.option(
            "--tls",
            "tls_flag",
            is_flag=True,
            help="TLS with client certificates (the default), as fx envoy start --tls.",
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
        "-c",
        "-ec",
        "--envoy-config-path",
        type=click.Path(path_type=Path),
        default=Path("envoy_config.yaml"),
        show_default=True,
        envvar=env("ENVOY_CONFIG_PATH"),
        help="OpenFL envoy config (YAML) of either generation: 1.5-1.7's (shard descriptor, "
        "CUDA devices) or 1.9's (director address, private attributes).",
    )(func)


@dataclass(frozen=True)
class Connection:
    """What the connection flags say."""

    name: str
    host: str | None
    port: int | None
    api: str
    tls: bool
    root_cert_path: Path | None
    private_key_path: Path | None
    public_cert_path: Path | None
    timeout: float
    retry_attempts: int

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Connection:
        """The connection the options of connection_options describe (and pops them)."""
        if options.pop("tls_flag") and options["disable_tls"]:
            raise click.UsageError("--tls and --disable-tls exclude each other")
        return cls(
            name=options.pop("shard_name"),
            host=options.pop("director_host"),
            port=options.pop("director_port"),
            api=options.pop("api"),
            tls=not options.pop("disable_tls"),
            root_cert_path=options.pop("root_cert_path"),
            private_key_path=options.pop("private_key_path"),
            public_cert_path=options.pop("public_cert_path"),
            timeout=options.pop("timeout"),
            retry_attempts=options.pop("retry_attempts"),
        )

    def check_tls(self) -> None:
        """A usage error naming the TLS flags missing while TLS is on."""
        if not self.tls:
            return
        flags = {"-rc/--root-cert-path": self.root_cert_path, "-pk/--private-key-path":
                 self.private_key_path, "-oc/--public-cert-path": self.public_cert_path}  # fmt: skip
        missing = [flag for flag, value in flags.items() if value is None]
        if missing:
            raise click.UsageError(
                f"TLS (the default) needs {', '.join(missing)}; or give --disable-tls "
                "for a director started with --disable-tls"
            )

    @property
    def retry(self) -> RetryPolicy | None:
        return RetryPolicy(max_attempts=self.retry_attempts) if self.retry_attempts > 1 else None

    @property
    def root_certificate(self) -> Path | None:
        """The CA file when TLS is on (None without TLS); likewise the next two."""
        return self.root_cert_path if self.tls else None

    @property
    def private_key(self) -> Path | None:
        return self.private_key_path if self.tls else None

    @property
    def certificate(self) -> Path | None:
        return self.public_cert_path if self.tls else None


@dataclass
class EnvoySetup:
    """A command's director, of the generation the flags or the config say, with the config."""

    director: Director
    config: EnvoyConfig | WorkflowEnvoyConfig | None


def envoy_setup(
    connection: Connection,
    config_path: Path,
    *,
    config_required: bool,
    monitor: GpuMonitor | None = None,
) -> EnvoySetup:
    """The director a command talks to, and the envoy config read for it.

    The generation is ``--api``'s, or the config's format's; without a config (where a
    command needs none) it is 1.5-1.7's. A 1.5-1.7 envoy config builds the shard
    descriptor; a 1.9 one gives the director's address unless -dh/-dp do."""
    present = config_path.exists()
    if connection.api != "auto":
        generation = _APIS[connection.api]
    elif present or config_required:
        found = config_generation(config_path)
        if found is None:
            raise click.UsageError(
                f"{config_path} is neither an OpenFL 1.5-1.7 envoy config (shard_descriptor) "
                "nor an OpenFL 1.9 one (settings): say which with --api"
            )
        generation = found
    else:
        generation = Generation.INTERACTIVE
    try:
        if generation is Generation.WORKFLOW:
            return _workflow(connection, config_path if present or config_required else None)
        return _interactive(connection, config_path, present or config_required, monitor)
    except InvalidArgumentError as exc:  # a value click let through (nan, text not UTF-8)
        flag = _FLAG_OF.get(exc.argument, exc.argument)
        raise click.UsageError(flag + str(exc).removeprefix(exc.argument)) from None


def _interactive(
    connection: Connection, config_path: Path, with_config: bool, monitor: GpuMonitor | None
) -> EnvoySetup:
    if connection.host is None or connection.port is None:
        raise click.UsageError(
            "an OpenFL 1.5-1.7 director needs -dh/--director-host and -dp/--director-port"
        )
    connection.check_tls()
    config = load_envoy_config(config_path) if with_config else None
    client = AsyncShardDirectorClient(
        director_host=connection.host,
        director_port=connection.port,
        shard_name=connection.name,
        tls=connection.tls,
        timeout=connection.timeout,
        retry=connection.retry,
        root_certificate=connection.root_certificate,
        private_key=connection.private_key,
        certificate=connection.certificate,
    )
    if config is None:  # a health check needs no descriptor
        director = InteractiveDirector(client, descriptor=None)
    else:
        director = InteractiveDirector(
            client, descriptor=config.descriptor, cuda_devices=config.cuda_devices, monitor=monitor
        )
    return EnvoySetup(director, config)


def _workflow(connection: Connection, config_path: Path | None) -> EnvoySetup:
    config = load_workflow_config(config_path, connection.name) if config_path else None
    host = connection.host or (config.director_host if config else None)
    port = connection.port or (config.director_port if config else None)
    if host is None or port is None:
        where = f" (or settings.director_host/_port in {config_path})" if config_path else ""
        raise click.UsageError(
            f"an OpenFL 1.9 director needs -dh/--director-host and -dp/--director-port{where}"
        )
    connection.check_tls()
    client = AsyncEnvoyDirectorClient(
        director_host=host,
        director_port=port,
        envoy_name=connection.name,
        tls=connection.tls,
        timeout=connection.timeout,
        retry=connection.retry,
        root_certificate=connection.root_certificate,
        private_key=connection.private_key,
        certificate=connection.certificate,
    )
    return EnvoySetup(WorkflowDirector(client, envoy_name=connection.name), config)


_FLAG_OF = {
    "shard_name": "-n/--shard-name",
    "envoy_name": "-n/--envoy-name",
    "director_host": "-dh/--director-host",
    "director_port": "-dp/--director-port",
    "timeout": "--timeout",
}
