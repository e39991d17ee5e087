"""The Director protocol's messages and stub, re-exported from the generated code.

Import them from here rather than from ``shardclient_proto``: this module is the
promised home, the generated package's layout is not.
"""

from shardclient_proto.openfl.director import (
    CudaDeviceInfo,
    DirectorBase,
    DirectorStub,
    ExperimentData,
    GetExperimentDataRequest,
    NodeInfo,
    SetExperimentFailedRequest,
    SetExperimentFailedResponse,
    ShardInfo,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
    UpdateShardInfoRequest,
    UpdateShardInfoResponse,
    WaitExperimentRequest,
    WaitExperimentResponse,
)

__all__ = [
    "CudaDeviceInfo",
    "DirectorBase",
    "DirectorStub",
    "ExperimentData",
    "GetExperimentDataRequest",
    "NodeInfo",
    "SetExperimentFailedRequest",
    "SetExperimentFailedResponse",
    "ShardInfo",
    "UpdateEnvoyStatusRequest",
    "UpdateEnvoyStatusResponse",
    "UpdateShardInfoRequest",
    "UpdateShardInfoResponse",
    "WaitExperimentRequest",
    "WaitExperimentResponse",
]
