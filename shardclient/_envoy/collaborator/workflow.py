"""The OpenFL 1.9 collaborator child: runs OpenFL's Workflow-API collaborator for one
experiment, from inside the unpacked workspace, the way OpenFL 1.9's envoy does in its own
process.

The envoy starts it in the workspace folder. As under ``fx envoy start``, the folder the
envoy was started in comes first on sys.path (the private attributes' modules are imported
from there, with the workspace as the working directory), and the workspace is importable
(the exported flow, ``src/``). OpenFL parses plan/plan.yaml, builds the collaborator with
the envoy's private attributes from the envoy config, and runs it until the aggregator ends
the flow. Exit 0 on success; any error ends it with a traceback on stderr and exit code 1
(2 for bad arguments). Only this process imports openfl.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shardclient._envoy.collaborator import PLAN, fx_import_path, run_to_exit_code
from shardclient._log import install_handler

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shardclient._envoy.collaborator.workflow")
    parser.add_argument("--envoy-name", required=True)
    parser.add_argument("--envoy-config", required=True, type=Path)
    parser.add_argument("--start-folder", required=True, type=Path)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--root-certificate", type=Path)
    parser.add_argument("--private-key", type=Path)
    parser.add_argument("--certificate", type=Path)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    fx_import_path(args.start_folder.absolute(), Path.cwd())
    from openfl.experimental.workflow.federated import Plan

    plan = Plan.parse(plan_config_path=PLAN)
    collaborator = plan.get_collaborator(
        args.envoy_name,
        args.envoy_config.absolute(),
        args.root_certificate,
        args.private_key,
        args.certificate,
        tls=args.tls,
    )
    collaborator.run()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    install_handler(args.log_level)
    return run_to_exit_code(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
