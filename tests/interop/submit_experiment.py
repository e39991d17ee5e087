"""Submit an experiment through OpenFL's own frontend client (DirectorClient).

Runs with the python of the openfl venv (never imported by our tests or
checked by our mypy).  Exit status 0 when the director accepted the
experiment, 1 when it answered accepted=False.
"""

import argparse
import sys

import numpy as np
from openfl.transport.grpc.director_client import DirectorClient


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--collaborator", action="append", required=True)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--root-certificate")
    parser.add_argument("--private-key")
    parser.add_argument("--certificate")
    args = parser.parse_args()

    tls = args.root_certificate is not None
    client = DirectorClient(
        client_id="",  # without TLS: the director's default client id
        director_host=args.host,
        director_port=args.port,
        tls=tls,
        root_certificate=args.root_certificate,
        private_key=args.private_key,
        certificate=args.certificate,
    )
    # set_new_experiment sends nothing unless initial_tensor_dict is non-empty.
    response = client.set_new_experiment(
        args.name,
        args.collaborator,
        args.archive,
        initial_tensor_dict={"w": np.zeros(2)},
    )
    print(f"accepted={response.accepted}")
    return 0 if response.accepted else 1


if __name__ == "__main__":
    sys.exit(main())
