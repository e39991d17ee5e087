"""OpenFL framework adapter for the federation tests' numpy model (a dict of arrays).

Travels in the experiment workspace: the frontend names it as ``np_adapter.NumpyAdapter``
and the collaborator imports it from the unpacked workspace. Runs in the openfl venv.
"""

import numpy as np
from openfl.plugins.frameworks_adapters.framework_adapter_interface import (
    FrameworkAdapterPluginInterface,
)


class NumpyAdapter(FrameworkAdapterPluginInterface):
    """The model is an object with a ``params`` dict of numpy arrays; no optimizer state."""

    @staticmethod
    def get_tensor_dict(model, optimizer=None):
        return {name: np.array(value, dtype=np.float32) for name, value in model.params.items()}

    @staticmethod
    def set_tensor_dict(model, tensor_dict, optimizer=None, device="cpu"):
        for name, value in tensor_dict.items():
            if name in model.params:
                model.params[name] = np.array(value, dtype=np.float32).reshape(
                    model.params[name].shape
                )
