"""Provider core, the newer provider behaviours (PC32–PC35): Gemini's tool calls written as text,
prompt caching's second form, where an answer's cost comes from, and Kimi's finish-reason salvage.

Each test calls the real server over gRPC; the fake upstream records what arrived.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import litellm
import pydantic
import pytest

from fake_upstream import FakeUpstream, Script, Usage
from llm_client import LLMClient, LLMServiceError, pb
from llm_service.config import parse_config
from llm_service.core.pricing import route_cost_usd
from llm_service.core.types import Usage as CoreUsage
from tests.support.messages import user_msg
from tests.support.servers import ServerPath, custom_server, on_both_paths

EPHEMERAL = {"type": "ephemeral"}


def _assistant(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_ASSISTANT, parts=[pb.ContentPart(text=text)])


CONVERSATION = [user_msg("first question"), _assistant("first answer"), user_msg("second question")]


# --- PC33 ----------------------------------------------------------------------------------------


def test_pc33_anthropic_gets_two_breakpoints_and_an_uncached_suffix(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("anthropic", CONVERSATION, system="Stable rules", system_dynamic_suffix="Today is Monday", timeout=10)
    [req] = fake.requests()
    assert req.body["system"] == [
        {"type": "text", "text": "Stable rules", "cache_control": EPHEMERAL},
        {"type": "text", "text": "Today is Monday"},
    ]
    assert req.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first question"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "second question", "cache_control": EPHEMERAL}]},
    ]
    assert json.dumps(req.body).count("cache_control") == 2, "at most two breakpoints"


def test_pc33_openrouter_claude_gets_the_same_blocks_in_openai_format(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("openrouter-claude", CONVERSATION, system="Stable rules", system_dynamic_suffix="Today is Monday", timeout=10)
    [req] = fake.requests()
    assert req.body["messages"] == [
        {
            "role": "system",
            "content": [
                {"type": "text", "text": "Stable rules", "cache_control": EPHEMERAL},
                {"type": "text", "text": "Today is Monday"},
            ],
        },
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question", "cache_control": EPHEMERAL}]},
    ]


def test_pc33_the_last_message_is_marked_whatever_its_role(client: LLMClient, fake: FakeUpstream) -> None:
    events = list(client.stream("anthropic", [user_msg("question"), _assistant("Partial answer")], system="Rules", timeout=10))
    assert events[-1].kind == "finish"
    [req] = fake.requests()
    assert req.body["system"] == [{"type": "text", "text": "Rules", "cache_control": EPHEMERAL}]
    assert req.body["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Partial answer", "cache_control": EPHEMERAL}],
    }


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_pc33_other_models_get_the_suffix_joined_and_no_marker(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    result = client.complete(route, CONVERSATION, system="Stable rules", system_dynamic_suffix="Today is Monday", timeout=10)
    assert result.text
    [req] = fake.requests()
    assert "cache_control" not in json.dumps(req.body)
    if route == "openai":
        assert req.body["messages"] == [
            {"role": "system", "content": "Stable rules\n\nToday is Monday"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]
    else:  # LiteLLM puts gemini-2.0-flash's system text first in the first user turn
        assert req.body["contents"][0]["parts"][0] == {"text": "Stable rules\n\nToday is Monday"}


def test_pc33_a_suffix_alone_is_one_unmarked_block(client: LLMClient, fake: FakeUpstream) -> None:
    client.complete("anthropic", [user_msg("q")], system_dynamic_suffix="Today is Monday", timeout=10)
    [req] = fake.requests()
    assert req.body["system"] == [{"type": "text", "text": "Today is Monday"}]


# --- PC34 ----------------------------------------------------------------------------------------


def _openrouter_answer(cost: float | None) -> str:
    usage: dict[str, Any] = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    if cost is not None:
        usage["cost"] = cost
    return json.dumps(
        {
            "id": "gen-1",
            "object": "chat.completion",
            "created": 1,
            "model": "meta-llama/llama-3-8b",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "priced"}, "finish_reason": "stop"}],
            "usage": usage,
        }
    )


def _openrouter_stream(cost: float) -> tuple[str, ...]:
    base = {"id": "gen-1", "object": "chat.completion.chunk", "created": 1, "model": "meta-llama/llama-3-8b"}
    text = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "priced"}, "finish_reason": None}]}
    finish = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {
        **base,
        "choices": [],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500, "cost": cost},
    }
    return (*(f"data: {json.dumps(e)}" for e in (text, finish, usage)), "data: [DONE]")


PRICED_ROUTE = {"input": 2.0, "output": 8.0}


@on_both_paths
def test_pc34_the_providers_own_cost_wins(fake: FakeUpstream, path: ServerPath) -> None:
    fake.script(Script(body_raw=_openrouter_answer(0.0042)), Script(sse_raw=_openrouter_stream(0.0017)))
    routes = {"openrouter": {**_route(fake, "openrouter/meta-llama/llama-3-8b", "/api/v1"), "price_usd_per_mtok": PRICED_ROUTE}}
    with custom_server(fake, path=path, routes=routes) as (_, c):
        assert c.complete("openrouter", [user_msg()], timeout=10).cost_usd == pytest.approx(0.0042)
        finish = list(c.stream("openrouter", [user_msg()], timeout=10))[-1].finish
    assert finish is not None and finish.cost_usd == pytest.approx(0.0017)


@on_both_paths
def test_pc34_litellms_price_then_the_routes_price(fake: FakeUpstream, path: ServerPath) -> None:
    fake.script(*(Script(text="priced", usage=Usage(input=1000, output=500)) for _ in range(3)))
    price = {"input": 2.0, "output": 8.0, "cache_read": 0.5}
    routes = {
        "bare": {**_route(fake, "gpt-4o-mini", "/v1"), "price_usd_per_mtok": price},
        "openai": {**_route(fake, "openai/test-model", "/v1"), "price_usd_per_mtok": price},
        "unpriced": _route(fake, "openai/test-model", "/v1"),
    }
    with custom_server(fake, path=path, routes=routes) as (_, c):
        known = c.complete("bare", [user_msg()], timeout=10).cost_usd
        configured = c.complete("openai", [user_msg()], timeout=10).cost_usd
        unknown = c.complete("unpriced", [user_msg()], timeout=10).cost_usd
    prices = litellm.model_cost["gpt-4o-mini"]
    assert known == pytest.approx(1000 * prices["input_cost_per_token"] + 500 * prices["output_cost_per_token"])
    assert configured == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    assert unknown == 0.0, "0 still means unknown"


def test_pc34_route_price_splits_the_input_tokens() -> None:
    route = {"model": "openai/x", "price_usd_per_mtok": {"input": 3, "output": 15, "cache_creation": 3.75}}
    price = parse_config({"routes": {"r": route}}, "<test>", {}).routes["r"].price_usd_per_mtok
    assert price is not None
    usage = CoreUsage(input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=600_000, cache_creation_tokens=100_000)
    # 300k plain at 3, 600k cache reads at the input rate (none set), 100k created at 3.75, 100k out at 15
    assert route_cost_usd(price, usage) == pytest.approx(0.9 + 1.8 + 0.375 + 1.5)


def test_pc34_route_price_is_checked(fake: FakeUpstream) -> None:
    with pytest.raises(Exception, match=r"routes\.r\.price_usd_per_mtok\.output: expected US dollars per million tokens"):
        parse_config({"routes": {"r": {"model": "openai/x", "price_usd_per_mtok": {"output": -1}}}}, "<test>", {})
    with pytest.raises(Exception, match=r"routes\.r\.price_usd_per_mtok\.inputs"):
        parse_config({"routes": {"r": {"model": "openai/x", "price_usd_per_mtok": {"inputs": 1}}}}, "<test>", {})


def test_pc34_codex_unary_collected_from_a_stream_keeps_its_cost(fake: FakeUpstream) -> None:
    fake.script(Script(text="collected", usage=Usage(input=1000, output=500)))
    codex = _route(fake, "openai/gpt-5-codex", "/chatgpt.com/backend-api/codex")
    routes = {"codex": {**codex, "price_usd_per_mtok": PRICED_ROUTE}}
    with custom_server(fake, routes=routes) as (_, c):
        result = c.complete("codex", [user_msg()], timeout=10)
    [req] = fake.requests()
    assert req.body["stream"] is True, "served by collecting the stream (PC06)"
    assert result.text == "collected"
    prompt, completion = litellm.cost_per_token(model="gpt-5-codex", prompt_tokens=1000, completion_tokens=500)
    assert result.cost_usd == pytest.approx(prompt + completion) and result.cost_usd > 0, "LiteLLM's price, kept"


def _route(fake: FakeUpstream, model: str, base_path: str) -> dict[str, Any]:
    return {"model": model, "api_base": f"{fake.base_url}{base_path}", "key": {"env": "TEST_PROVIDER_KEY"}}


def _synth_id(name: str, args: Any) -> str:
    return "synth_" + hashlib.md5(f"{name}:{json.dumps(args, sort_keys=True)}".encode()).hexdigest()[:12]


# --- PC32 ----------------------------------------------------------------------------------------

TOOL_CODE_ANSWER = (
    "Let me check the weather.\n"
    '<tool_code>\n{"get_weather": {"days": 3, "city": "Paris"}}\n</tool_code>\n'
    '<tool_code>{"list_files": "all"}</tool_code>\n'
    "<tool_code>{not json}</tool_code>\n"
    "Back soon."
)
TOOL_CODE_CALLS = [
    (_synth_id("get_weather", {"days": 3, "city": "Paris"}), "get_weather", {"days": 3, "city": "Paris"}),
    (_synth_id("list_files", "all"), "list_files", {}),
]


def test_pc32_gemini_tool_code_text_becomes_tool_calls_in_a_stream(
    client: LLMClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Script(text=TOOL_CODE_ANSWER))  # streamed a word at a time: the tags arrive in pieces
    events = list(client.stream("gemini", [user_msg("Weather in Paris?")], timeout=10))
    deltas = [e.delta for e in events if e.kind == "text_delta"]
    assert "".join(deltas) == "Let me check the weather.\nBack soon."
    assert not any("<" in d for d in deltas), "no piece of a block reaches the caller"
    calls = [(e.tool_call.id, e.tool_call.name, json.loads(e.tool_call.arguments_json)) for e in events if e.kind == "tool_call"]
    assert calls == TOOL_CODE_CALLS
    assert [e.kind for e in events][-4:] == ["tool_call", "tool_call", "text_end", "finish"]
    assert events[-1].finish is not None and events[-1].finish.finish_reason == pb.FINISH_REASON_STOP, "as the provider sent it"
    assert fake.requests()[0].path.endswith(":streamGenerateContent")
    assert "a <tool_code> block that is not JSON was dropped" in caplog.messages


def test_pc32_gemini_tool_code_in_a_whole_answer(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text=TOOL_CODE_ANSWER))
    result = client.complete("gemini", [user_msg("Weather in Paris?")], timeout=10)
    assert result.text == "Let me check the weather.\nBack soon."
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in result.tool_calls] == TOOL_CODE_CALLS
    assert result.finish_reason == "FINISH_REASON_STOP"


def test_pc32_text_that_only_looks_like_a_tag_is_kept(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="a <tool b <tool_code> never closed", chunks=30))
    events = list(client.stream("gemini", [user_msg()], timeout=10))
    assert "".join(e.delta for e in events if e.kind == "text_delta") == "a <tool b <tool_code> never closed"
    assert not any(e.kind == "tool_call" for e in events)


def test_pc32_filter_character_by_character() -> None:
    from llm_service.core.assembly import ToolCodeFilter

    tool_code = ToolCodeFilter()
    sent = "".join(tool_code.text(ch) for ch in TOOL_CODE_ANSWER) + tool_code.flush()
    assert sent == "Let me check the weather.\nBack soon."
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in tool_code.calls] == TOOL_CODE_CALLS


# --- PC35 ----------------------------------------------------------------------------------------


class _FinishReasonModel(pydantic.BaseModel):
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


def _rejected_finish() -> Exception:
    """The error older LiteLLM raised at a stream's end for Kimi's finish reasons: pydantic's own."""
    try:
        _FinishReasonModel(finish_reason="pause_turn")  # type: ignore[arg-type]
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "failure",
    [
        _rejected_finish(),
        litellm.exceptions.APIError(500, "Error building chunks for logging/streaming usage calculation", "anthropic", "kimi-k2"),
    ],
    ids=["validation-error", "building-chunks"],
)
def test_pc35_kimi_answer_survives_litellm_rejecting_its_finish_reason(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    _fail_after_the_finish(monkeypatch, failure)
    fake.script(Script(text="All done here.", finish_reason="stop"))
    with custom_server(fake, path="litellm-path") as (_, c):  # LiteLLM's own failure: the direct path never has it
        events = list(c.stream("kimi", [user_msg()], timeout=10))
    assert "".join(e.delta for e in events if e.kind == "text_delta") == "All done here."
    assert [e.kind for e in events][-2:] == ["text_end", "finish"]
    finish = events[-1].finish
    assert finish is not None and finish.finish_reason == pb.FINISH_REASON_STOP
    assert finish.gateway.attempts == 1 and len(fake.requests()) == 1, "no retry"


def test_pc35_other_failures_after_the_finish_stay_failures(fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_after_the_finish(monkeypatch, RuntimeError("something else broke"))
    fake.script(Script(text="All done here."))
    with custom_server(fake, path="litellm-path") as (_, c), pytest.raises(LLMServiceError, match="INTERNAL"):
        list(c.stream("kimi", [user_msg()], timeout=10))


def _fail_after_the_finish(monkeypatch: pytest.MonkeyPatch, failure: Exception) -> None:
    """LiteLLM 1.106 maps unknown finish reasons to "stop" and no longer fails at the stream's end;
    the failure older versions raised there (after the finish chunk) is put back in its place."""
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    finalize = CustomStreamWrapper._finalize_completed_stream

    async def failing(self: CustomStreamWrapper, cache_hit: bool) -> Any:
        if self.sent_last_chunk:
            raise failure
        return await finalize(self, cache_hit)

    monkeypatch.setattr(CustomStreamWrapper, "_finalize_completed_stream", failing)
