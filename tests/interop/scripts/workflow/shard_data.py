"""An envoy's private data: a numpy regression shard, for OpenFL 1.9's collaborator.

Copied into each envoy's folder, where the collaborator imports it (the envoy's folder is
first on its sys.path): through ``callable_func`` (make_private_attributes and its settings)
or through ``private_attributes`` (a module-level dict, which the tests append to the copy).
Not named after an installed package on purpose: it would shadow it. Never imported by our
tests or checked by our mypy.
"""

import numpy as np

TRUE_W = np.array([1.0, -2.0, 3.0, 0.5])


def make_private_attributes(shard_name, seed, n):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, TRUE_W.size))
    y = X @ TRUE_W + 0.01 * rng.normal(size=n)
    return {"X": X, "y": y, "shard_name": shard_name}
