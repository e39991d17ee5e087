"""The ``shardclient`` command: run an envoy, try it out (demo), and one-shot director calls.

Flags match OpenFL's ``fx envoy start`` where they overlap; each can also come from a
SHARDCLIENT_* environment variable. Errors end in one line on stderr and an exit code:

    0 success    1 unexpected error    2 bad command line, or the director refused the shard
    3 bad configuration (envoy config, certificate files)    4 director unreachable or TLS
    failure    5 --once: the experiment's command failed (reported to the director)
    130 / 143 stopped by SIGINT / SIGTERM
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import click
from click.core import ParameterSource

from shardclient._aio import AsyncShardDirectorClient
from shardclient._config import load_envoy_config
from shardclient._download import ProgressCallback
from shardclient._envoy import Envoy, ExperimentResult, ExperimentSettings, Mode
from shardclient._errors import (
    DirectorProtocolError,
    DirectorTimeoutError,
    DirectorUnavailableError,
    EnvoyConfigError,
    EnvoyStateError,
    ShardClientError,
    ShardDescriptorError,
    ShardRefusedError,
    TLSConfigurationError,
    TLSHandshakeError,
)
from shardclient._gpu import GpuMonitor
from shardclient._handled import HandledExperiments
from shardclient._retry import RetryPolicy
from shardclient._review import ask_on_terminal, printable

if TYPE_CHECKING:  # rich is imported only when a terminal shows a progress bar
    from rich.progress import Progress

__all__ = ["main", "cli"]

logger = logging.getLogger("shardclient.cli")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_REFUSED = 2
EXIT_CONFIG = 3
EXIT_UNREACHABLE = 4
EXIT_EXPERIMENT_FAILED = 5

P = ParamSpec("P")
T = TypeVar("T")


class _Exit(Exception):
    """Leave with ``code`` after printing ``message`` (if any) as the one error line."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code


# -- logging ---------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# -- common options --------------------------------------------------------------------


def _env(name: str) -> str:
    return f"SHARDCLIENT_{name}"


