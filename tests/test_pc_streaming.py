"""Provider core, streaming and parsing (PC18–PC22), and bad upstream output.

The fake upstream sends real SSE; LiteLLM parses it; the service assembles events.
`sse_raw` scripts send exact chunks where a provider's quirk needs them.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, ToolCallSpec, Usage
from llm_client import LLMClient, LLMServiceError, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.core.assembly import repair_json_object
from tests.support.messages import user_msg

TOOLS = [
    pb.Tool(name="get_weather", parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}'),
    pb.Tool(name="get_time", parameters_json='{"type": "object", "properties": {"tz": {"type": "string"}}}'),
]


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return "data: " + json.dumps(body)


def _tool_fragment(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> dict[str, Any]:
    frag: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        frag.update(id=call_id, type="function")
        frag["function"]["name"] = name
    return {"tool_calls": [frag]}


def _calls(events: list[Any]) -> list[tuple[str, str, Any]]:
    return [(e.tool_call.id, e.tool_call.name, json.loads(e.tool_call.arguments_json)) for e in events if e.tool_call]


# --- PC18 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc18_text_deltas_arrive_while_the_upstream_is_still_sending(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(Script(text="alpha beta gamma delta", chunk_delay_s=0.15))
    received: list[float] = []
    events = []
    for event in client.stream(route, [user_msg()], timeout=30):
        received.append(time.monotonic())
        events.append(event)
    [req] = fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None)
    assert req.ended_at is not None
    assert received[0] < req.ended_at, "the first delta reached the caller before the upstream finished"
    assert [e.delta for e in events if e.kind == "text_delta"] == ["alpha ", "beta ", "gamma ", "delta"]


def test_pc18_tool_calls_text_end_and_finish_follow_the_deltas(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="Let me check.", tool_calls=(ToolCallSpec("get_weather", '{"city": "Oslo"}', "c1"),)))
    kinds = [e.kind for e in client.stream("openai", [user_msg()], tools=TOOLS, timeout=30)]
    assert kinds == ["text_delta"] * 3 + ["tool_call", "text_end", "finish"]


# --- PC19 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic", "codex"])
def test_pc19_parallel_tool_calls_come_out_separately_in_order(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(
        Script(
            text="",
            tool_calls=(ToolCallSpec("get_weather", '{"city": "Paris"}', "c1"), ToolCallSpec("get_time", '{"tz": "UTC"}', "c2")),
        )
    )
    calls = _calls(list(client.stream(route, [user_msg()], tools=TOOLS, timeout=30)))
    assert [(name, args) for _, name, args in calls] == [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "UTC"})]
    assert len({call_id for call_id, _, _ in calls}) == 2


def test_pc19_a_new_id_opens_a_new_call_when_every_fragment_has_index_zero(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(
        Script(
            text="",
            tool_index_zero=True,
            tool_calls=(ToolCallSpec("get_weather", '{"city": "Paris"}', "c1"), ToolCallSpec("get_time", '{"tz": "UTC"}', "c2")),
        )
    )
    calls = _calls(list(client.stream("openai", [user_msg()], tools=TOOLS, timeout=30)))
    assert calls == [("c1", "get_weather", {"city": "Paris"}), ("c2", "get_time", {"tz": "UTC"})]


def test_pc19_fragments_without_id_extend_the_latest_call_and_a_resent_id_is_the_same_call(
    client: LLMClient, fake: FakeUpstream
) -> None:
    lines = (
        _openai_chunk({"role": "assistant", "content": ""}),
        _openai_chunk(_tool_fragment(0, '{"city"', "call_A", "get_weather")),
        _openai_chunk(_tool_fragment(0, ': "Rome"}')),
        _openai_chunk(_tool_fragment(0, '{"tz": ', "call_B", "get_time")),
        _openai_chunk(_tool_fragment(0, '"CET"}')),
        _openai_chunk(_tool_fragment(0, "", "call_A", "get_weather")),  # a "done" event re-sending the first id
        _openai_chunk({}, "tool_calls"),
        "data: [DONE]",
    )
    fake.script(Script(sse_raw=lines))
    calls = _calls(list(client.stream("openai", [user_msg()], tools=TOOLS, timeout=30)))
    assert calls == [("call_A", "get_weather", {"city": "Rome"}), ("call_B", "get_time", {"tz": "CET"})]


# --- PC20 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc20_truncated_tool_arguments_are_repaired(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    truncated = '{"city": "Paris", "days": 3, "notes": ["warm", "dry'
    fake.script(Script(text="", finish_reason="length", tool_calls=(ToolCallSpec("get_weather", truncated, "c1"),)))
    calls = _calls(list(client.stream(route, [user_msg()], tools=TOOLS, timeout=30)))
    assert [args for _, _, args in calls] == [{"city": "Paris", "days": 3, "notes": ["warm", "dry"]}]


def test_pc20_unrepairable_arguments_end_the_call_naming_the_tool(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", tool_calls=(ToolCallSpec("get_weather", "city=Paris", "c1"),)))
    with pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], tools=TOOLS, timeout=30)
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "TOOL_ARGUMENTS_INVALID")
    assert err.metadata["tool_name"] == "get_weather" and "get_weather" in err.message


def test_pc20_repair_rules() -> None:
    # In addition to the HTTP tests: each rule of the repair.
    assert repair_json_object('{"a": 1,') == {"a": 1}
    assert repair_json_object('{"a": 1, "b":') == {"a": 1}
    assert repair_json_object('{"a":') is None, "nothing but a dangling key: not repairable (as the reference)"
    assert repair_json_object('{"a": {"b": [1, 2') == {"a": {"b": [1, 2]}}
    assert repair_json_object('{"a": "x\\') == {"a": "x"}
    assert repair_json_object('{"a": [1, ') == {"a": [1]}
    assert repair_json_object('{"a": 1, "b": tru') == {"a": 1}
    assert repair_json_object("[1, 2") is None, "only objects"
    assert repair_json_object("not json") is None
    long_tail = '{"a": 1, "b": "' + "x" * 300 + '" garbage ' + "y" * 300
    assert repair_json_object(long_tail) is None, "no more than 256 characters are trimmed"


# --- PC21 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "usage_mode"),
    [("openai", "trailing"), ("openai", "finish"), ("anthropic", "trailing")],
    ids=["openai-usage-chunk", "openai-finish-chunk", "anthropic-summed"],
)
def test_pc21_stream_usage_from_wherever_the_provider_put_it(
    client: LLMClient, fake: FakeUpstream, route: str, usage_mode: str
) -> None:
    fake.script(Script(text="counted", usage=Usage(input=120, output=30, cached=100, cache_creation=7), usage_mode=usage_mode))
    finish = list(client.stream(route, [user_msg()], timeout=30))[-1].finish
    assert finish is not None
    u = finish.usage
    expected_creation = 7 if route == "anthropic" else 0  # OpenAI's format has no cache-creation count
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens, u.cache_creation_tokens) == (120, 30, 100, expected_creation)


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc21_complete_usage_and_cached_tokens(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(Script(text="counted", usage=Usage(input=50, output=5, cached=40)))
    u = client.complete(route, [user_msg()], timeout=30).usage
    assert (u.input_tokens, u.output_tokens, u.cached_input_tokens) == (50, 5, 40)


def test_pc21_cost_is_reported_when_litellm_can_price_the_model(client: LLMClient, fake: FakeUpstream) -> None:
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    fake.script(Script(text="priced", usage=Usage(input=1000, output=500)), Script(text="unpriced"))
    priced = client.complete("bare", [user_msg()], timeout=30)
    expected = 1000 * prices["input_cost_per_token"] + 500 * prices["output_cost_per_token"]
    assert priced.cost_usd == pytest.approx(expected)
    assert client.complete("openai", [user_msg()], timeout=30).cost_usd == 0.0, "test-model has no price: 0 means unknown"


# --- PC22 ----------------------------------------------------------------------------------------


def test_pc22_reasoning_streams_as_its_own_event(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="The answer is 4.", reasoning="two plus two is four"))
    events = list(client.stream("openai", [user_msg()], timeout=30))
    reasoning = [e.delta for e in events if e.kind == "reasoning_delta"]
    assert "".join(reasoning) == "two plus two is four" and len(reasoning) > 1
    kinds = [e.kind for e in events]
    assert kinds.index("reasoning_delta") < kinds.index("text_delta")
    assert events[-1].text == "The answer is 4."


def test_pc22_signed_thinking_blocks_are_reassembled_with_the_finish(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="Four.", reasoning="two plus two is four", thinking_signature="sig-EuYBCkQYAiJA"))
    events = list(client.stream("anthropic", [user_msg()], timeout=30))
    assert "".join(e.delta for e in events if e.kind == "reasoning_delta") == "two plus two is four"
    finish = events[-1].finish
    assert finish is not None
    assert [(b.thinking, b.signature) for b in finish.thinking_blocks] == [("two plus two is four", "sig-EuYBCkQYAiJA")]


def test_pc22_complete_returns_reasoning_and_thinking_blocks(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="Four.", reasoning="two plus two is four", thinking_signature="sig-1"))
    result = client.complete("anthropic", [user_msg()], timeout=30)
    assert result.reasoning == "two plus two is four"
    assert [(b.thinking, b.signature) for b in result.raw.thinking_blocks] == [("two plus two is four", "sig-1")]


# --- bad upstream output -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_malformed_sse_line_ends_the_stream_with_an_error_event_and_unavailable(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, route: str
) -> None:
    if route == "openai":
        lines: tuple[str, ...] = (_openai_chunk({"content": "partial "}), "data: {this is not json", _openai_chunk({}, "stop"))
    else:
        start = {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "x",
                 "content": [], "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}  # fmt: skip
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "partial "}}
        lines = tuple(f"event: {e['type']}\ndata: {json.dumps(e)}" for e in (start, block, delta))
        lines += ("event: content_block_delta\ndata: {this is not json",)
    fake.script(Script(sse_raw=lines))
    call = stub.Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=30)
    events = []
    with pytest.raises(grpc.RpcError) as info:
        events.extend(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert [e.WhichOneof("event") for e in events] == ["text_delta", "error"]
    assert events[-1].error.code == "UNAVAILABLE" and events[-1].error.reason == "UPSTREAM_BAD_RESPONSE"
    assert len(fake.requests()) == 1


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_malformed_sse_before_any_event_is_retried_then_unavailable(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    if route == "openai":
        lines: tuple[str, ...] = ("data: {this is not json",)
    else:
        lines = ("event: message_start\ndata: {this is not json",)
    fake.script(Script(sse_raw=lines, times=10))
    with pytest.raises(LLMServiceError) as info:
        list(client.stream(route, [user_msg()], max_retries=1, timeout=30))
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    assert len(fake.requests()) == 2


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_non_json_garbage_is_unavailable_with_the_upstream_status(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(Script(body_raw="<html><body>It works!</body></html>"))
    with pytest.raises(LLMServiceError) as info:
        client.complete(route, [user_msg()], max_retries=0, timeout=30)
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    assert err.metadata["upstream_status"] == "200", "the upstream answered 200 with a body that is not its format"


def test_an_html_error_page_is_unavailable_with_its_status(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=502, body_raw="<html><body>502 Bad Gateway</body></html>"))
    with pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], max_retries=0, timeout=30)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.metadata["upstream_status"] == "502"
