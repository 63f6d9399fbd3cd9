"""The API through a real server, LiteLLM and the fake upstream: both wire formats."""

from __future__ import annotations

import json

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, Usage
from llm_client import LLMClient, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import ServerThread

ROUTES = ["openai", "anthropic"]


@pytest.mark.parametrize("route", ROUTES)
def test_complete_returns_text_usage_and_finish_reason(route: str, client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="Bonjour le monde", usage=Usage(input=21, output=4), usage_mode="finish"))
    result = client.complete(route, [user_msg("Say hello in French")], timeout=10)
    assert result.text == "Bonjour le monde"
    assert result.finish_reason == "FINISH_REASON_STOP"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (21, 4)
    assert result.route == route and result.attempts == 1
    assert result.provider_model
    sent = fake.requests()[-1]
    assert not sent.body.get("stream")


@pytest.mark.parametrize("route", ROUTES)
def test_stream_sends_deltas_then_text_end_then_one_finish(route: str, client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="one two three four", usage=Usage(input=9, output=4)))
    events = list(client.stream(route, [user_msg()], timeout=10))
    kinds = [e.kind for e in events]
    assert kinds == ["text_delta"] * 4 + ["text_end", "finish"]
    assert [e.delta for e in events[:4]] == ["one ", "two ", "three ", "four"]
    assert events[-1].text == "one two three four"
    finish = events[-1].finish
    assert finish is not None
    assert finish.finish_reason == pb.FINISH_REASON_STOP
    assert (finish.usage.input_tokens, finish.usage.output_tokens) == (9, 4)
    assert finish.gateway.route == route and finish.gateway.attempts == 1
    assert fake.requests()[-1].body["stream"] is True


def test_tool_results_and_assistant_tool_calls_reach_the_upstream(client: LLMClient, fake: FakeUpstream) -> None:
    call = pb.ToolCall(id="call_1", name="get_weather", arguments_json='{"city": "Oslo", "days": 2}')
    messages = [
        user_msg("Weather in Oslo?"),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="call_1", parts=[pb.ContentPart(text="Sunny, 12C")]),
    ]
    tool = pb.Tool(name="get_weather", parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}')
    fake.script(Script(text="It is sunny."))
    assert client.complete("openai", messages, tools=[tool], timeout=10).text == "It is sunny."
    sent = fake.requests()[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo", "days": 2}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 12C"}


def test_images_by_url_and_inline_bytes_are_sent_as_image_parts(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    msg = pb.Message(
        role=pb.ROLE_USER,
        parts=[
            pb.ContentPart(text="What is this?"),
            pb.ContentPart(image_url=pb.ImageUrl(url="https://example.invalid/cat.png")),
            pb.ContentPart(inline_image=pb.InlineImage(data=b"\x89PNG", mime_type="image/png")),
        ],
    )
    fake.script(Script(text="A cat."))
    stub.Complete(pb.CompleteRequest(model="openai", messages=[msg]), timeout=10)
    content = fake.requests()[-1].body["messages"][0]["content"]
    assert content[1] == {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
    assert content[2]["image_url"]["url"] == "data:image/png;base64,iVBORw=="


def test_sampling_parameters_are_forwarded(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    req = pb.CompleteRequest(
        model="openai",
        messages=[user_msg()],
        system="Be brief.",
        max_tokens=33,
        temperature=0.5,
        top_p=0.9,
        stop_sequences=["END"],
        seed=7,
        metadata={"team": "search"},
    )
    stub.Complete(req, timeout=10)
    body = fake.requests()[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (33, 0.5, 0.9, ["END"], 7)
    assert "team" not in json.dumps(body), "caller metadata is never sent upstream"
    assert not [k for k in body if k.startswith("_")], "no LiteLLM-internal flag leaks into the body"


def test_provider_key_goes_upstream_from_server_config(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    from tests.support.servers import SENTINEL_KEY

    stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=10)
    stub.Complete(pb.CompleteRequest(model="anthropic", messages=[user_msg()]), timeout=10)
    openai_req, anthropic_req = fake.requests()[-2:]
    assert openai_req.headers["Authorization"] == f"Bearer {SENTINEL_KEY}"
    assert anthropic_req.headers["x-api-key"] == SENTINEL_KEY


def test_list_models_lists_configured_routes_and_readiness(stub: pb_grpc.LLMServiceStub, server: ServerThread) -> None:
    models = {m.name: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=5).models}
    assert server.running is not None
    assert set(models) == set(server.running.config.routes) and {"openai", "anthropic", "refused", "nokey"} <= set(models)
    assert models["anthropic"].provider == "anthropic" and models["anthropic"].provider_model == "anthropic/claude-test"
    assert models["openai"].ready and not models["nokey"].ready


def test_count_tokens_uses_litellm_counter(stub: pb_grpc.LLMServiceStub) -> None:
    short = stub.CountTokens(pb.CountTokensRequest(model="openai", messages=[user_msg("hi")]), timeout=10)
    long = stub.CountTokens(pb.CountTokensRequest(model="openai", messages=[user_msg("hello world " * 50)]), timeout=10)
    assert short.method == pb.TOKEN_COUNT_METHOD_LITELLM
    assert 0 < short.input_tokens < long.input_tokens


def test_health_and_reflection_are_served(server: object) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    target = server.target  # type: ignore[attr-defined]
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "llm.v1.LLMService"):
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        names = {s.name for s in answers[0].list_services_response.service}
        assert {"llm.v1.LLMService", "grpc.health.v1.Health"} <= names


def test_complete_and_stream_requests_have_identical_fields() -> None:
    def shape(desc: object) -> list[tuple[str, int, int]]:
        return [(f.name, f.number, f.type) for f in desc.fields]  # type: ignore[attr-defined]

    assert shape(pb.CompleteRequest.DESCRIPTOR) == shape(pb.StreamRequest.DESCRIPTOR)
