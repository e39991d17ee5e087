"""A synthetic shard for the federation tests: a linearly separable binary problem.

Every shard draws its samples from the same true weights (so a federation can learn them)
with a seed of its own. ``get_dataset(kind)`` returns ``(features, labels)`` as numpy arrays.
Runs in the collaborator (openfl venv), imported from the envoy's folder.
"""

import numpy as np

FEATURES = 8
TRUE_SEED = 1234


def make_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    true_w = np.random.default_rng(TRUE_SEED).normal(size=FEATURES)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    y = (x @ true_w > 0).astype(np.float32).reshape(-1, 1)
    return x, y


class SyntheticShardDescriptor:
    def __init__(self, seed: int = 1, n_samples: int = 400) -> None:
        self.seed = int(seed)
        self.n_samples = int(n_samples)

    @property
    def sample_shape(self) -> list[str]:
        return [str(FEATURES)]

    @property
    def target_shape(self) -> list[str]:
        return ["1"]

    @property
    def dataset_description(self) -> str:
        return f"synthetic linearly separable data, seed {self.seed}"

    def get_dataset(self, dataset_type: str = "train") -> tuple[np.ndarray, np.ndarray]:
        x, y = make_data(self.seed, self.n_samples)
        split = int(0.8 * len(x))
        if dataset_type == "train":
            return x[:split], y[:split]
        return x[split:], y[split:]