def _connection_options(func: Callable[P, T]) -> Callable[P, T]:
    """The flags every command talking to a director takes (as in ``fx envoy start``)."""
    options = [
        click.option(
            "-n",
            "--shard-name",
            required=True,
            envvar=_env("SHARD_NAME"),
            help="This envoy's shard (collaborator) name.",
        ),
        click.option(
            "-dh",
            "--director-host",
            required=True,
            envvar=_env("DIRECTOR_HOST"),
            help="The director's host name or address.",
        ),
        click.option(
            "-dp",
            "--director-port",
            required=True,
            type=click.IntRange(1, 65535),
            envvar=_env("DIRECTOR_PORT"),
            help="The director's port.",
        ),
        click.option(
            "--disable-tls",
            is_flag=True,
            envvar=_env("DISABLE_TLS"),
            help="Plain-text connection (the director must run with --disable-tls).",
        ),
        click.option(
            "-rc",
            "--root-cert-path",
            type=click.Path(path_type=Path),
            envvar=_env("ROOT_CERT_PATH"),
            help="CA certificate the director's is signed by.",
        ),
        click.option(
            "-pk",
            "--private-key-path",
            type=click.Path(path_type=Path),
            envvar=_env("PRIVATE_KEY_PATH"),
            help="This envoy's private key.",
        ),
        click.option(
            "-oc",
            "--public-cert-path",
            type=click.Path(path_type=Path),
            envvar=_env("PUBLIC_CERT_PATH"),
            help="This envoy's certificate.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=30.0,
            envvar=_env("TIMEOUT"),
            show_default=True,
            help="Seconds for each call to the director.",
        ),
        click.option(
            "--retry-attempts",
            type=click.IntRange(min=1),
            default=6,
            show_default=True,
            envvar=_env("RETRY_ATTEMPTS"),
            help="Attempts per call while the director is unreachable (1: no retry).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config_option(func: Callable[P, T]) -> Callable[P, T]:
    return click.option(
        "-ec",
        "--envoy-config-path",
        type=click.Path(path_type=Path),
        default=Path("envoy_config.yaml"),
        show_default=True,
        envvar=_env("ENVOY_CONFIG_PATH"),
        help="OpenFL envoy config (YAML): shard descriptor and CUDA devices.",
    )(func)


def _client(
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
    except ValueError as exc:  # a value click let through (nan, text that is not UTF-8)
        message = str(exc)
        for keyword, flag in _FLAG_OF.items():
            if message.startswith(keyword + " "):
                message = f"{flag}{message[len(keyword) :]}"
        raise click.UsageError(message) from None


_FLAG_OF = {
    "shard_name": "-n/--shard-name",
    "director_host": "-dh/--director-host",
    "timeout": "--timeout",
}


def _run_async(func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on a fresh event loop. SIGINT or SIGTERM cancels it (so its cleanup
    runs: a partial download is removed, a running command stopped) and exits 130 / 143."""

    async def main() -> T:
        received: list[int] = []
        results: list[T] = []
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    async for signum in signals:
                        logger.info("Stopping on %s", signal.Signals(signum).name)
                        received.append(signum)
                        group.cancel_scope.cancel()
                        return

                group.start_soon(watch)
                results.append(await func())
                group.cancel_scope.cancel()
        if received:
            raise _Exit(128 + received[0])
        return results[0]

    return anyio.run(main)


def _emit(as_json: bool, data: dict[str, object], text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


# -- progress and review on the terminal ------------------------------------------------


class _Terminal:
    """Download progress (a rich bar on a terminal, log lines otherwise) and the review
    prompt, which pauses the bar while it asks."""

    def __init__(self) -> None:
        self._bar: Progress | None = None

    def __enter__(self) -> _Terminal:
        if sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            # transient: the result line (or the envoy's log line) states the final size once
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def progress(self, name: str) -> ProgressCallback:
        bar = self._bar
        if bar is not None:
            for finished in list(bar.task_ids):  # one bar: the download in progress
                bar.remove_task(finished)
            task = bar.add_task(f"downloading {printable(name, 60)}", total=None)

            def update_bar(received: int, total: int | None) -> None:
                bar.update(task, completed=received, total=total)

            return update_bar
        last = [0.0]

        def update_log(received: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 2.0:
                last[0] = now
                logger.info("Downloading %s: %.1f MiB so far", printable(name), received / 2**20)

        return update_log

    async def approve(self, text: str) -> bool | None:
        bar = self._bar
        if bar is not None:
            bar.stop()
        try:
            return await anyio.to_thread.run_sync(
                ask_on_terminal, f"{text}\nApprove?", abandon_on_cancel=True
            )
        finally:
            if bar is not None:
                bar.start()


# -- commands ----------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    envvar=_env("LOG_LEVEL"),
    help="Default: info for run, warning for the other commands.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar=_env("LOG_FORMAT"),
)
@click.version_option(package_name="shardclient")
@click.pass_context
def cli(context: click.Context, log_level: str | None, log_format: str) -> None:
    """A typed client for OpenFL's director: run a data shard's envoy, or try it out."""
    default = "info" if context.invoked_subcommand == "run" else "warning"
    _setup_logging(log_level or default, log_format)


@cli.command()
@_connection_options
@_config_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    envvar=_env("WORKDIR"),
    help="Where experiments are unpacked and run, and the envoy keeps its state.",
)
@click.option(
    "--exec",
    "command",
    envvar=_env("EXEC"),
    help="Run this command for each experiment instead of OpenFL's collaborator "
    "(split as a shell would, run without one); it gets SHARDCLIENT_ARCHIVE "
    "and SHARDCLIENT_EXPERIMENT in its environment.",
)
@click.option(
    "--download-only",
    is_flag=True,
    envvar=_env("DOWNLOAD_ONLY"),
    help="Only download each experiment's archive into --workdir.",
)
@click.option(
    "--keep-environment",
    is_flag=True,
    help="Keep each experiment's Python environment (install_requirements) after it.",
)
@click.option(
    "--keep-workspace", is_flag=True, help="Keep each experiment's unpacked workspace after it."
)
@click.option(
    "--rerun",
    "rerun",
    multiple=True,
    metavar="NAME",
    help="Run experiment NAME again although this envoy already handled it.",
)
@click.option("--once", is_flag=True, help="Stop after one experiment.")
def run(
    envoy_config_path: Path,
    workdir: Path,
    command: str | None,
    download_only: bool,
    keep_environment: bool,
    keep_workspace: bool,
    rerun: tuple[str, ...],
    once: bool,
    **options: Any,
) -> None:
    """Run the envoy: train each experiment the director sends."""
    if command is not None and download_only:
        raise click.UsageError("--exec and --download-only exclude each other")
    argv = _split_command(command) if command is not None else []
    mode = Mode.COMMAND if argv else Mode.DOWNLOAD_ONLY if download_only else Mode.COLLABORATOR
    if mode is Mode.COLLABORATOR and importlib.util.find_spec("openfl") is None:
        raise _Exit(
            EXIT_USAGE,
            "OpenFL is not installed, so there is no collaborator to run: "
            "pip install 'shardclient[openfl]' (or give --exec COMMAND "
            "or --download-only)",
        )
    config = load_envoy_config(envoy_config_path)
    workdir.mkdir(parents=True, exist_ok=True)
    handled = HandledExperiments(workdir)
    for name in rerun:
        if handled.forget(name):
            logger.info("Experiment %s will run again if the director offers it (--rerun)", name)
    client = _client(**options)
    settings = ExperimentSettings(
        mode=mode,
        workdir=workdir.absolute(),
        shard_name=options["shard_name"],
        command=argv,
        envoy_config=config.path,
        cuda_devices=config.cuda_devices,
        review=config.review_experiment,
        install_requirements=config.install_requirements,
        keep_environment=keep_environment,
        keep_workspace=keep_workspace,
        root_certificate=None if options["disable_tls"] else options["root_cert_path"],
        private_key=None if options["disable_tls"] else options["private_key_path"],
        certificate=None if options["disable_tls"] else options["public_cert_path"],
    )

    async def main() -> list[ExperimentResult]:
        with GpuMonitor() as monitor, _Terminal() as terminal:
            async with client:
                envoy = Envoy(
                    client,
                    descriptor=config.descriptor,
                    cuda_devices=config.cuda_devices,
                    workdir=workdir,
                    settings=settings,
                    handled=handled,
                    monitor=monitor,
                    approve=terminal.approve,
                    progress=terminal.progress,
                )
                return await envoy.serve(once=once)

    results = _run_async(main)
    raise _Exit(EXIT_EXPERIMENT_FAILED if any(r.failed for r in results) else EXIT_OK)


def _split_command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} in {command!r}", param_hint="'--exec'") from None
    if not argv:
        raise click.BadParameter("an empty command", param_hint="'--exec'")
    return argv


@cli.command()
@_connection_options
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def register(envoy_config_path: Path, as_json: bool, **options: Any) -> None:
    """Register the shard once; exit 2 when the director refuses it."""
    config = load_envoy_config(envoy_config_path)
    client = _client(**options)

    async def main() -> None:
        async with client:
            envoy = Envoy(
                client,
                descriptor=config.descriptor,
                cuda_devices=config.cuda_devices,
                workdir=Path("."),
            )
            await envoy.register()

    _run_async(main)
    _emit(
        as_json,
        {"accepted": True, "shard_name": options["shard_name"]},
        f"shard {options['shard_name']} accepted",
    )


@cli.command()
@_connection_options
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def health(
    context: click.Context, /, envoy_config_path: Path, as_json: bool, **options: Any
) -> None:
    """Send one health check; print the director's period."""
    # A health check needs no shard descriptor: the config, when there is one, names the
    # CUDA devices to read (and lets a lost registration be renewed).
    default = context.get_parameter_source("envoy_config_path") is ParameterSource.DEFAULT
    config = None if default and not envoy_config_path.exists() else load_envoy_config(
        envoy_config_path)  # fmt: skip
    client = _client(**options)

    async def main() -> int:
        async with client:
            if config is None:
                return await client.send_health_check(
                    envoy_name=client.shard_name, is_experiment_running=False
                )
            with GpuMonitor() as monitor:
                envoy = Envoy(
                    client,
                    descriptor=config.descriptor,
                    cuda_devices=config.cuda_devices,
                    workdir=Path("."),
                    monitor=monitor,
                )
                return int(await envoy.health_check())

    period = _run_async(main)
    _emit(as_json, {"health_check_period": period}, f"next health check in {period} s")


@cli.command()
@_connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wait(as_json: bool, **options: Any) -> None:
    """Wait for the next experiment for this shard; print its name."""
    client = _client(**options)

    async def main() -> str:
        async with client:
            return await client.wait_experiment()

    name = _run_async(main)
    _emit(as_json, {"experiment_name": name}, name)


@cli.command()
@_connection_options
@click.argument("experiment_name")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    envvar=_env("WORKDIR"),
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def download(experiment_name: str, workdir: Path, as_json: bool, **options: Any) -> None:
    """Download an experiment's archive into --workdir."""
    client = _client(**options)
    workdir.mkdir(parents=True, exist_ok=True)

    async def main() -> tuple[str, int, str]:
        with _Terminal() as terminal:
            async with client:
                result = await client.download_experiment(
                    experiment_name, workdir, progress=terminal.progress(experiment_name)
                )
        return str(result.path), result.size, result.sha256

    path, size, sha256 = _run_async(main)
    _emit(
        as_json,
        {"path": path, "size": size, "sha256": sha256},
        f"{path} ({size} bytes, sha256 {sha256})",
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gpus(as_json: bool) -> None:
    """List the visible CUDA devices as health checks report them."""
    with GpuMonitor() as monitor:
        if not monitor.available:
            message = f"no GPU readings: NVML is unavailable ({monitor.unavailable_reason})"
            _emit(
                as_json,
                {"available": False, "reason": monitor.unavailable_reason, "devices": []},
                message,
            )
            return
        devices = monitor.devices()
    if as_json:
        click.echo(json.dumps({"available": True, "devices": [d.to_dict() for d in devices]}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("index", "name", "memory used / total (MiB)", "utilization", "driver", "CUDA")
    for d in devices:
        table.add_row(
            str(d.index),
            d.name,
            f"{d.memory_utilized // 2**20} / {d.memory_total // 2**20}",
            d.device_utilization,
            d.cuda_driver_version,
            d.cuda_version,
        )
    Console().print(table)


@cli.command()
def demo() -> None:
    """Run one whole envoy cycle against an in-process local director."""
    from shardclient._demo import run_demo

    run_demo(click.echo)


# -- entry point -------------------------------------------------------------------------


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups, if there is exactly one."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, ShardRefusedError):
        return EXIT_REFUSED
    if isinstance(
        exc,
        (
            EnvoyConfigError,
            EnvoyStateError,
            TLSConfigurationError,
            ShardDescriptorError,
            FileNotFoundError,
            NotADirectoryError,
            PermissionError,
        ),
    ):
        return EXIT_CONFIG
    if isinstance(exc, (DirectorUnavailableError, TLSHandshakeError)):
        return EXIT_UNREACHABLE
    return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns (and, as a script, exits with) the exit code."""
    try:
        cli.main(args=argv, prog_name="shardclient", standalone_mode=False)
    except click.exceptions.Abort:
        return 130
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"shardclient: error: {exc.format_message()}{hint}", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"shardclient: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except _Exit as done:
        if str(done):
            click.echo(f"shardclient: error: {done}", err=True)
        return done.code
    except KeyboardInterrupt:
        return 130
    except BaseException as raised:
        error = _unwrap(raised)
        if isinstance(error, _Exit):
            return error.code
        if isinstance(error, (SystemExit, KeyboardInterrupt)):
            return 130 if isinstance(error, KeyboardInterrupt) else int(error.code or 0)
        logger.debug("Failed", exc_info=error)
        text = str(error) if isinstance(error, (ShardClientError, OSError)) else repr(error)
        if isinstance(error, DirectorUnavailableError) and not isinstance(
            error, (DirectorProtocolError, DirectorTimeoutError)
        ):
            text += " (--retry-attempts sets how many times a call is tried)"
        click.echo(f"shardclient: error: {text}", err=True)
        return _exit_code(error)
    return EXIT_OK
