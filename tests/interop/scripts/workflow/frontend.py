"""A data scientist's side of the 1.9 federation tests: a notebook on OpenFL 1.9's
FederatedRuntime, run headless.

    python frontend.py --port P --agg-port A --collaborator NAME... [--rounds N]
                       [--tls -rc CA -pk KEY -oc CERT]

Runs with the python of the 1.9 venv, in a folder of its own (FederatedRuntime writes
./generated_workspace and ./experiment.zip; the exported module is imported by name).
Writes flow.ipynb (a numpy-only FedAvg FLSpec: start -> train on every collaborator -> join,
N rounds -> end; X, y and shard_name are the envoys' private attributes), then executes its
code cells in one namespace as a kernel would (IPython lines skipped), and prints one line
``RESULT <json>``: whether the flow finished and, per round, who trained on what, in which
process and folder. Never imported by our tests or checked by our mypy.

--agg-port: NotebookTools writes ``agg_port: auto``, which director and collaborators resolve
from the plan's hash: the same port for the same flow in every test. This makes the plan
in the experiment archive name A instead.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

# Cells marked `#| export` are what NotebookTools exports into the experiment workspace
# (src/workflow_numpy_fedavg.py), which the director's aggregator and the envoys'
# collaborators import; the others run only here.
EXPORTED = [
    "#| default_exp workflow_numpy_fedavg",
    # `pip install` lines become requirements.txt (installed nowhere: install_requirements
    # is off on both sides)
    "#| export\n\n!pip install numpy",
    '''#| export

import os
from pathlib import Path

import numpy as np

from openfl.experimental.workflow.interface import FLSpec
from openfl.experimental.workflow.placement import aggregator, collaborator


def ancestors():
    """This process's pid and its ancestors', nearest first (read from /proc)."""
    pids = [os.getpid()]
    while pids[-1] > 1:
        stat = Path(f"/proc/{pids[-1]}/stat").read_text()
        pids.append(int(stat.rsplit(")", 1)[1].split()[1]))
    return pids


class NumpyFedAvgFlow(FLSpec):
    """Federated averaging of a linear model; X, y, shard_name are private attributes."""

    def __init__(self, rounds=2, lr=0.1, local_steps=5, **kwargs):
        super().__init__(**kwargs)
        self.rounds = rounds
        self.lr = lr
        self.local_steps = local_steps
        self.weights = np.zeros(4)
        self.history = []

    @aggregator
    def start(self):
        self.collaborators = self.runtime.collaborators
        self.current_round = 0
        self.aggregator_pid = os.getpid()
        self.next(self.train, foreach="collaborators")

    @collaborator
    def train(self):
        w = self.weights.copy()
        for _ in range(self.local_steps):
            grad = 2.0 * self.X.T @ (self.X @ w - self.y) / len(self.y)
            w -= self.lr * grad
        self.local_weights = w
        self.local_loss = float(np.mean((self.X @ w - self.y) ** 2))
        self.n_samples = len(self.y)
        self.trained_on = self.shard_name  # copied out of a private attribute
        self.train_ancestors = ancestors()
        self.train_cwd = os.getcwd()  # the envoy's experiment workspace
        print(f"train: {self.input} round {self.current_round} loss {self.local_loss:.4f}")
        self.next(self.join)

    @aggregator
    def join(self, inputs):
        total = sum(i.n_samples for i in inputs)
        self.weights = sum(i.local_weights * (i.n_samples / total) for i in inputs)
        self.history.append({
            "round": self.current_round,
            "collaborators": sorted(i.input for i in inputs),
            "trained_on": sorted(i.trained_on for i in inputs),
            "train_pids": {i.input: i.train_ancestors[0] for i in inputs},
            "train_ancestors": {i.input: i.train_ancestors for i in inputs},
            "train_cwds": {i.input: i.train_cwd for i in inputs},
            "losses": {i.input: i.local_loss for i in inputs},
        })
        self.current_round += 1
        if self.current_round < self.rounds:
            self.next(self.train, foreach="collaborators")
        else:
            self.next(self.end)

    @aggregator
    def end(self):
        self.finished = True
''',
]
# Instantiated in an exported cell: NotebookTools records its literal arguments in the plan.
INSTANCE = "#| export\n\nflflow = NumpyFedAvgFlow(rounds={rounds}, checkpoint=True)"
FRONTEND = [
    """from openfl.experimental.workflow.runtime import FederatedRuntime

SETTINGS = {settings!r}
director_info = {{"director_node_fqdn": SETTINGS["host"], "director_port": SETTINGS["port"]}}
if SETTINGS["tls"]:
    director_info.update(
        cert_chain=SETTINGS["root_certificate"],
        api_cert=SETTINGS["certificate"],
        api_private_key=SETTINGS["private_key"],
    )
federated_runtime = FederatedRuntime(
    collaborators=SETTINGS["collaborators"],
    director=director_info,
    notebook_path="./flow.ipynb",
    tls=SETTINGS["tls"],
)""",
    "flflow.runtime = federated_runtime\nflflow.run()",
    """RESULT = {
    "finished": getattr(flflow, "finished", False),
    "rounds": getattr(flflow, "current_round", None),
    "weights": [float(x) for x in getattr(flflow, "weights", [])],
    "history": getattr(flflow, "history", []),
    "aggregator_pid": getattr(flflow, "aggregator_pid", None),
}""",
]


def patch_agg_port(port):
    """Make NotebookTools write ``port`` as the plan's aggregator port."""
    from openfl.experimental.workflow.notebooktools import notebook_tools

    original = notebook_tools.NotebookTools._build_plan_config

    def _build_plan_config(self, *args, **kwargs):
        config = original(self, *args, **kwargs)
        config["network"]["settings"]["agg_port"] = port
        return config

    notebook_tools.NotebookTools._build_plan_config = _build_plan_config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agg-port", type=int, required=True)
    parser.add_argument("--collaborator", action="append", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("-rc", "--root-certificate")
    parser.add_argument("-pk", "--private-key")
    parser.add_argument("-oc", "--certificate")
    args = parser.parse_args()

    os.environ.setdefault("USER", "shardclient-tests")  # metaflow needs a user name
    sys.path.insert(0, os.getcwd())  # as a kernel started here has it
    settings = {
        "host": args.host,
        "port": args.port,
        "collaborators": args.collaborator,
        "tls": args.tls,
        **{
            key: str(Path(value).absolute()) if value else None
            for key, value in (
                ("root_certificate", args.root_certificate),
                ("private_key", args.private_key),
                ("certificate", args.certificate),
            )
        },
    }
    cells = [*EXPORTED, INSTANCE.format(rounds=args.rounds)]
    cells += [cell.format(settings=settings) if "{settings" in cell else cell for cell in FRONTEND]
    notebook = new_notebook(cells=[new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # fmt: skip
    nbformat.write(notebook, "flow.ipynb")

    patch_agg_port(args.agg_port)
    namespace = {"__name__": "__main__"}
    for number, cell in enumerate(nbformat.read("flow.ipynb", as_version=4).cells):
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("!", "%"))
        )
        print(f"### cell {number}", flush=True)
        exec(compile(source, f"<flow.ipynb cell {number}>", "exec"), namespace)
    print("RESULT " + json.dumps(namespace["RESULT"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
