"""OpenFL 1.9's Workflow-API director, built as ``fx director start`` builds it.

    python director.py -c director_config.yaml [--tls -rc CA -pk KEY -oc CERT]

Runs with the python of the 1.9 venv, in the director's folder (the config must lie there).
Started from Python rather than through ``fx``: fx offers the 1.9 ``director`` command only
after ``fx experimental activate``, which writes ~/.openfl and pip-installs tutorial
requirements. Blocks until killed. Never imported by our tests or checked by our mypy.
"""

import argparse
import os
import sys
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("-rc", "--root-certificate")
    parser.add_argument("-pk", "--private-key")
    parser.add_argument("-oc", "--certificate")
    args = parser.parse_args()

    sys.path.insert(0, os.getcwd())  # as fx's entry point does
    os.environ.setdefault("USER", "shardclient-tests")  # metaflow needs a user name

    from openfl.experimental.workflow.component.director import Director
    from openfl.experimental.workflow.transport import DirectorGRPCServer
    from openfl.utilities.logging import setup_logger

    setup_logger("info")
    config_path = Path(args.config).absolute()
    settings = (yaml.safe_load(config_path.read_text()) or {}).get("settings") or {}
    server = DirectorGRPCServer(
        director_cls=Director,
        tls=args.tls,
        root_certificate=Path(args.root_certificate).absolute() if args.tls else None,
        private_key=Path(args.private_key).absolute() if args.tls else None,
        certificate=Path(args.certificate).absolute() if args.tls else None,
        listen_host=settings["listen_host"],
        listen_port=settings["listen_port"],
        envoy_health_check_period=settings["envoy_health_check_period"],
        install_requirements=settings["install_requirements"],
        director_config=config_path,
    )
    server.start()  # the gRPC server and the experiment loop; never returns
    return 0


if __name__ == "__main__":
    sys.exit(main())
