"""OpenFL 1.9's own Envoy, with shardclient's EnvoyDirectorClient in place of OpenFL's.

    python openfl_envoy.py -n NAME -c envoy_config.yaml [--retry-total S]
                           [--tls -rc CA -pk KEY -oc CERT]

Runs with the python of the 1.9 venv (where shardclient is installed too), in the envoy's
folder, built as ``fx envoy start`` builds it (the folder first on sys.path: the private
attributes' module is found there). The drop-in claim, exercised by OpenFL's own envoy code:
only ``Envoy._create_envoy_dir_client`` is replaced. Blocks until killed. Never imported by our
tests or checked by our mypy.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--name", required=True)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--retry-total", type=float, default=60.0)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("-rc", "--root-certificate")
    parser.add_argument("-pk", "--private-key")
    parser.add_argument("-oc", "--certificate")
    args = parser.parse_args()

    sys.path.insert(0, os.getcwd())  # as fx's entry point does
    os.environ.setdefault("USER", "shardclient-tests")  # metaflow needs a user name

    from openfl.experimental.workflow.component.envoy import Envoy
    from openfl.utilities.logging import setup_logger

    import shardclient

    setup_logger("info")
    logging.getLogger("shardclient").setLevel(logging.INFO)
    retry = shardclient.RetryPolicy(total_timeout=args.retry_total)

    class EnvoyOnShardclient(Envoy):
        """The swap under test: OpenFL's Envoy builds its director client here."""

        def _create_envoy_dir_client(self, director_host, director_port):
            return shardclient.EnvoyDirectorClient(
                director_host=director_host,
                director_port=director_port,
                envoy_name=self.name,
                tls=self.tls,
                root_certificate=self.root_certificate,
                private_key=self.private_key,
                certificate=self.certificate,
                retry=retry,
            )

    config_path = Path(args.config).absolute()
    config = yaml.safe_load(config_path.read_text()) or {}
    envoy = EnvoyOnShardclient(
        envoy_name=args.name,
        director_host=config["settings"]["director_host"],
        director_port=config["settings"]["director_port"],
        envoy_config=config_path,
        tls=args.tls,
        root_certificate=args.root_certificate,
        private_key=args.private_key,
        certificate=args.certificate,
        install_requirements=(config.get("params") or {}).get("install_requirements", True),
    )
    assert isinstance(envoy._envoy_dir_client, shardclient.EnvoyDirectorClient)
    print(f"{args.name}: OpenFL's Envoy on shardclient.EnvoyDirectorClient (pid {os.getpid()})")
    envoy.start()  # registers, starts the heartbeat thread, then loops until killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
