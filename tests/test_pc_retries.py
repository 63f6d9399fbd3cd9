"""Provider core, the retry engine (PC12–PC17): exact upstream attempt counts, counted at the fake upstream.

LiteLLM's own retries are off, so every request the fake upstream records is one
attempt of the service's retry engine.
"""

from __future__ import annotations

import itertools
import time
from email.utils import formatdate

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, ToolCallSpec
from llm_client import LLMClient, LLMServiceError, assistant, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.config import RetryConfig
from llm_service.core.retry import backoff_delay, delay_from_headers
from tests.support.messages import user_msg
from tests.support.servers import ServerPath, custom_server, on_both_paths


def _gaps(fake: FakeUpstream) -> list[float]:
    """Seconds between the starts of consecutive upstream attempts."""
    starts = [r.started_at for r in fake.requests()]
    return [b - a for a, b in itertools.pairwise(starts)]


# --- PC12 ----------------------------------------------------------------------------------------


def test_pc12_rate_limits_are_retried_until_success(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, times=3), Script(text="finally"))
    result = client.complete("openai", [user_msg()], timeout=30)
    assert result.text == "finally"
    assert result.attempts == 4 and len(fake.requests()) == 4


def test_pc12_rate_limit_retries_stop_at_the_configured_maximum(fake: FakeUpstream) -> None:
    fake.script(Script(status=429, times=20))
    with custom_server(fake, retry={"rate_limit_max_retries": 4}) as (_, c), pytest.raises(LLMServiceError) as info:
        c.complete("openai", [user_msg()], timeout=30)
    assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
    assert len(fake.requests()) == 5, "one attempt and four retries"


def test_pc12_caller_max_retries_lowers_the_limit(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, times=20))
    with pytest.raises(LLMServiceError):
        client.complete("openai", [user_msg()], max_retries=2, timeout=30)
    assert len(fake.requests()) == 3


def test_pc12_retry_after_ms_wins_over_retry_after(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after-ms": "400", "retry-after": "30"}), Script(text="ok"))
    client.complete("openai", [user_msg()], timeout=30)
    [gap] = _gaps(fake)
    assert 0.4 <= gap < 2.0, "waited the 400 ms asked for, not 30 s (nor the 2 s cap)"


def test_pc12_retry_after_seconds(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "0.5"}), Script(text="ok"))
    client.complete("openai", [user_msg()], timeout=30)
    [gap] = _gaps(fake)
    assert gap >= 0.5


def test_pc12_retry_after_http_date(client: LLMClient, fake: FakeUpstream) -> None:
    when = formatdate(time.time() + 2, usegmt=True)  # whole seconds: the wait is between 1 and 2 s
    fake.script(Script(status=429, headers={"retry-after": when}), Script(text="ok"))
    client.complete("openai", [user_msg()], timeout=30)
    [gap] = _gaps(fake)
    assert gap >= 0.9


def test_pc12_backoff_without_headers_doubles(fake: FakeUpstream) -> None:
    fake.script(Script(status=429, times=3), Script(text="ok"))
    with custom_server(fake, retry={"backoff_base_s": 0.1, "jitter_ratio": 0.0}) as (_, c):
        c.complete("openai", [user_msg()], timeout=30)
    gaps = _gaps(fake)
    assert len(gaps) == 3
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4


def test_pc12_delay_is_clamped_to_the_maximum(client: LLMClient, fake: FakeUpstream) -> None:
    # The test server's max_delay_s is 2 s: an upstream asking for 7 s is told 2 s.
    fake.script(Script(status=429, headers={"retry-after": "7"}))
    with pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], max_retries=0, timeout=30)
    assert info.value.retry_delay_s == pytest.approx(2.0)


