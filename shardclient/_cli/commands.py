"""The ``shardclient`` commands: run an envoy, try it out (demo), and one-shot director calls."""

from __future__ import annotations

import importlib.util
import json
import logging
import shlex
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from shardclient import EnvoyConfig, GpuMonitor
from shardclient._cli.exits import (
    EXIT_EXPERIMENT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandExit,
    describe_failure,
    exit_code,
    unwrap,
)
from shardclient._cli.options import (
    Connection,
    config_option,
    connection_options,
    env,
    envoy_setup,
)
from shardclient._cli.signals import run_async
from shardclient._cli.terminal import Terminal
from shardclient._envoy.envoy import Envoy, ExperimentResult, ExperimentSettings, Mode
from shardclient._envoy.state import HandledExperiments
from shardclient._generation import Generation
from shardclient._log import install_handler, stop_output

__all__ = ["cli", "main"]

logger = logging.getLogger("shardclient.cli")


def _emit(as_json: bool, data: dict[str, object], text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    envvar=env("LOG_LEVEL"),
    help="Default: info for run, warning for the other commands.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar=env("LOG_FORMAT"),
)
@click.version_option(package_name="shardclient")
@click.pass_context
def cli(context: click.Context, log_level: str | None, log_format: str) -> None:
    """A typed client for OpenFL's director: run a data shard's envoy, or try it out."""
    default = "info" if context.invoked_subcommand == "run" else "warning"
    install_handler(log_level or default, log_format)


