"""The engine alone, over a scripted transport: the attempt loop, the failure policy, fallbacks
and the plan's quirks, in milliseconds. (What the wire does is proven through the real
server elsewhere; these prove what happens between attempts.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from llm_service.config import Config, ResilienceConfig, RetryConfig, Route, parse_config
from llm_service.core import errors
from llm_service.core.assembly import StreamAssembler
from llm_service.core.engine import Engine
from llm_service.core.plan import Planner
from llm_service.core.policy import POLICIES, policy_of
from llm_service.core.request import UpstreamRequest
from llm_service.core.resilience import BreakerState, RouteHealthBook
from llm_service.core.retry import Deadline, RetryReason
from llm_service.core.settings import CoreSettings
from llm_service.core.types import CallRequest, Chunk, Finish, TextDelta, ToolSpec, Usage

Outcome = Chunk | list[Chunk | errors.LLMError] | errors.LLMError


@dataclass
class Scripted:
    """A transport that answers each attempt with the next outcome, and records what it was sent."""

    outcomes: list[Outcome]
    sent: list[UpstreamRequest] = field(default_factory=list)

    def prepare(self, route: Route, req: UpstreamRequest) -> _Request:
        return _Request(self, req)

    async def aclose(self) -> None:
        pass

    def next(self, req: UpstreamRequest) -> Outcome:
        self.sent.append(req)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, errors.LLMError):
            raise outcome
        return outcome


@dataclass
class _Request:
    owner: Scripted
    req: UpstreamRequest
    transport: str = "scripted"

    async def complete(self, deadline: Deadline) -> Chunk:
        outcome = self.owner.next(self.req)
        assert isinstance(outcome, Chunk)
        return outcome

    async def stream(self, deadline: Deadline) -> _Stream:
        outcome = self.owner.next(self.req)
        return _Stream(list(outcome) if isinstance(outcome, list) else [outcome])


@dataclass
class _Stream:
    chunks: list[Chunk | errors.LLMError]
    closed: bool = False

    async def _chunks(self) -> AsyncIterator[Chunk]:
        for chunk in self.chunks:
            if isinstance(chunk, errors.LLMError):
                raise chunk
            yield chunk

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    def fallback_usage(self, asm: StreamAssembler, finished: bool) -> Usage | None:
        return None

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class Seen:
    """The observer: what the engine reported."""

    retries: list[tuple[str, RetryReason]] = field(default_factory=list)
    billed: list[tuple[str, Usage]] = field(default_factory=list)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)
    breaker: list[tuple[str, BreakerState]] = field(default_factory=list)

    def retried(self, route: Route, reason: RetryReason) -> None:
        self.retries.append((route.name, reason))

    def used(self, route: Route, usage: Usage, cost_usd: float) -> None:
        self.billed.append((route.name, usage))

    def fell_back(self, route: Route, to: Route) -> None:
        self.fallbacks.append((route.name, to.name))

    def breaker_changed(self, route: Route, state: BreakerState) -> None:
        self.breaker.append((route.name, state))

    def deployment_changed(self, route: Route, deployment: str, up: bool, reason: str) -> None:
        pass

    def deployment_attempted(self, route: Route, deployment: str, upstream_s: float) -> None:
        pass


def _config(**route_extra: Any) -> Config:
    routes = {
        "main": {"model": "openai/gpt-test", "api_base": "http://127.0.0.1:9/v1", "fallbacks": ["spare"], **route_extra},
        "spare": {"model": "openai/gpt-spare", "api_base": "http://127.0.0.1:9/v1"},
        "minimax": {"model": "minimax/MiniMax-M2", "api_base": "http://127.0.0.1:9/v1"},
        "codex": {"model": "openai/gpt-5-codex", "api_base": "https://chatgpt.com/backend-api/codex"},
        "openrouter": {"model": "openrouter/some/model", "api_base": "http://127.0.0.1:9/api/v1"},
    }
    return parse_config({"routes": routes}, "test", {})


def _engine(outcomes: list[Outcome], *, breaker_failures: int = 1_000_000, **route_extra: Any) -> tuple[Engine, Scripted, Seen]:
    config = _config(**route_extra)
    transport = Scripted(outcomes)
    seen = Seen()
    planner = Planner(transport, transport, config.claude_code, config.hive_api_base)
    resilience = ResilienceConfig(breaker_failures=breaker_failures, retry_budget_tokens=100)
    retry = RetryConfig(backoff_base_s=0.0, jitter_ratio=0.0, empty_stream_delay_s=0.0, max_delay_s=0.05)
    settings = CoreSettings(config.routes, retry=retry, resilience=resilience)
    engine = Engine(settings, planner, RouteHealthBook(resilience, seen.breaker_changed), seen, None)
    return engine, transport, seen


def _answer(text: str = "hi", finish: str = "stop") -> Chunk:
    return Chunk(text=text, finish_reason=finish, usage=Usage(input_tokens=3, output_tokens=2), model="gpt-test")


CALL = CallRequest(messages=[{"role": "user", "content": "hello"}])


def _complete(engine: Engine, route: str = "main", call: CallRequest = CALL) -> Any:
    return asyncio.run(engine.complete(engine._routes[route], call, Deadline(5.0)))


def _stream(engine: Engine, route: str = "main", call: CallRequest = CALL) -> list[Any]:
    async def run() -> list[Any]:
        return [event async for event in engine.stream(engine._routes[route], call, Deadline(5.0))]

    return asyncio.run(run())


def test_every_error_class_has_a_failure_policy_row_of_its_own() -> None:
    def subclasses(cls: type) -> list[type]:
        found: list[type] = []
        sub: type
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    missing = [cls.__name__ for cls in [errors.LLMError, *subclasses(errors.LLMError)] if cls not in POLICIES]
    assert missing == []


def test_a_rate_limit_waits_as_the_upstream_asked_then_the_retry_answers() -> None:
    limited = errors.RateLimited("limited", upstream_status=429)
    limited.upstream_headers = {"retry-after-ms": "30"}
    engine, _transport, seen = _engine([limited, _answer("done")])
    completion = _complete(engine)
    assert (completion.text, completion.finish.gateway.attempts) == ("done", 2)
    assert seen.retries == [("main", RetryReason.RATE_LIMIT)]
    assert len(seen.billed) == 1, "only the answered attempt is billed"


def test_a_final_failure_is_not_retried_nor_moved_to_a_fallback() -> None:
    engine, transport, seen = _engine([errors.UpstreamBadRequest("bad", upstream_status=400), _answer()])
    with pytest.raises(errors.UpstreamBadRequest) as caught:
        _complete(engine)
    assert (caught.value.attempts, len(transport.sent), seen.fallbacks) == (1, 1, [])


def test_transient_failures_spent_on_the_route_move_the_call_to_its_fallback() -> None:
    down = [errors.UpstreamUnavailable("down", upstream_status=503) for _ in range(4)]
    engine, transport, seen = _engine([*down, _answer("from spare")], max_retries=3)
    completion = _complete(engine)
    assert completion.text == "from spare" and completion.finish.gateway.route == "spare"
    assert seen.fallbacks == [("main", "spare")]
    assert [r.kwargs["model"] for r in transport.sent] == ["openai/gpt-test"] * 4 + ["openai/gpt-spare"]


def test_an_empty_answer_is_retried_but_not_after_an_assistant_turn() -> None:
    engine, _, seen = _engine([_answer(""), _answer("second")])
    assert _complete(engine).text == "second"
    assert seen.retries == [("main", RetryReason.EMPTY_RESPONSE)]
    assert len(seen.billed) == 2, "the empty answer was billed too"

    engine, _transport, seen = _engine([_answer("")])
    after_assistant = CallRequest(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert _complete(engine, call=after_assistant).text == ""
    assert seen.retries == []


def test_a_stream_that_sent_an_event_is_never_retried_and_counts_against_the_route() -> None:
    engine, transport, _seen = _engine([[Chunk(text="par"), errors.UpstreamUnavailable("cut", upstream_status=200)], _answer()])
    with pytest.raises(errors.UpstreamUnavailable):
        _stream(engine)
    assert len(transport.sent) == 1
    assert engine.health.of(engine._routes["main"]).budget.tokens == 99  # the failure was taken from the budget


def test_a_stream_failing_before_its_first_event_is_retried() -> None:
    engine, _transport, _seen = _engine([[errors.UpstreamStalled("stalled")], [Chunk(text="ok"), Chunk(finish_reason="stop")]])
    events = _stream(engine)
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["ok"]
    assert isinstance(events[-1], Finish) and events[-1].gateway.attempts == 2


def test_an_open_breaker_fails_fast_without_calling_and_moves_to_the_fallback() -> None:
    down = [errors.UpstreamUnavailable("down", upstream_status=503) for _ in range(2)]
    engine, transport, seen = _engine([*down, _answer("spare 1"), _answer("spare 2")], breaker_failures=2, max_retries=1)
    assert _complete(engine).text == "spare 1"
    assert ("main", BreakerState.OPEN) in seen.breaker
    assert _complete(engine).text == "spare 2"
    assert len(transport.sent) == 4, "the open route was not called for the second call"


def test_the_plan_streams_under_codex_and_sends_minimax_whole() -> None:
    engine, transport, _seen = _engine([[Chunk(text="codex"), Chunk(finish_reason="stop")], _answer("minimax")])
    assert _complete(engine, "codex").text == "codex"
    events = _stream(engine, "minimax")
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["minimax"]
    assert [r.stream for r in transport.sent] == [True, False]


def test_openrouter_refusing_native_tools_switches_the_call_to_compatibility_mode() -> None:
    refused = errors.UpstreamNotFound("no endpoints", upstream_status=404)
    refused.native_tools_rejected = True
    reply = Chunk(text='{"tool_calls": [{"name": "lookup", "arguments": {"q": "x"}}]}', finish_reason="stop")
    engine, transport, seen = _engine([refused, reply])
    tools = (ToolSpec("lookup", "find", {"type": "object", "properties": {"q": {"type": "string"}}}),)
    completion = _complete(engine, "openrouter", CallRequest(messages=[{"role": "user", "content": "go"}], tools=tools))
    assert [c.name for c in completion.tool_calls] == ["lookup"] and completion.finish.finish_reason == "tool_calls"
    assert "tools" in transport.sent[0].kwargs and "tools" not in transport.sent[1].kwargs
    assert seen.retries == [("openrouter", RetryReason.TOOL_COMPAT)]


def test_the_policy_of_a_class_without_a_row_is_its_ancestors() -> None:
    class Narrower(errors.RateLimited):
        pass

    assert policy_of(Narrower("x")) == POLICIES[errors.RateLimited]


def test_a_route_the_direct_transport_cannot_carry_goes_to_litellm_saying_so_once(caplog: pytest.LogCaptureFixture) -> None:
    from llm_service.core.direct_transport import DirectTransport
    from llm_service.core.litellm_transport import LiteLLMTransport

    config = parse_config({"routes": {"gemini": {"model": "gemini/gemini-2.5-flash", "api_base": "http://127.0.0.1:9"}}}, "t", {})
    planner = Planner(DirectTransport(), LiteLLMTransport(), config.claude_code, config.hive_api_base)
    with caplog.at_level("WARNING"):
        plans = [planner.plan(config.routes["gemini"], CALL, streamed=True) for _ in range(3)]
    assert {p.prepared.transport for p in plans} == {"litellm"}
    declined = [r for r in caplog.records if "cannot carry it" in r.getMessage()]
    assert len(declined) == 1 and getattr(declined[0], "route", "") == "gemini"
