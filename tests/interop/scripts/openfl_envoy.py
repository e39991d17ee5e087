"""OpenFL's own Envoy, with shardclient's ShardDirectorClient in place of OpenFL's client.

Runs with the python of the openfl venv (where shardclient is installed too), from an envoy
folder holding synthetic_shard.py: the drop-in claim, exercised by OpenFL's own envoy code.
Never imported by our tests or checked by our mypy.
"""

import argparse
import logging
import sys

import openfl.component.envoy.envoy as openfl_envoy
from openfl.interface.cli import setup_logging
from synthetic_shard import SyntheticShardDescriptor

import shardclient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--root-certificate")
    parser.add_argument("--private-key")
    parser.add_argument("--certificate")
    args = parser.parse_args()
    setup_logging("info")
    logging.getLogger("shardclient").setLevel(logging.INFO)

    # The swap under test: OpenFL's Envoy builds its director client from this name.
    openfl_envoy.ShardDirectorClient = shardclient.ShardDirectorClient
    envoy = openfl_envoy.Envoy(
        shard_name=args.name,
        director_host=args.host,
        director_port=args.port,
        shard_descriptor=SyntheticShardDescriptor(seed=args.seed),
        tls=args.root_certificate is not None,
        root_certificate=args.root_certificate,
        private_key=args.private_key,
        certificate=args.certificate,
        install_requirements=False,
    )
    assert isinstance(envoy.director_client, shardclient.ShardDirectorClient)
    envoy.start()  # runs until killed
    return 0


if __name__ == "__main__":
    sys.exit(main())
