"""Tools nobody on the project wrote, against a real server: grpcurl and `buf curl`, through
server reflection (v1alpha, and v1 which buf curl and newer clients ask for first)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from tests.support.paths import ROOT
from tests.support.servers import ServerThread

GRPCURL = Path(sys.executable).parent / "grpcurl"
BUF = ROOT / "protos/node_modules/.bin/buf"


def _grpcurl(target: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GRPCURL), "-plaintext", *args[:-1], target, args[-1]] if args else [str(GRPCURL), "-plaintext", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def test_grpcurl_lists_describes_and_calls_through_reflection(server: ServerThread, fake: FakeUpstream) -> None:
    listed = _grpcurl(server.target, "list").stdout.split()
    assert {"llm.v1.LLMService", "grpc.health.v1.Health"} <= set(listed)
    described = _grpcurl(server.target, "describe").stdout
    assert "rpc Stream ( .llm.v1.StreamRequest ) returns ( stream .llm.v1.StreamResponse )" in described
    models = json.loads(_grpcurl(server.target, "llm.v1.LLMService/ListModels").stdout)
    assert "openai" in {m["name"] for m in models["models"]}
    fake.script(Script(text="hello from grpcurl"))
    request = {"model": "openai", "messages": [{"role": "ROLE_USER", "parts": [{"text": "hi"}]}]}
    answer = json.loads(_grpcurl(server.target, "-d", json.dumps(request), "llm.v1.LLMService/Complete").stdout)
    assert answer["text"] == "hello from grpcurl" and answer["finish_reason"] == "FINISH_REASON_STOP"


def test_grpcurl_shows_the_error_details_decoded(server: ServerThread, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "2"}))
    request = {"model": "openai", "messages": [{"role": "ROLE_USER", "parts": [{"text": "hi"}]}], "maxRetries": 0}
    failed = _grpcurl(server.target, "-d", json.dumps(request), "llm.v1.LLMService/Complete", check=False)
    assert failed.returncode != 0
    assert "Code: ResourceExhausted" in failed.stderr
    assert '{"@type":"type.googleapis.com/google.rpc.ErrorInfo"' in failed.stderr
    assert '"reason":"UPSTREAM_RATE_LIMITED"' in failed.stderr
    assert '{"@type":"type.googleapis.com/google.rpc.RetryInfo","retry_delay":"' in failed.stderr


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
def test_buf_curl_reflects_with_either_reflection_version(server: ServerThread, protocol: str) -> None:
    base = f"http://{server.target}"
    common = [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", protocol]
    listed = subprocess.run([*common, "--list-services", base], capture_output=True, text=True, timeout=60, check=True)
    assert "llm.v1.LLMService" in listed.stdout.split()
    called = subprocess.run(
        [*common, "-d", "{}", f"{base}/llm.v1.LLMService/ListModels"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "openai" in {m["name"] for m in json.loads(called.stdout)["models"]}


def test_reflection_v1_describes_itself(server: ServerThread) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(server.target) as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="llm.v1.LLMService"),
        ]
        listed, itself, service = list(info(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "llm.v1.LLMService"} <= names
    assert itself.file_descriptor_response.file_descriptor_proto and service.file_descriptor_response.file_descriptor_proto
    assert pb.DESCRIPTOR.name.endswith("llm_service.proto")
