"""LiteLLM's start-up settings and work-arounds (PC28), proven through the real server and the fake upstream.

The work-arounds LiteLLM 1.106 no longer needs are gone; the tests here show the behaviour
they protected still holds without them. The ones it still needs are shown to take effect,
and to stop start-up when LiteLLM's internals have moved.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.core import litellm_setup


def _user(text: str = "Hello") -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text=text)])


def test_pc28_work_arounds_are_applied_once_at_start_up(server: object) -> None:
    import sys

    from litellm.llms.anthropic.chat.handler import ModelResponseIterator
    from litellm.llms.openai import openai as openai_handler

    first = litellm_setup.install()
    assert first is litellm_setup.install(), "a second install() changes nothing"
    assert first.mcp_gateway_stub and first.anthropic_malformed_sse_guard and first.no_422_param_retry
    patched: list[Any] = [
        ModelResponseIterator._handle_accumulated_json_chunk,
        getattr(openai_handler, "drop_params_from_unprocessable_entity_error"),  # noqa: B009  # not exported
    ]
    for function in patched:
        assert getattr(function, "_llm_service_patched", False)
        assert not getattr(function.__wrapped__, "_llm_service_patched", False), "wrapped once, not twice"
    assert getattr(sys.modules[litellm_setup._MCP_HANDLER_MODULE], "_llm_service_stand_in", False)


@pytest.mark.parametrize(
    ("module", "attribute"),
    [
        ("litellm.llms.anthropic.chat.handler", "ModelResponseIterator._handle_accumulated_json_chunk"),
        ("litellm.llms.anthropic.chat.handler", "ModelResponseIterator.accumulated_json"),  # the buffer the guard reads
        ("litellm.llms.openai.openai", "drop_params_from_unprocessable_entity_error"),
    ],
)
def test_pc28_moved_internals_stop_start_up_naming_the_litellm_version(
    monkeypatch: pytest.MonkeyPatch, module: str, attribute: str
) -> None:
    import importlib

    owner: Any = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    monkeypatch.setattr(litellm_setup, "_REPORT", None)
    monkeypatch.delattr(owner, name)
    with pytest.raises(litellm_setup.LiteLLMInternalsMoved) as info:
        litellm_setup.install()
    assert f"LiteLLM {litellm_setup.litellm_version()}" in str(info.value) and name in str(info.value)


def test_pc28_a_guard_that_no_longer_takes_effect_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # LiteLLM changed how a stream ends: the drain never reaches the guarded method.
    from litellm.llms.anthropic.chat.handler import ModelResponseIterator

    def quiet_end(self: Any) -> Any:
        raise StopIteration

    monkeypatch.setattr(litellm_setup, "_REPORT", None)
    monkeypatch.setattr(ModelResponseIterator, "__next__", quiet_end)
    with pytest.raises(litellm_setup.LiteLLMInternalsMoved, match="malformed-SSE guard"):
        litellm_setup.install()


# --- deleted: the Anthropic OAuth header fix -----------------------------------------------------
# LiteLLM 1.106 sends an sk-ant-oat key as Authorization: Bearer with the OAuth beta flag merged
# (llms/anthropic/common_utils.py, `optionally_handle_anthropic_oauth` and `_credential_headers`).
# tests/test_pc_routing.py (test_pc05_*) proves PC05 on both paths without the fix; this is the
# same check on both RPCs.


def test_pc28_claude_subscription_key_goes_in_bearer_alone_without_a_work_around(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream
) -> None:
    stub.Complete(pb.CompleteRequest(model="claude-subscription", messages=[_user()]), timeout=30)
    list(stub.Stream(pb.StreamRequest(model="claude-subscription", messages=[_user()]), timeout=30))
    for request in fake.requests():
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["authorization"].startswith("Bearer sk-ant-oat")
        assert "x-api-key" not in headers
        assert [b.strip() for b in headers["anthropic-beta"].split(",")].count("oauth-2025-04-20") == 1


# --- deleted: the metadata=None guard ------------------------------------------------------------
# The service never gives LiteLLM a metadata argument (core/request.py builds no such key; a
# caller's metadata only labels the log line), and LiteLLM 1.106's error mapping reads
# `extra_kwargs.get("metadata", {}) or {}` (litellm_core_utils/exception_mapping_utils.py), so a
# None there no longer crashes it.


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc28_caller_metadata_is_not_sent_and_failures_map_by_their_status(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, route: str
) -> None:
    labels = {"team": "search", "trace": "abc"}
    stub.Complete(pb.CompleteRequest(model=route, messages=[_user()], metadata=labels), timeout=30)
    fake.script(Script(status=400, error={"message": "bad request"}))
    with pytest.raises(grpc.RpcError) as info:
        stub.Complete(pb.CompleteRequest(model=route, messages=[_user()], metadata=labels, max_retries=0), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for request in fake.requests():
        assert "metadata" not in request.body


# --- kept: the MCP gateway stand-in ---------------------------------------------------------------


def test_pc28_codex_and_tool_calls_run_without_the_mcp_package(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    import importlib.util

    assert importlib.util.find_spec("mcp") is None, "the service does not install LiteLLM's proxy extras"
    tool = pb.Tool(name="lookup", description="Look up", parameters_json='{"type": "object", "properties": {}}')
    fake.script(Script(text="codex says hi"))
    answer = stub.Complete(pb.CompleteRequest(model="codex", messages=[_user()], tools=[tool]), timeout=30)
    assert answer.text == "codex says hi"
    answer = stub.Complete(pb.CompleteRequest(model="openai", messages=[_user()], tools=[tool]), timeout=30)
    assert answer.finish_reason == pb.FINISH_REASON_STOP


# --- kept: the Anthropic malformed-SSE guard -------------------------------------------------------
# tests/test_direct_vs_litellm.py::test_direct_and_litellm_transports_fail_alike_on_bad_streams[anthropic-malformed]
# fails without it: LiteLLM's path then ends the stream as cut short instead of as not its wire format.


# --- kept: the 422 parameter-retry guard -----------------------------------------------------------


@pytest.mark.parametrize("rpc", ["complete", "stream"])
def test_pc28_a_422_fails_as_itself_once_never_as_an_empty_answer(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, rpc: str
) -> None:
    fake.script(Script(status=422, error={"message": "Unprocessable: 'seed' is not supported"}, times=3))
    with pytest.raises(grpc.RpcError) as info:
        if rpc == "complete":
            stub.Complete(pb.CompleteRequest(model="openai", messages=[_user()], seed=7, max_retries=0), timeout=30)
        else:
            list(stub.Stream(pb.StreamRequest(model="openai", messages=[_user()], seed=7, max_retries=0), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fake.requests()) == 1, "LiteLLM does not resend the request without the parameters it guessed"
