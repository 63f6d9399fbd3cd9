"""Reasoning models through the real server: reasoning controls per wire format, thinking blocks
that round-trip through a tool loop, and reasoning tokens as each provider reports them.

Every test calls a real server over gRPC on both transports; the fake upstream records the exact
body each provider format received, and (as Anthropic does) refuses a request with thinking on
whose last tool-calling assistant turn lost its thinking blocks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import litellm
import pytest

from fake_upstream import FakeUpstream, Script, Usage
from fake_upstream.script import ToolCallSpec
from llm_client import LLMClient, LLMServiceError, assistant_from_events, channel_options, pb, tool_result
from llm_service.config import LimitsConfig, parse_config
from llm_service.convert import messages_from_proto
from llm_service.core.errors import InvalidRequest
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import PATHS, ServerPath, ServerThread, on_path, service_config

WEATHER = pb.Tool(name="get_weather", parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}')
TIME = pb.Tool(name="get_time", parameters_json='{"type": "object", "properties": {"tz": {"type": "string"}}}')


def _routes(fake: FakeUpstream) -> dict[str, Any]:
    key = {"env": "TEST_PROVIDER_KEY"}
    openai = {"api_base": f"{fake.base_url}/v1", "key": key}
    anthropic = {"api_base": fake.base_url, "key": key}
    return {
        "o3": {"model": "openai/o3-mini", **openai},
        "gpt5": {"model": "openai/gpt-5-mini", **openai},
        "sonnet": {"model": "anthropic/claude-sonnet-4-5", **anthropic},
        # A model LiteLLM's map does not know, declared reasoning by its route, with a default budget.
        "declared": {"model": "anthropic/claude-declared", **anthropic, "reasoning": {"supported": True, "budget_tokens": 2048}},
        "gemini-think": {"model": "gemini/gemini-2.5-flash", **anthropic},
    }


@pytest.fixture(scope="module", params=PATHS)
def rserver(fake: FakeUpstream, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """One server per path for the module, with reasoning routes beside the shared ones."""
    path: ServerPath = request.param
    srv = ServerThread(on_path(service_config(fake.base_url, routes=_routes(fake)), path))
    yield srv
    srv.stop()


@pytest.fixture
def rc(rserver: ServerThread) -> Iterator[LLMClient]:
    with LLMClient(rserver.target, options=channel_options(retries=False)) as c:
        yield c


def _only(fake: FakeUpstream) -> dict[str, Any]:
    [req] = fake.requests()
    body: dict[str, Any] = req.body
    return body


# --- reasoning controls, per wire format ---------------------------------------------------------


def test_openai_chat_gets_reasoning_effort(rc: LLMClient, fake: FakeUpstream) -> None:
    rc.complete("o3", [user_msg()], reasoning="high", timeout=10)
    body = _only(fake)
    assert body["reasoning_effort"] == "high" and "thinking" not in body
    fake.reset()
    list(rc.stream("gpt5", [user_msg()], reasoning="minimal", timeout=10))  # GPT-5 has "minimal"
    assert _only(fake)["reasoning_effort"] == "minimal"


def test_anthropic_gets_thinking_with_a_budget(rc: LLMClient, fake: FakeUpstream) -> None:
    rc.complete("sonnet", [user_msg()], reasoning=pb.Reasoning(budget_tokens=3000), timeout=10)
    body = _only(fake)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 3000}
    assert "reasoning_effort" not in body and body["max_tokens"] == 4096
    fake.reset()
    list(rc.stream("sonnet", [user_msg()], reasoning="low", timeout=10))  # an effort: LiteLLM's budget for it
    assert _only(fake)["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    fake.reset()
    rc.complete("sonnet", [user_msg()], reasoning="none", timeout=10)
    assert "thinking" not in _only(fake), "none on Anthropic: no thinking parameter at all"


def test_gemini_gets_a_thinking_config(rc: LLMClient, fake: FakeUpstream) -> None:
    rc.complete("gemini-think", [user_msg()], reasoning=pb.Reasoning(budget_tokens=2048), timeout=10)
    config = _only(fake)["generationConfig"]
    assert config["thinkingConfig"]["thinkingBudget"] == 2048


def test_route_defaults_apply_and_a_declared_model_reasons(rc: LLMClient, fake: FakeUpstream) -> None:
    rc.complete("declared", [user_msg()], timeout=10)
    assert _only(fake)["thinking"] == {"type": "enabled", "budget_tokens": 2048}, "the route's default budget"
    fake.reset()
    rc.complete("declared", [user_msg()], reasoning="medium", timeout=10)
    assert _only(fake)["thinking"] == {"type": "enabled", "budget_tokens": 2048}, "the caller's effort, as LiteLLM maps it"
    fake.reset()
    rc.complete("openai", [user_msg()], timeout=10)
    body = _only(fake)
    assert "reasoning_effort" not in body and "thinking" not in body, "no reasoning asked, none sent"


@pytest.mark.parametrize(
    ("route", "reasoning", "field"),
    [
        ("openai", "low", "reasoning"),  # openai/test-model: LiteLLM's map says it does not reason
        ("anthropic", "high", "reasoning"),
        ("o3", pb.Reasoning(budget_tokens=2048), "reasoning.budget_tokens"),  # OpenAI takes no budget
        ("o3", "minimal", "reasoning.effort"),  # o3-mini has no "minimal"
        ("o3", "none", "reasoning.effort"),
        ("sonnet", pb.Reasoning(budget_tokens=512), "reasoning.budget_tokens"),  # Anthropic's minimum is 1024
        ("sonnet", pb.Reasoning(budget_tokens=8192), "reasoning.budget_tokens"),  # not below max_tokens (4096)
        ("sonnet", pb.Reasoning(effort=pb.REASONING_EFFORT_NONE, budget_tokens=2048), "reasoning.budget_tokens"),
        ("sonnet", pb.Reasoning(budget_tokens=0), "reasoning.budget_tokens"),
        ("sonnet", "high", "reasoning.effort"),  # LiteLLM's budget for high (4096) is not below max_tokens (4096)
    ],
)
def test_what_a_route_cannot_do_is_refused_naming_the_field(
    rc: LLMClient, fake: FakeUpstream, route: str, reasoning: str | pb.Reasoning, field: str
) -> None:
    with pytest.raises(LLMServiceError) as info:
        rc.complete(route, [user_msg()], reasoning=reasoning, timeout=10)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in info.value.field_violations] == [field], info.value.message
    assert fake.requests() == [], "nothing was sent upstream"


@pytest.mark.parametrize(
    ("option", "value"), [("temperature", 0.2), ("top_p", 0.5), ("tool_choice", "required"), ("tool_choice", "get_weather")]
)
def test_what_anthropic_refuses_beside_thinking_is_refused(rc: LLMClient, fake: FakeUpstream, option: str, value: Any) -> None:
    with pytest.raises(LLMServiceError) as info:
        rc.complete("sonnet", [user_msg()], tools=[WEATHER], reasoning="low", timeout=10, **{option: value})
    assert [f for f, _ in info.value.field_violations] == [option]
    assert fake.requests() == []
    rc.complete("sonnet", [user_msg()], tools=[WEATHER], reasoning="low", temperature=1.0, top_p=0.95, tool_choice="auto")
    assert _only(fake)["thinking"]["type"] == "enabled"


def test_route_reasoning_settings_are_checked() -> None:
    def route(reasoning: Any) -> dict[str, Any]:
        return {"routes": {"r": {"model": "openai/o3-mini", "reasoning": reasoning}}}

    assert parse_config(route({"effort": "low"}), "<t>", {}).routes["r"].reasoning.effort == "low"
    with pytest.raises(Exception, match=r"routes\.r\.reasoning\.effort: expected \"none\", \"minimal\", \"low\""):
        parse_config(route({"effort": "extreme"}), "<t>", {})
    with pytest.raises(Exception, match=r"routes\.r\.reasoning\.supported: expected true or false"):
        parse_config(route({"supported": "yes"}), "<t>", {})
    with pytest.raises(
        Exception, match=r"routes\.r\.reasoning: expected defaults this route's model takes .*takes no thinking budget"
    ):
        parse_config(route({"budget_tokens": 2048}), "<t>", {})  # o3-mini takes an effort, not a budget


# --- thinking that round-trips -------------------------------------------------------------------

SIG_A = "EqQBCkYIBxgCKkBsig/A+base64=="  # signatures are opaque base64: sent back byte for byte
SIG_B = "EqQBCkYIBxgCKkBsig/B+other=="
TURN_1 = Script(
    text="",
    reasoning="The user wants weather: call the tool.",
    thinking_signature=SIG_A,
    redacted_thinking="REDACTED-opaque-1",
    tool_calls=(ToolCallSpec("get_weather", '{"city": "Paris"}', "toolu_1"),),
)
TURN_2 = Script(
    text="Checking the time too.",
    reasoning="Weather known; now the local time.",
    thinking_signature=SIG_B,
    tool_calls=(ToolCallSpec("get_time", '{"tz": "Europe/Paris"}', "toolu_2"),),
)
BLOCKS_1 = [
    {"type": "thinking", "thinking": "The user wants weather: call the tool.", "signature": SIG_A},
    {"type": "redacted_thinking", "data": "REDACTED-opaque-1"},
]
BLOCKS_2 = [{"type": "thinking", "thinking": "Weather known; now the local time.", "signature": SIG_B}]
THINKING = pb.Reasoning(budget_tokens=2048)


def test_a_tool_loop_with_thinking_sends_each_turns_blocks_back_in_order(rc: LLMClient, fake: FakeUpstream) -> None:
    question = user_msg("Weather and time in Paris?")
    fake.script(TURN_1, TURN_2, Script(text="Sunny, and it is noon."))
    events = list(rc.stream("sonnet", [question], tools=[WEATHER, TIME], reasoning=THINKING, timeout=10))
    finish = events[-1].finish
    assert finish is not None
    assert [(b.thinking, b.signature, b.redacted_data, b.provider) for b in finish.thinking_blocks] == [
        ("The user wants weather: call the tool.", SIG_A, "", "anthropic"),
        ("", "", "REDACTED-opaque-1", "anthropic"),
    ]
    turn_1 = assistant_from_events(events)
    conversation = [question, turn_1, tool_result("toolu_1", "sunny")]
    second = rc.complete("sonnet", conversation, tools=[WEATHER, TIME], reasoning=THINKING, timeout=10)
    conversation += [second.as_message(), tool_result("toolu_2", "12:00")]
    events = list(rc.stream("sonnet", conversation, tools=[WEATHER, TIME], reasoning=THINKING, timeout=10))
    assert "".join(e.delta for e in events if e.kind == "text_delta") == "Sunny, and it is noon."

    first_req, second_req, third_req = (r.body for r in fake.requests())
    assert "thinking_blocks" not in json.dumps(first_req)
    a1 = second_req["messages"][1]
    assert a1["role"] == "assistant" and a1["content"][:2] == BLOCKS_1, "signed and redacted blocks, byte for byte, first"
    assert [b["type"] for b in a1["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    a1_again, a2 = third_req["messages"][1], third_req["messages"][3]
    assert a1_again["content"][:2] == BLOCKS_1, "each turn keeps its own blocks"
    assert a2["content"][0] == BLOCKS_2[0]
    assert [b["type"] for b in a2["content"]] == ["thinking", "text", "tool_use"], "thinking before the turn's text and calls"


def test_a_turn_without_its_blocks_is_refused_as_anthropic_does(
    rc: LLMClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    call = pb.ToolCall(id="toolu_1", name="get_weather", arguments_json='{"city": "Paris"}')
    foreign = pb.ThinkingBlock(thinking="elsewhere", signature="sig-from-kimi", provider="kimi")
    for blocks in ([], [foreign]):  # none sent back, or only another provider's (dropped, with a warning)
        turn = pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call], thinking_blocks=blocks)
        with pytest.raises(LLMServiceError) as info:
            rc.complete("sonnet", [user_msg(), turn, tool_result("toolu_1", "sunny")], reasoning=THINKING, timeout=10)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    sent = [r.body["messages"][1]["content"] for r in fake.requests()]
    assert len(sent) == 2 and all(c[0]["type"] == "tool_use" for c in sent)
    assert "sig-from-kimi" not in json.dumps([r.body for r in fake.requests()])
    dropped = [r for r in caplog.records if r.getMessage() == "thinking blocks dropped: this route does not take them back"]
    assert len(dropped) == 1 and dropped[0].levelno == logging.WARNING
    assert dropped[0].__dict__["from_providers"] == "kimi"


def test_thinking_blocks_are_checked() -> None:
    unsigned = pb.Message(role=pb.ROLE_ASSISTANT, thinking_blocks=[pb.ThinkingBlock(thinking="t")])
    on_user = pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="q")], thinking_blocks=[pb.ThinkingBlock(signature="s")])
    cases = (([user_msg(), unsigned], "messages[1].thinking_blocks[0].signature"), ([on_user], "messages[0].thinking_blocks"))
    for msgs, field in cases:
        with pytest.raises(InvalidRequest) as info:
            messages_from_proto(msgs, LimitsConfig())
        assert info.value.field == field


# --- reasoning tokens ----------------------------------------------------------------------------


def test_reasoning_tokens_as_each_provider_reports_them(rc: LLMClient, rserver: ServerThread, fake: FakeUpstream) -> None:
    assert rserver.running is not None
    before = scrape(rserver.running.metrics_port)
    fake.script(
        Script(text="done", usage=Usage(input=20, output=50, reasoning=30)),  # OpenAI completion_tokens_details
        Script(text="done", usage=Usage(input=20, output=50, reasoning=30)),
        Script(text="done", usage=Usage(input=20, output=40, reasoning=12)),  # Gemini thoughtsTokenCount
        Script(text="done", reasoning="Let me think about this carefully first.", usage=Usage(input=20, output=40)),
    )
    assert rc.complete("o3", [user_msg()], timeout=10).usage.reasoning_tokens == 30
    finish = list(rc.stream("o3", [user_msg()], timeout=10))[-1].finish
    assert finish is not None and finish.usage.reasoning_tokens == 30
    gemini = rc.complete("gemini-think", [user_msg()], timeout=10).usage
    assert (gemini.reasoning_tokens, gemini.output_tokens) == (12, 40)
    claude = rc.complete("sonnet", [user_msg()], reasoning=THINKING, timeout=10)
    estimate = litellm.token_counter(text="Let me think about this carefully first.", count_response_tokens=True)
    assert claude.usage.reasoning_tokens == estimate > 0, "Anthropic: LiteLLM's count of the thinking text"
    after = scrape(rserver.running.metrics_port)
    for route, tokens in (("o3", 60), ("gemini-think", 12), ("sonnet", estimate)):
        grown = total(after, "llm_tokens_total", route=route, kind="reasoning") - total(
            before, "llm_tokens_total", route=route, kind="reasoning"
        )
        assert grown == tokens, route


INTERLEAVED = [  # Anthropic's interleaved thinking: a thinking block before each of two tool calls
    {"type": "thinking", "thinking": "First the weather.", "signature": SIG_A},
    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    {"type": "thinking", "thinking": "Then the time.", "signature": SIG_B},
    {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {"tz": "Europe/Paris"}},
]


def _interleaved_whole() -> str:
    return json.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": INTERLEAVED,
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 30, "output_tokens": 40},
        }
    )


def _interleaved_stream() -> tuple[str, ...]:
    def event(name: str, **data: Any) -> str:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}"

    start = json.loads(_interleaved_whole()) | {"content": [], "stop_reason": None}
    events = [event("message_start", message=start)]
    for i, block in enumerate(INTERLEAVED):
        if block["type"] == "thinking":
            events.append(event("content_block_start", index=i, content_block={"type": "thinking", "thinking": ""}))
            events.append(event("content_block_delta", index=i, delta={"type": "thinking_delta", "thinking": block["thinking"]}))
            events.append(
                event("content_block_delta", index=i, delta={"type": "signature_delta", "signature": block["signature"]})
            )
        else:
            events.append(event("content_block_start", index=i, content_block={**block, "input": {}}))
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            events.append(event("content_block_delta", index=i, delta=delta))
        events.append(event("content_block_stop", index=i))
    events.append(event("message_delta", delta={"stop_reason": "tool_use", "stop_sequence": None}, usage={"output_tokens": 40}))
    events.append(event("message_stop"))
    return tuple(events)


def test_interleaved_thinking_keeps_its_order(rc: LLMClient, fake: FakeUpstream) -> None:
    question = user_msg("Weather and time in Paris?")
    fake.script(Script(body_raw=_interleaved_whole()), Script(sse_raw=_interleaved_stream()), Script(text="Sunny at noon."))
    whole = rc.complete("sonnet", [question], tools=[WEATHER, TIME], reasoning=THINKING, timeout=10)
    events = list(rc.stream("sonnet", [question], tools=[WEATHER, TIME], reasoning=THINKING, timeout=10))
    expected = [(b["thinking"], b["signature"]) for b in INTERLEAVED if b["type"] == "thinking"]
    finish = events[-1].finish
    assert finish is not None
    for blocks in (whole.thinking_blocks, finish.thinking_blocks):
        assert [(b.thinking, b.signature) for b in blocks] == expected
    turn = assistant_from_events(events)
    assert turn == whole.as_message(), "the whole answer and the stream give the same turn"
    rc.complete(
        "sonnet",
        [question, turn, tool_result("toolu_1", "sunny"), tool_result("toolu_2", "12:00")],
        tools=[WEATHER, TIME],
        reasoning=THINKING,
        timeout=10,
    )
    sent = fake.requests()[-1].body["messages"][1]["content"]
    assert [b for b in sent if b["type"] == "thinking"] == [b for b in INTERLEAVED if b["type"] == "thinking"]
    assert [b["type"] for b in sent] == ["thinking", "thinking", "tool_use", "tool_use"], "in order, before the calls"


def test_a_gemini_thought_signature_round_trips_in_the_tool_call_id(rc: LLMClient, fake: FakeUpstream) -> None:
    """Gemini signs its function calls (`thoughtSignature`); LiteLLM carries the signature in the tool
    call's id, so a caller that sends the call back unchanged sends the signature back with it."""
    recorded = (Path(__file__).resolve().parent / "corpus/gemini/gemini-stream-tool-call-thought-signature.sse").read_text()
    first = json.loads(recorded.splitlines()[0][5:])["candidates"][0]["content"]["parts"][0]
    fake.script(Script(body_raw=recorded, raw_content_type="text/event-stream"), Script(text="It is France."))
    country = pb.Tool(name="get_country", parameters_json='{"type": "object", "properties": {}}')
    events = list(rc.stream("gemini-think", [user_msg("Which country?")], tools=[country], timeout=10))
    turn = assistant_from_events(events)
    assert [c.name for c in turn.tool_calls] == ["get_country"]
    rc.complete("gemini-think", [user_msg("Which country?"), turn, tool_result(turn.tool_calls[0].id, "France")], tools=[country])
    sent = fake.requests()[-1].body["contents"]
    model_turn = next(c for c in sent if c.get("role") == "model")
    call_part = next(p for p in model_turn["parts"] if "function_call" in p or "functionCall" in p)
    assert call_part.get("thoughtSignature", call_part.get("thought_signature")) == first["thoughtSignature"]


def test_the_client_names_an_unknown_effort(rc: LLMClient, fake: FakeUpstream) -> None:
    with pytest.raises(ValueError, match="unknown reasoning effort 'extreme': none, minimal, low, medium or high"):
        rc.complete("o3", [user_msg()], reasoning="extreme")
    assert fake.requests() == []
