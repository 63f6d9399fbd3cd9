"""The Python client's production channel: gRFC A6 retries of UNAVAILABLE only, honouring the server's delay."""

from __future__ import annotations

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError
from tests.conftest import ServerThread, user_msg


def test_channel_retries_unavailable_after_the_servers_retry_delay(server: ServerThread, fake: FakeUpstream) -> None:
    # The server's own transient retries (3) fail; it answers UNAVAILABLE with RetryInfo 0.8 s
    # and grpc-retry-pushback-ms: the channel waits that long, then its retry succeeds.
    fake.script(Script(status=503, headers={"retry-after": "0.8"}, times=4), Script(text="second time lucky"))
    with LLMClient(server.target) as client:
        result = client.complete("openai", [user_msg()], timeout=30)
    assert result.text == "second time lucky"
    starts = [r.started_at for r in fake.requests()]
    assert len(starts) == 5
    assert starts[4] - starts[3] >= 0.8, "the channel waited the server's delay before retrying"


def test_channel_never_retries_other_codes(server: ServerThread, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "0.1"}, times=30))
    with LLMClient(server.target) as client, pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], max_retries=1, timeout=30)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.retry_delay_s == pytest.approx(0.1)
    assert len(fake.requests()) == 2, "one gRPC call: the server's attempt and its one retry, no channel retry"


def test_errors_are_one_family_by_code(client: LLMClient, fake: FakeUpstream) -> None:
    from llm_client import FailedPrecondition, NotFound, ResourceExhausted

    with pytest.raises(NotFound) as not_found:
        client.complete("no-such-route", [user_msg()], timeout=30)
    fake.script(Script(status=401))
    with pytest.raises(FailedPrecondition):
        client.complete("openai", [user_msg()], timeout=30)
    fake.script(Script(status=429, headers={"retry-after": "0.2"}))
    with pytest.raises(ResourceExhausted) as limited:
        client.complete("openai", [user_msg()], max_retries=0, timeout=30)
    assert isinstance(not_found.value, LLMServiceError) and not_found.value.reason == "ROUTE_NOT_FOUND"
    assert limited.value.retry_delay_s == pytest.approx(0.2) and limited.value.reason == "UPSTREAM_RATE_LIMITED"


def test_async_client_completes_streams_and_raises_the_same_errors(server: ServerThread, fake: FakeUpstream) -> None:
    import asyncio

    from llm_client import AsyncLLMClient, FailedPrecondition, channel_options

    async def scenario() -> tuple[str, list[str], str]:
        async with AsyncLLMClient(server.target, options=channel_options(retries=False)) as client:
            fake.script(Script(text="async hello"), Script(text="a b"), Script(status=401))
            answer = await client.complete("openai", [user_msg()], timeout=30)
            events = [e async for e in client.stream("openai", [user_msg()], timeout=30)]
            try:
                await client.complete("openai", [user_msg()], timeout=30)
            except FailedPrecondition as err:
                return answer.text, [e.kind for e in events], err.reason
            raise AssertionError("no error")

    text, kinds, reason = asyncio.run(scenario())
    assert text == "async hello"
    assert kinds == ["text_delta", "text_delta", "text_end", "finish"]
    assert reason == "UPSTREAM_AUTH_FAILED"
