"""The OpenFL 1.5-1.7 collaborator child: runs OpenFL's collaborator for one experiment, from
inside the unpacked workspace, the way OpenFL's envoy does in its own process.

The envoy starts it in the workspace folder with the arguments below; it builds the shard
descriptor from the envoy config, parses plan/plan.yaml, and runs the collaborator until the
aggregator ends the experiment. Exit 0 on success; any error ends it with a traceback on
stderr and exit code 1 (2 for bad arguments). Only this process imports openfl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shardclient._envoy.collaborator import PLAN, fx_import_path, run_to_exit_code
from shardclient._log import install_handler

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shardclient._envoy.collaborator.interactive")
    parser.add_argument("--shard-name", required=True)
    parser.add_argument("--envoy-config", required=True, type=Path)
    parser.add_argument("--cuda-devices", default="", help="comma-separated CUDA indices")
    parser.add_argument("--root-certificate", type=Path)
    parser.add_argument("--private-key", type=Path)
    parser.add_argument("--certificate", type=Path)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _setup_logging(level: str) -> None:
    from openfl.utilities import add_log_level

    add_log_level("METRIC", 25)  # OpenFL's components log metrics at this level
    install_handler(level)


def run(args: argparse.Namespace) -> None:
    _setup_logging(args.log_level)
    from openfl.federated import Plan

    from shardclient._config.interactive import load_envoy_config

    workspace = Path.cwd()
    config_path = args.envoy_config.absolute()
    fx_import_path(config_path.parent, workspace)
    config = load_envoy_config(config_path)
    cuda = tuple(int(index) for index in args.cuda_devices.split(",") if index)
    plan = Plan.parse(plan_config_path=PLAN)
    collaborator = plan.get_collaborator(
        args.shard_name,
        args.root_certificate,
        args.private_key,
        args.certificate,
        shard_descriptor=config.descriptor,
    )
    collaborator.set_available_devices(cuda=cuda)
    collaborator.run()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    return run_to_exit_code(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
