"""OpenFL 1.9's Workflow-API director protocol: its envoy-facing messages and stub.

Package ``openfl.experimental.workflow.director``, service ``Director``: an envoy calls
EnvoyConnectionRequest, UpdateEnvoyStatus, WaitExperiment and GetExperimentData. The
frontend's RPCs are in the same service (``DirectorStub`` has them all).
"""

from shardclient_proto.openfl.experimental.workflow.director import (
    DirectorBase,
    DirectorStub,
    ExperimentData,
    GetExperimentDataRequest,
    RequestAccepted,
    SendConnectionRequest,
    UpdateEnvoyStatusRequest,
    UpdateEnvoyStatusResponse,
    WaitExperimentRequest,
    WaitExperimentResponse,
)

__all__ = [
    "DirectorBase",
    "DirectorStub",
    "ExperimentData",
    "GetExperimentDataRequest",
    "RequestAccepted",
    "SendConnectionRequest",
    "UpdateEnvoyStatusRequest",
    "UpdateEnvoyStatusResponse",
    "WaitExperimentRequest",
    "WaitExperimentResponse",
]