@cli.command()
@connection_options
@config_option
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    envvar=env("WORKDIR"),
    help="Where experiments are unpacked and run, and the envoy keeps its state.",
)
@click.option(
    "--exec",
    "command",
    envvar=env("EXEC"),
    help="Run this command for each experiment instead of OpenFL's collaborator "
    "(split as a shell would, run without one); it gets SHARDCLIENT_ARCHIVE "
    "and SHARDCLIENT_EXPERIMENT in its environment.",
)
@click.option(
    "--download-only",
    is_flag=True,
    envvar=env("DOWNLOAD_ONLY"),
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
    connection = Connection.from_options(options)
    with GpuMonitor() as monitor:
        setup = envoy_setup(connection, envoy_config_path, config_required=True, monitor=monitor)
        if mode is Mode.COLLABORATOR:
            _check_openfl(setup.director.generation)
        config = setup.config
        assert config is not None  # required above
        workdir.mkdir(parents=True, exist_ok=True)
        handled = HandledExperiments(workdir)
        for name in rerun:
            if handled.forget(name):
                logger.info(
                    "Experiment %s will run again if the director offers it (--rerun)", name
                )
        logger.info(
            "Envoy %s: an %s director at %s (%s)",
            connection.name,
            setup.director.generation.value,
            setup.director.address,
            "--api" if connection.api != "auto" else f"the format of {config.path.name}",
        )
        settings = ExperimentSettings(
            mode=mode,
            workdir=workdir.absolute(),
            shard_name=connection.name,
            generation=setup.director.generation,
            command=argv,
            envoy_config=config.path,
            cuda_devices=config.cuda_devices if isinstance(config, EnvoyConfig) else (),
            review=config.review_experiment,
            install_requirements=config.install_requirements,
            keep_environment=keep_environment,
            keep_workspace=keep_workspace,
            start_folder=Path.cwd(),
            root_certificate=connection.root_certificate,
            private_key=connection.private_key,
            certificate=connection.certificate,
        )

        async def main() -> list[ExperimentResult]:
            with Terminal() as terminal:
                try:
                    envoy = Envoy(
                        setup.director,
                        workdir=workdir,
                        settings=settings,
                        handled=handled,
                        approve=terminal.approve,
                        progress=terminal.progress,
                    )
                    return await envoy.serve(once=once)
                finally:
                    await setup.director.close()

        results = run_async(main)
    raise CommandExit(EXIT_EXPERIMENT_FAILED if any(r.failed for r in results) else EXIT_OK)


def _check_openfl(generation: Generation) -> None:
    """Refuse to start without the OpenFL the generation's collaborator needs."""
    extra = "workflow" if generation is Generation.WORKFLOW else "openfl"
    module = "openfl.experimental.workflow" if generation is Generation.WORKFLOW else "openfl"
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is missing
        found = False
    if not found:
        raise CommandExit(
            EXIT_USAGE,
            f"OpenFL is not installed for an {generation.value} director, so there is no "
            f"collaborator to run: pip install '.[{extra}]' from shardclient's checkout (or "
            "give --exec COMMAND or --download-only)",
        )


def _split_command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise click.BadParameter(f"{exc} in {command!r}", param_hint="'--exec'") from None
    if not argv:
        raise click.BadParameter("an empty command", param_hint="'--exec'")
    return argv


@cli.command()
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def register(envoy_config_path: Path, as_json: bool, **options: Any) -> None:
    """Register the envoy once; exit 2 when the director refuses it."""
    connection = Connection.from_options(options)
    setup = envoy_setup(connection, envoy_config_path, config_required=True)

    async def main() -> None:
        try:
            await Envoy(setup.director, workdir=Path(".")).register()
        finally:
            await setup.director.close()

    run_async(main)
    _emit(
        as_json,
        {"accepted": True, "shard_name": connection.name},
        f"shard {connection.name} accepted",
    )


@cli.command()
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def health(
    context: click.Context, /, envoy_config_path: Path, as_json: bool, **options: Any
) -> None:
    """Send one health check; print the director's period."""
    # A health check needs no envoy config: one, when there is one, names the CUDA devices
    # to read (and lets a lost registration be renewed).
    given = context.get_parameter_source("envoy_config_path") is not ParameterSource.DEFAULT
    connection = Connection.from_options(options)
    with GpuMonitor() as monitor:
        setup = envoy_setup(connection, envoy_config_path, config_required=given, monitor=monitor)

        async def main() -> int:
            try:
                if setup.config is None:
                    return await setup.director.health_check(running=False)
                return int(await Envoy(setup.director, workdir=Path(".")).health_check())
            finally:
                await setup.director.close()

        period = run_async(main)
    _emit(as_json, {"health_check_period": period}, f"next health check in {period} s")


@cli.command()
@connection_options
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def wait(envoy_config_path: Path, as_json: bool, **options: Any) -> None:
    """Wait for the next experiment for this envoy; print its name."""
    setup = envoy_setup(Connection.from_options(options), envoy_config_path, config_required=False)

    async def main() -> str:
        try:
            return await setup.director.wait_experiment()
        finally:
            await setup.director.close()

    name = run_async(main)
    _emit(as_json, {"experiment_name": name}, name)


@cli.command()
@connection_options
@config_option
@click.argument("experiment_name")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    envvar=env("WORKDIR"),
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def download(
    envoy_config_path: Path, experiment_name: str, workdir: Path, as_json: bool, **options: Any
) -> None:
    """Download an experiment's archive into --workdir."""
    setup = envoy_setup(Connection.from_options(options), envoy_config_path, config_required=False)
    workdir.mkdir(parents=True, exist_ok=True)

    async def main() -> tuple[str, int, str]:
        with Terminal() as terminal:
            try:
                result = await setup.director.download_experiment(
                    experiment_name, workdir, progress=terminal.progress(experiment_name)
                )
            finally:
                await setup.director.close()
        return str(result.path), result.size, result.sha256

    path, size, sha256 = run_async(main)
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
    from shardclient._cli.demo import run_demo

    run_demo(click.echo)


# -- entry point -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns (and, as a script, exits with) the exit code."""
    code, line = _outcome(argv)
    stop_output()  # the log's last records go out before the error line
    if line:
        click.echo(f"shardclient: error: {line}", err=True)
    return code


def _outcome(argv: list[str] | None) -> tuple[int, str]:
    """The exit code and the one error line (or '') of running the command line."""
    try:
        cli.main(args=argv, prog_name="shardclient", standalone_mode=False)
    except click.exceptions.Abort:
        return 130, ""
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return EXIT_USAGE, f"{exc.format_message()}{hint}"
    except click.ClickException as exc:
        return exc.exit_code, exc.format_message()
    except CommandExit as done:
        return done.code, str(done)
    except KeyboardInterrupt:
        return 130, ""
    except BaseException as raised:
        error = unwrap(raised)
        if isinstance(error, CommandExit):
            return error.code, ""
        if isinstance(error, (SystemExit, KeyboardInterrupt)):
            return (130 if isinstance(error, KeyboardInterrupt) else int(error.code or 0)), ""
        logger.debug("Failed", exc_info=error)
        return exit_code(error), describe_failure(error)
    return EXIT_OK, ""