def test_pc12_delay_rules() -> None:
    # In addition to the HTTP tests: the order and the clamp, exactly.
    assert delay_from_headers({"retry-after-ms": "250", "retry-after": "9"}, 120) == 0.25
    assert delay_from_headers({"retry-after": "3"}, 120) == 3.0
    assert delay_from_headers({"retry-after": "300"}, 120) == 120.0
    assert delay_from_headers({"retry-after": "-5"}, 120) == 0.0
    assert delay_from_headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 120) == 0.0
    assert delay_from_headers({"retry-after": formatdate(1000.0 + 30, usegmt=True)}, 120, now=1000.0) == 30.0
    assert delay_from_headers({"retry-after": "soon"}, 120) is None
    assert delay_from_headers({}, 120) is None
    cfg = RetryConfig(backoff_base_s=2.0, max_delay_s=120.0, jitter_ratio=0.0)
    assert [backoff_delay(i, cfg) for i in range(8)] == [2, 4, 8, 16, 32, 64, 120, 120]
    jittered = RetryConfig(backoff_base_s=2.0, max_delay_s=120.0, jitter_ratio=0.2)
    assert all(1.6 <= backoff_delay(0, jittered) <= 2.4 for _ in range(50))


# --- PC13 ----------------------------------------------------------------------------------------


def test_pc13_a_retry_never_sleeps_past_the_callers_deadline(fake: FakeUpstream) -> None:
    # The reference sleeps the 30 s and the caller sees DEADLINE_EXCEEDED with nothing to act on.
    fake.script(Script(status=429, headers={"retry-after": "30"}, times=5))
    with custom_server(fake, retry={"max_delay_s": 120}) as (_, c), pytest.raises(LLMServiceError) as info:
        c.complete("openai", [user_msg()], timeout=3)
    err = info.value
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
    assert err.retry_delay_s == pytest.approx(30.0), "RetryInfo carries the delay the upstream asked for"
    assert len(fake.requests()) == 1


def test_pc13_stream_ends_at_once_with_an_error_event_and_retry_info(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after-ms": "60000"}, times=5))
    call = stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=1.5)
    events = []
    with pytest.raises(grpc.RpcError) as info:
        events.extend(call)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert len(fake.requests()) == 1


def test_pc13_retries_that_fit_the_deadline_still_happen(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after-ms": "100"}), Script(text="ok"))
    assert client.complete("openai", [user_msg()], timeout=5).text == "ok"
    assert len(fake.requests()) == 2


# --- PC14 ----------------------------------------------------------------------------------------


def test_pc14_empty_response_is_retried_like_a_rate_limit(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=2), Script(text="there you are"))
    result = client.complete("openai", [user_msg()], timeout=30)
    assert result.text == "there you are" and result.attempts == 3
    assert len(fake.requests()) == 3


def test_pc14_empty_response_after_an_assistant_turn_returns_at_once(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=5))
    result = client.complete("openai", [user_msg(), assistant("I was saying")], timeout=30)
    assert result.text == "" and len(fake.requests()) == 1


def test_pc14_empty_response_with_finish_length_returns_at_once(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", finish_reason="length", times=5))
    result = client.complete("openai", [user_msg()], timeout=30)
    assert result.finish_reason == "FINISH_REASON_LENGTH" and len(fake.requests()) == 1


def test_pc14_empty_responses_stop_at_the_rate_limit_maximum(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=10))
    result = client.complete("openai", [user_msg()], max_retries=2, timeout=30)
    assert result.text == "" and len(fake.requests()) == 3


def test_pc14_a_tool_call_is_not_empty(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", tool_calls=(ToolCallSpec("lookup", "{}", "c1"),)))
    tool = pb.Tool(name="lookup", parameters_json='{"type": "object", "properties": {}}')
    assert len(client.complete("openai", [user_msg()], tools=[tool], timeout=30).tool_calls) == 1
    assert len(fake.requests()) == 1


# --- PC15 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc15_empty_stream_is_retried(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(Script(text="", times=2), Script(text="late but here"))
    events = list(client.stream(route, [user_msg()], timeout=30))
    assert events[-1].text == "late but here"
    assert events[-1].finish is not None and events[-1].finish.gateway.attempts == 3
    assert len(fake.requests()) == 3


def test_pc15_empty_stream_retries_stop_after_three(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=10))
    events = list(client.stream("openai", [user_msg()], timeout=30))
    assert [e.kind for e in events] == ["finish"]
    assert len(fake.requests()) == 4, "one attempt and three retries"


