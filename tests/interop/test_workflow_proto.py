"""Our OpenFL 1.9 .proto files against the descriptors compiled into openfl 1.9 itself.

OpenFL's wheel ships only the generated ``*_pb2.py`` modules; each embeds its
FileDescriptorProto, serialized, as the literal passed to ``AddSerializedFile``. We compile
our .proto text with protoc's Python generator (the generator OpenFL used: a
``--descriptor_set_out`` would carry ``json_name`` on every field, which the Python generator
leaves out) and compare what it embeds with what openfl 1.9 embeds. Both literals are read
with ``ast``: openfl is never imported here.
"""

from __future__ import annotations

import ast
import difflib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2  # type: ignore[import-untyped,unused-ignore]  # stubs: types-protobuf, not installed
from grpc_tools import protoc

from tests.interop.openfl_director import REPO_ROOT, OpenflVenv

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]  # the first creates the venv

PROTO_ROOT = REPO_ROOT / "proto"
# our .proto (its import path) -> the generated module openfl 1.9 ships for it
FILES = {
    "openfl/protocols/base.proto": "openfl/protocols/base_pb2.py",
    "openfl/experimental/workflow/protocols/director.proto": (
        "openfl/experimental/workflow/protocols/director_pb2.py"
    ),
}
DIRECTOR_PROTO = "openfl/experimental/workflow/protocols/director.proto"
# What an envoy calls: (rpc, request, response, server-streaming)
ENVOY_METHODS = {
    "EnvoyConnectionRequest": ("SendConnectionRequest", "RequestAccepted", False),
    "WaitExperiment": ("WaitExperimentRequest", "WaitExperimentResponse", False),
    "GetExperimentData": ("GetExperimentDataRequest", "ExperimentData", True),
    "UpdateEnvoyStatus": ("UpdateEnvoyStatusRequest", "UpdateEnvoyStatusResponse", False),
}


def embedded_descriptor(pb2_source: str) -> bytes:
    """The bytes literal a generated ``*_pb2.py`` passes to ``AddSerializedFile``."""
    for node in ast.walk(ast.parse(pb2_source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            literal = ast.literal_eval(node.args[0])
            assert isinstance(literal, bytes)
            return literal
    raise AssertionError("no AddSerializedFile(...) call in the generated module")


def site_packages(venv: OpenflVenv) -> Path:
    """The 1.9 venv's site-packages (found on disk: openfl is not imported)."""
    found = sorted(venv.root.glob("lib/python*/site-packages"))
    assert len(found) == 1, f"expected one site-packages under {venv.root}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Our .proto files compiled by protoc's Python generator: name -> embedded descriptor."""
    out = tmp_path_factory.mktemp("protoc")
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", *FILES]
    assert protoc.main(args) == 0, f"protoc failed on {list(FILES)}"
    return {name: embedded_descriptor((out / pb2).read_text()) for name, pb2 in FILES.items()}


@pytest.fixture(scope="module")
def shipped(workflow_venv: OpenflVenv) -> dict[str, bytes]:
    """The descriptors openfl 1.9 was generated with: name -> embedded descriptor."""
    root = site_packages(workflow_venv)
    return {name: embedded_descriptor((root / pb2).read_text()) for name, pb2 in FILES.items()}


def parse(data: bytes) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(data)


@pytest.mark.parametrize("name", list(FILES))
def test_our_proto_compiles_to_openfl_1_9_descriptor(
    name: str, compiled: dict[str, bytes], shipped: dict[str, bytes]
) -> None:
    """The whole file: every message, field, service and option. (Today the serializations
    are byte-identical too; the test compares the parsed descriptors, which do not depend on
    the order a protoc version writes fields in.)"""
    ours, theirs = parse(compiled[name]), parse(shipped[name])
    if ours != theirs:
        diff = difflib.unified_diff(
            str(theirs).splitlines(), str(ours).splitlines(), "openfl 1.9", "ours", lineterm=""
        )
        raise AssertionError(f"{name} differs from openfl 1.9's:\n" + "\n".join(diff))


def test_envoy_methods_and_their_messages_match(
    compiled: dict[str, bytes], shipped: dict[str, bytes]
) -> None:
    """What an envoy depends on, spelled out (the full comparison above covers it too; this
    names the failing piece): the Director service's four envoy RPCs, their request and
    response types, streaming, and each of those messages field by field."""
    ours, theirs = parse(compiled[DIRECTOR_PROTO]), parse(shipped[DIRECTOR_PROTO])
    assert theirs.package == ours.package == "openfl.experimental.workflow.director"

    def director(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.ServiceDescriptorProto:
        (service,) = [s for s in file.service if s.name == "Director"]
        return service

    def methods(file: descriptor_pb2.FileDescriptorProto) -> dict[str, tuple[str, str, bool]]:
        prefix = f".{file.package}."
        return {
            m.name: (
                m.input_type.removeprefix(prefix),
                m.output_type.removeprefix(prefix),
                m.server_streaming,
            )
            for m in director(file).method
            if m.name in ENVOY_METHODS and not m.client_streaming
        }

    assert methods(theirs) == ENVOY_METHODS
    assert methods(ours) == ENVOY_METHODS

    def messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, list[tuple[object, ...]]]:
        wanted = {name for rpc in ENVOY_METHODS.values() for name in rpc[:2]}
        return {
            m.name: [(f.name, f.number, f.type, f.label, f.type_name) for f in m.field]
            for m in file.message_type
            if m.name in wanted
        }

    assert len(messages(theirs)) == 8
    assert messages(ours) == messages(theirs)
