"""A data scientist's side of the federation tests: OpenFL's own interactive API.

Runs with the python of the openfl venv, from a dedicated working directory (FLExperiment
packs the whole directory into the experiment archive), beside np_adapter.py and synthetic_shard.py. Trains a numpy
logistic regression on every online envoy, streams the metrics, fetches the trained model and
prints one JSON line with what happened. Never imported by our tests or checked by our mypy.

  --expect NAME     wait until these envoys are online (repeatable)
  --fail            the train task raises on the collaborators
  --no-wait         submit and exit (for experiments that are expected not to finish)
  --registry        only print which envoys the director lists as online
  --remove          only remove experiment --name's data at the director (RemoveExperimentData)
"""

import argparse
import json
import sys
import time

import numpy as np
from openfl.interface.interactive_api.experiment import (
    DataInterface,
    FLExperiment,
    ModelInterface,
    TaskInterface,
)
from openfl.interface.interactive_api.federation import Federation
from synthetic_shard import FEATURES, make_data  # copied beside this script by the tests


class Model:
    def __init__(self) -> None:
        self.params = {
            "w": np.zeros((FEATURES, 1), dtype=np.float32),
            "b": np.zeros((1,), dtype=np.float32),
        }

    def predict(self, x):
        z = x @ self.params["w"] + self.params["b"]
        return 1.0 / (1.0 + np.exp(-z))


class ShardData(DataInterface):
    @property
    def shard_descriptor(self):
        return self._shard_descriptor

    @shard_descriptor.setter
    def shard_descriptor(self, shard_descriptor):
        self._shard_descriptor = shard_descriptor
        self.train = shard_descriptor.get_dataset("train")
        self.valid = shard_descriptor.get_dataset("val")

    def get_train_loader(self, **kwargs):
        return self.train

    def get_valid_loader(self, **kwargs):
        return self.valid

    def get_train_data_size(self):
        return len(self.train[0])

    def get_valid_data_size(self):
        return len(self.valid[0])


def accuracy(model, x, y) -> float:
    return float(np.mean((model.predict(x) > 0.5) == (y > 0.5)))


def build_tasks(fail: bool) -> TaskInterface:
    tasks = TaskInterface()

    @tasks.add_kwargs(lr=0.5, epochs=20)
    @tasks.register_fl_task(
        model="model", data_loader="train_loader", device="device", optimizer="optimizer"
    )
    def train(model, train_loader, optimizer, device, lr, epochs):
        if fail:
            raise RuntimeError("the train task failed on purpose (federation test)")
        x, y = train_loader
        for _ in range(epochs):
            error = model.predict(x) - y
            model.params["w"] -= lr * (x.T @ error) / len(x)
            model.params["b"] -= lr * error.mean(axis=0)
        p = np.clip(model.predict(x), 1e-6, 1 - 1e-6)
        return {"train_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))}

    @tasks.register_fl_task(model="model", data_loader="val_loader", device="device")
    def validate(model, val_loader, device):
        x, y = val_loader
        return {"accuracy": accuracy(model, x, y)}

    return tasks


def wait_for_envoys(federation: Federation, expected: list[str], deadline: float) -> None:
    """The director's GetEnvoys fails (KeyError inside it) until every registered envoy has
    called WaitExperiment: retry until all expected envoys are online."""
    while True:
        try:
            registry = federation.get_shard_registry()
            online = {name for name, info in registry.items() if info["is_online"]}
            if set(expected) <= online:
                return
        except Exception as exc:
            registry = {"error": repr(exc)}
        if time.monotonic() > deadline:
            raise SystemExit(f"envoys {expected} not online in time; registry: {registry}")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agg-port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--expect", action="append", default=[])
    parser.add_argument("--fail", action="store_true")
    parser.add_argument("--no-wait", action="store_true")
    parser.add_argument("--registry", action="store_true")
    parser.add_argument("--remove", action="store_true")
    parser.add_argument("--root-certificate")
    parser.add_argument("--private-key")
    parser.add_argument("--certificate")
    parser.add_argument("--client-id", default="frontend")
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout

    tls = args.root_certificate is not None
    federation = Federation(
        client_id=args.client_id if tls else None,
        director_node_fqdn=args.host,
        director_port=args.port,
        tls=tls,
        cert_chain=args.root_certificate,
        api_cert=args.certificate,
        api_private_key=args.private_key,
    )
    if args.remove:
        removed = federation.dir_client.remove_experiment_data(name=args.name)
        print("RESULT " + json.dumps({"removed": bool(removed)}), flush=True)
        return 0
    wait_for_envoys(federation, args.expect, deadline)
    if args.registry:
        registry = federation.get_shard_registry()
        online = sorted(name for name, info in registry.items() if info["is_online"])
        print("RESULT " + json.dumps({"online": online}), flush=True)
        return 0

    model = Model()
    initial = {name: value.copy() for name, value in model.params.items()}
    model_interface = ModelInterface(
        model=model, optimizer=None, framework_plugin="np_adapter.NumpyAdapter"
    )
    experiment = FLExperiment(federation=federation, experiment_name=args.name)
    experiment.start(
        model_provider=model_interface,
        task_keeper=build_tasks(args.fail),
        data_loader=ShardData(),
        rounds_to_train=args.rounds,
        override_config={"network.settings.agg_port": args.agg_port},
    )
    result = {"submitted": experiment.experiment_submitted, "name": args.name}
    if args.no_wait or not experiment.experiment_submitted:
        print("RESULT " + json.dumps(result), flush=True)
        return 0 if experiment.experiment_submitted else 1

    metrics = []
    for metric in federation.dir_client.stream_metrics(args.name):
        metrics.append(
            {
                key: metric[key]
                for key in ("round", "metric_origin", "task_name", "metric_name", "metric_value")
            }
        )
    status = experiment.get_experiment_status()
    while status not in ("finished", "failed") and time.monotonic() < deadline:
        time.sleep(1)
        status = experiment.get_experiment_status()

    model.params = {name: value.copy() for name, value in initial.items()}
    trained = experiment.get_last_model()
    x, y = make_data(seed=999, n=2000)  # held out: no envoy has these samples
    initial_model = Model()
    result.update(
        status=status,
        metrics=metrics,
        trained_changed=any(not np.allclose(trained.params[k], initial[k]) for k in initial),
        held_out_accuracy=accuracy(trained, x, y),
        initial_accuracy=accuracy(initial_model, x, y),
    )
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