def test_pc15_empty_stream_with_finish_length_ends_at_once(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", finish_reason="length", times=5))
    events = list(client.stream("openai", [user_msg()], timeout=30))
    assert events[-1].finish is not None and events[-1].finish.finish_reason == pb.FINISH_REASON_LENGTH
    assert len(fake.requests()) == 1


def test_pc15_empty_stream_waits_the_short_fixed_delay(fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=2), Script(text="ok"))
    with custom_server(fake, retry={"empty_stream_delay_s": 0.3, "backoff_base_s": 5.0}) as (_, c):
        list(c.stream("openai", [user_msg()], timeout=30))
    gaps = _gaps(fake)
    assert len(gaps) == 2 and all(0.3 <= g < 5.0 for g in gaps), "the fixed delay, not the rate-limit backoff"


# --- PC16 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_pc16_transient_errors_are_retried(client: LLMClient, fake: FakeUpstream, status: int) -> None:
    fake.script(Script(status=status, times=2), Script(text="recovered"))
    result = client.complete("openai", [user_msg()], timeout=30)
    assert result.text == "recovered" and len(fake.requests()) == 3


def test_pc16_transient_retries_have_their_own_cap(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=503, times=20))
    with pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], timeout=30)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(fake.requests()) == 4, "one attempt and three retries, not the rate limit's ten"


def test_pc16_connection_errors_are_retried(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="never sent", disconnect_after_chunks=0), Script(text="second try"))
    events = list(client.stream("openai", [user_msg()], timeout=30))
    assert events[-1].text == "second try"
    assert [r.outcome for r in fake.requests()] == ["disconnected", "completed"]


@on_both_paths
def test_pc16_timeouts_are_retried(fake: FakeUpstream, path: ServerPath) -> None:
    """An attempt that outlives the route's timeout_s is retried, whichever transport timed it out."""
    routes = {"short": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "timeout_s": 0.5}}
    fake.script(Script(first_byte_delay_s=3), Script(text="quick this time"))
    with custom_server(fake, path=path, routes=routes) as (_, c):
        assert c.complete("short", [user_msg()], timeout=30).text == "quick this time"
    assert len(fake.requests()) == 2


@pytest.mark.parametrize(
    "script",
    [
        Script(status=401),
        Script(status=400, error={"message": "bad request"}),
        Script(
            status=400, error={"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}
        ),
        Script(status=400, error={"message": "content policy violation", "code": "content_policy_violation"}),
        Script(status=402, error={"message": "Insufficient credits"}),
    ],
    ids=["auth", "bad-request", "context-window", "content-policy", "insufficient-credits"],
)
def test_pc16_permanent_errors_are_never_retried(client: LLMClient, fake: FakeUpstream, script: Script) -> None:
    fake.script(script, Script(text="must not be reached"))
    with pytest.raises(LLMServiceError):
        client.complete("openai", [user_msg()], timeout=30)
    assert len(fake.requests()) == 1


# --- PC17 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_pc17_a_stream_that_sent_anything_is_never_retried(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, route: str) -> None:
    # The reference retries here and the caller gets "one two one two three four" (Hive issue #5923).
    fake.script(Script(text="one two three four", disconnect_after_chunks=4), Script(text="one two three four"))
    call = stub.Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=30)
    events = []
    with pytest.raises(grpc.RpcError) as info:
        events.extend(call)
    kinds = [e.WhichOneof("event") for e in events]
    assert "text_delta" in kinds and kinds[-1] == "error" and "finish" not in kinds
    text = "".join(e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta")
    assert "one two three four".startswith(text), "no text repeated"
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert events[-1].error.code == "UNAVAILABLE"
    assert len(fake.requests()) == 1


def test_pc17_rate_limit_before_the_first_event_is_still_retried(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429), Script(text="fine"))
    events = list(client.stream("openai", [user_msg()], timeout=30))
    assert events[-1].text == "fine" and len(fake.requests()) == 2


# --- PC30 ----------------------------------------------------------------------------------------


