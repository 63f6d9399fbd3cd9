"""Provider core, provider quirks (PC23–PC25): OpenRouter tool compatibility, MiniMax, Kimi's pause_turn."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, ToolCallSpec
from llm_client import LLMClient, LLMServiceError, pb
from llm_service.core.tool_compat import CompatModels
from tests.support.messages import user_msg
from tests.support.servers import custom_server

WEATHER = pb.Tool(
    name="get_weather",
    description="Weather by city",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}
    ),
)
TIME = pb.Tool(name="get_time", parameters_json='{"type": "object", "properties": {"tz": {"type": "string"}}}')
NO_TOOL_ENDPOINTS = Script(
    status=404,
    error={
        "message": "No endpoints found that support tool use. To learn more about provider routing, visit: "
        "https://openrouter.ai/docs/provider-routing",
        "code": 404,
    },
)


def _calls(tool_calls: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, json.loads(c.arguments_json)) for c in tool_calls]


# --- PC23 ----------------------------------------------------------------------------------------


def test_pc23_openrouter_without_tool_endpoints_is_retried_without_native_tools(fake: FakeUpstream) -> None:
    reply = {
        "assistant_response": "Checking the weather.",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    }
    fake.script(NO_TOOL_ENDPOINTS, Script(text=json.dumps(reply)))
    with custom_server(fake) as (_, c):
        events = list(c.stream("openrouter", [user_msg("Weather in Paris?")], system="Be brief.", tools=[WEATHER], timeout=30))
    first, second = fake.requests()
    assert "tools" in first.body and "tools" not in second.body
    system = second.body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.\n\nTool compatibility mode is active")
    assert '"name": "get_weather"' in system["content"], "the instruction lists the allowed tools"
    assert [e.kind for e in events] == ["text_delta", "tool_call", "text_end", "finish"]
    assert events[0].delta == "Checking the weather."
    assert _calls([e.tool_call for e in events if e.tool_call]) == [("get_weather", {"city": "Paris"})]
    finish = events[-1].finish
    assert finish is not None and finish.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert finish.gateway.attempts == 2


def test_pc23_the_model_is_remembered_so_later_calls_go_straight_to_compatibility_mode(fake: FakeUpstream) -> None:
    fake.script(NO_TOOL_ENDPOINTS, Script(text='{"assistant_response": "one", "tool_calls": []}'))
    fake.script(Script(text='{"assistant_response": "two", "tool_calls": []}'))
    with custom_server(fake) as (_, c):
        assert c.complete("openrouter", [user_msg()], tools=[WEATHER], timeout=30).text == "one"
        second = c.complete("openrouter", [user_msg()], tools=[WEATHER], timeout=30)
        plain = c.complete("openrouter", [user_msg()], timeout=30)  # no tools: compatibility mode does not apply
    assert second.text == "two" and second.attempts == 1 and second.finish_reason == "FINISH_REASON_STOP"
    assert [("tools" in r.body) for r in fake.requests()] == [True, False, False, False]
    assert plain.text


def test_pc23_compatibility_memory_expires_after_an_hour() -> None:
    now = [1000.0]
    models = CompatModels(clock=lambda: now[0])
    models.remember("openrouter/x")
    now[0] += 3599
    assert "openrouter/x" in models
    now[0] += 2
    assert "openrouter/x" not in models


@pytest.mark.parametrize(
    ("reply", "text", "calls"),
    [
        (
            '```json\n{"assistant_response": "fenced",'
            ' "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}\n```',
            "fenced",
            [("get_weather", {"city": "Oslo"})],
        ),
        (
            'Sure: {"content": "aliases", "tool_calls": [{"tool_name": "get_weather", "tool_input": {"city": "Rome"}},'
            ' {"function": {"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}}]}',
            "aliases",
            [("get_weather", {"city": "Rome"}), ("get_time", {"tz": "UTC"})],
        ),
        ('{"name": "get_weather", "arguments": {"city": "Lima", "days": 2}}', "", [("get_weather", {"city": "Lima", "days": 2})]),
        ('{"response": "x", "tool_call": {"name": "get_time", "input": {"tz": "CET"}}}', "x", [("get_time", {"tz": "CET"})]),
        (
            'Let me look.\n<|tool_call_start|>[get_weather(city="Bern", days=3)]<|tool_call_end|>',
            "Let me look.",
            [("get_weather", {"city": "Bern", "days": 3})],
        ),
        (
            'I will check.\nget_weather("Kyiv", 4)\n`get_time(tz="EET")`',
            "I will check.",
            [("get_weather", {"city": "Kyiv", "days": 4}), ("get_time", {"tz": "EET"})],
        ),
        ("Just a plain answer, no tools needed.", "Just a plain answer, no tools needed.", []),
        ('{"assistant_response": "", "tool_calls": [{"name": "delete_everything", "arguments": {}}]}', "", []),
        ('get_weather(city=open("/etc/passwd").read())', 'get_weather(city=open("/etc/passwd").read())', []),
    ],
    ids=[
        "fenced-json",
        "key-aliases",
        "bare-call-object",
        "single-tool-call",
        "markers",
        "plain-lines",
        "plain-text",
        "unknown-tool-dropped",
        "only-literals",
    ],
)
def test_pc23_compatibility_replies_are_parsed(
    fake: FakeUpstream, reply: str, text: str, calls: list[tuple[str, dict[str, Any]]]
) -> None:
    fake.script(NO_TOOL_ENDPOINTS, Script(text=reply))
    with custom_server(fake) as (_, c):
        result = c.complete("openrouter", [user_msg()], tools=[WEATHER, TIME], timeout=30)
    assert result.text == text
    assert _calls(result.tool_calls) == calls
    assert result.finish_reason == ("FINISH_REASON_TOOL_CALLS" if calls else "FINISH_REASON_STOP")


def test_pc23_only_openrouter_routes_switch_to_compatibility_mode(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(NO_TOOL_ENDPOINTS)
    with pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], tools=[WEATHER], timeout=30)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert len(fake.requests()) == 1


# --- PC24 ----------------------------------------------------------------------------------------


def test_pc24_minimax_streams_through_a_non_streaming_call(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="MiniMax answer", tool_calls=(ToolCallSpec("get_weather", '{"city": "Nice"}', "c1"),)))
    events = list(client.stream("minimax", [user_msg()], tools=[WEATHER], timeout=30))
    [req] = fake.requests()
    assert not req.body.get("stream"), "the upstream was asked for a whole answer"
    assert [e.kind for e in events] == ["text_delta", "tool_call", "text_end", "finish"]
    assert events[-1].text == "MiniMax answer"
    assert _calls([e.tool_call for e in events if e.tool_call]) == [("get_weather", {"city": "Nice"})]


def test_pc24_minimax_streams_get_the_same_retries(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429), Script(text="after a retry"))
    events = list(client.stream("minimax", [user_msg()], timeout=30))
    assert events[-1].text == "after a retry" and len(fake.requests()) == 2


# --- PC25 ----------------------------------------------------------------------------------------


def test_pc25_pause_turn_with_tool_calls_becomes_tool_calls(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", finish_reason="pause_turn", tool_calls=(ToolCallSpec("get_weather", '{"city": "Kyoto"}', "t1"),)))
    events = list(client.stream("kimi", [user_msg()], tools=[WEATHER], timeout=30))
    finish = events[-1].finish
    assert finish is not None and finish.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert _calls([e.tool_call for e in events if e.tool_call]) == [("get_weather", {"city": "Kyoto"})]


def test_pc25_pause_turn_without_tool_calls_becomes_stop(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="paused here", finish_reason="pause_turn"))
    assert client.complete("kimi", [user_msg()], timeout=30).finish_reason == "FINISH_REASON_STOP"
