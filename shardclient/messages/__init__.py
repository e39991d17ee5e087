"""The director protocols' messages and stubs, re-exported from the generated code.

This module: OpenFL 1.5-1.7's director (interactive API, package ``openfl.director``).
``shardclient.messages.workflow``: OpenFL 1.9's Workflow-API director (package
``openfl.experimental.workflow.director``); the two share message names, not messages.
Import them from here rather than from ``shardclient_proto``: this package is the promised
home, the generated package's layout is not.
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
