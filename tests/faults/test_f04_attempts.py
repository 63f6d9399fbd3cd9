"""Fault 4: exact upstream attempt counts for each retry reason, and none once a stream has sent an event.

(The PC12–PC17 tests cover each rule in depth; this is the fault suite's one table.)
"""

from __future__ import annotations

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, ResourceExhausted, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import custom_server

WEATHER = pb.Tool(name="get_weather", parameters_json='{"type": "object", "properties": {}}')
NO_TOOL_ENDPOINTS = Script(status=404, error={"message": "No endpoints found that support tool use (provider routing)"})


@pytest.mark.parametrize(
    ("reason", "failures", "rpc", "route", "attempts"),
    [
        ("rate_limit", Script(status=429, times=5), "Complete", "openai", 6),
        ("transient", Script(status=502, times=3), "Complete", "openai", 4),
        ("empty_response", Script(text="", times=3), "Complete", "openai", 4),  # PC31: at most 3 retries
        ("empty_stream", Script(text="", times=3), "Stream", "anthropic", 4),
    ],
)
def test_f04_attempts_per_retry_reason(
    client: LLMClient, fake: FakeUpstream, reason: str, failures: Script, rpc: str, route: str, attempts: int
) -> None:
    fake.script(failures, Script(text="done"))
    if rpc == "Complete":
        assert client.complete(route, [user_msg()], timeout=60).attempts == attempts
    else:
        finish = list(client.stream(route, [user_msg()], timeout=60))[-1].finish
        assert finish is not None and finish.gateway.attempts == attempts
    assert len(fake.requests()) == attempts


def test_f04_attempts_for_tool_compat(fake: FakeUpstream) -> None:
    # Its own server: the switch is remembered per process for an hour.
    fake.script(NO_TOOL_ENDPOINTS, Script(text='{"assistant_response": "done", "tool_calls": []}'))
    with custom_server(fake) as (_, c):
        assert c.complete("openrouter", [user_msg()], tools=[WEATHER], timeout=60).attempts == 2
    assert len(fake.requests()) == 2


def test_f04_no_retry_after_the_first_event(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    fake.script(Script(text="a b c d e f", disconnect_after_chunks=3), Script(text="never"))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=30))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(fake.requests()) == 1


def test_f04_the_retry_budget_ends_rate_limit_retries_before_rate_limit_max_retries(fake: FakeUpstream) -> None:
    """The rule: a rate limit's retries count against the route's retry budget like any other, so
    under a persistent 429 a fresh route (10 tokens, retries while more than 5 remain) makes 5
    attempts, not the 11 that retry.rate_limit_max_retries (10) would allow. The caller still gets
    the delay the upstream asked for."""
    fake.script(Script(status=429, headers={"retry-after": "0.05"}, times=20))
    resilience = {"retry_budget_tokens": 10, "retry_budget_ratio": 0.1}
    with custom_server(fake, resilience=resilience, retry={"rate_limit_max_retries": 10}) as (_, c):
        with pytest.raises(ResourceExhausted) as info:
            c.complete("openai", [user_msg()], timeout=30)
    assert len(fake.requests()) == 5
    assert info.value.reason == "UPSTREAM_RATE_LIMITED" and info.value.retry_delay_s == pytest.approx(0.05)