def test_pc30_delay_rules_jitter_then_clamp() -> None:
    import random

    from llm_service.core import errors
    from llm_service.core.retry import CallRetries, Deadline, RetryLimits, RetryReason, jittered_retry_after

    rng = random.Random(7)
    cfg = RetryConfig(backoff_base_s=2.0, max_delay_s=120.0)  # the defaults: jitter 0.25, Retry-After jitter on
    short = [jittered_retry_after(2.0, cfg, rng) for _ in range(400)]
    assert 2.0 <= min(short) < 2.2 and 3.3 < max(short) <= 3.5, "2 × U(1, 1.5) + U(0, 0.5)"
    assert jittered_retry_after(5.0, cfg, rng) == 5.0 and jittered_retry_after(30.0, cfg, rng) == 30.0, "5 s or more as given"
    assert jittered_retry_after(4.0, RetryConfig(max_delay_s=4.5), rng) <= 4.5, "clamped after the jitter"
    waits = [backoff_delay(1, cfg, rng) for _ in range(400)]
    assert 3.0 <= min(waits) < 3.2 and 4.8 < max(waits) <= 5.0, "4 s × U(0.75, 1.25)"
    assert all(backoff_delay(6, cfg, rng) <= 120.0 for _ in range(100)), "128 × jitter, clamped after it"

    retries = CallRetries(RetryLimits.for_call(cfg, 10, None, None), Deadline(None), cfg, rng)
    pushed = errors.RateLimited("slow down")
    pushed.backpressure = True
    assert all(1.0 <= retries.delay(RetryReason.RATE_LIMIT, 1, pushed) <= 2.0 for _ in range(100))


def test_pc30_a_short_retry_after_is_waited_at_least_as_asked_and_spread(fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "0.2"}, times=3), Script(text="ok"))
    with custom_server(fake, retry={"retry_after_jitter": True}) as (_, c):
        assert c.complete("openai", [user_msg()], timeout=30).text == "ok"
    gaps = _gaps(fake)
    assert len(gaps) == 3 and all(g >= 0.2 for g in gaps), "never sooner than the upstream asked"
    assert len({round(g, 3) for g in gaps}) == 3, "each wait drawn anew, so callers told the same do not come back together"


def test_pc30_backpressure_without_a_header_waits_one_to_two_seconds(fake: FakeUpstream) -> None:
    fake.script(Script(status=429, error={"type": "backpressure", "message": "proxy backpressure"}), Script(text="ok"))
    with custom_server(fake, retry={"max_delay_s": 10, "backoff_base_s": 5.0}) as (_, c):
        assert c.complete("openai", [user_msg()], timeout=30).text == "ok"
    [gap] = _gaps(fake)
    assert 1.0 <= gap < 4.0, "the backpressure wait, not the 5 s backoff"


# --- PC31 ----------------------------------------------------------------------------------------


def test_pc31_empty_whole_answers_have_their_own_cap_of_three(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=10))
    result = client.complete("openai", [user_msg()], timeout=30)
    assert result.text == "" and len(fake.requests()) == 4, "one attempt and 3 retries, not the rate limit's 10"


def test_pc31_empty_whole_answer_waits_are_unjittered_backoff(fake: FakeUpstream) -> None:
    fake.script(Script(text="", times=3), Script(text="ok"))
    with custom_server(fake, retry={"backoff_base_s": 0.2, "jitter_ratio": 0.25}) as (_, c):
        assert c.complete("openai", [user_msg()], timeout=30).text == "ok"
    gaps = _gaps(fake)
    assert [round(g, 1) for g in gaps] == [0.2, 0.4, 0.8], "base × 2^n, no jitter"


def test_pc31_an_empty_stream_right_after_a_rate_limit_waits_as_the_rate_limit_asked(fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "0.6"}), Script(text=""), Script(text="ok"))
    with custom_server(fake, retry={"empty_stream_delay_s": 0.01}) as (_, c):
        events = list(c.stream("openai", [user_msg()], timeout=30))
    assert events[-1].finish is not None
    gaps = _gaps(fake)
    assert len(gaps) == 2 and gaps[1] >= 0.6, "the empty stream after the 429 waited the 429's 0.6 s, not 0.01 s"
