"""Fallback routes: tried in order on UNAVAILABLE, RESOURCE_EXHAUSTED or context-window errors,
only before anything was sent to the caller; the answer names the route that served it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import ServerThread, custom_server

TOO_LONG = {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}


@pytest.fixture
def chain(fake: FakeUpstream) -> Iterator[tuple[ServerThread, LLMClient]]:
    routes = {
        "primary": {
            "model": "openai/primary-model",
            "api_base": f"{fake.base_url}/v1",
            "key": {"env": "TEST_PROVIDER_KEY"},
            "fallbacks": ["keyless", "secondary", "tertiary"],
        },
        "keyless": {"model": "openai/keyless-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "UNSET_KEY_VARIABLE"}},
        "secondary": {"model": "anthropic/secondary-model", "api_base": fake.base_url, "key": {"env": "TEST_PROVIDER_KEY"}},
        "tertiary": {"model": "openai/tertiary-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
    }
    with custom_server(fake, routes=routes, retry={"transient_max_retries": 0, "rate_limit_max_retries": 0}) as pair:
        yield pair


def _models(fake: FakeUpstream) -> list[Any]:
    return [r.body["model"] for r in fake.requests()]


@pytest.mark.parametrize(
    "failure",
    [
        Script(status=503, match_model="primary-model"),
        Script(status=429, match_model="primary-model"),
        Script(status=400, error=TOO_LONG, match_model="primary-model"),
    ],
    ids=["unavailable", "rate-limited", "context-window"],
)  # fmt: skip
def test_a_failing_route_falls_back_in_order_and_says_who_answered(
    chain: tuple[ServerThread, LLMClient], fake: FakeUpstream, failure: Script
) -> None:
    srv, client = chain
    fake.script(failure, Script(text="from the secondary", match_model="secondary-model"))
    result = client.complete("primary", [user_msg()], timeout=30)
    assert (result.text, result.route) == ("from the secondary", "secondary")
    assert _models(fake) == ["primary-model", "secondary-model"], "the keyless fallback was skipped"
    assert srv.running is not None
    assert total(scrape(srv.running.metrics_port), "llm_fallbacks_total", route="primary", to="secondary") == 1


def test_streams_fall_back_before_anything_was_sent(chain: tuple[ServerThread, LLMClient], fake: FakeUpstream) -> None:
    _, client = chain
    fake.script(
        Script(status=503, match_model="primary-model"),
        Script(status=503, match_model="secondary-model"),
        Script(text="third time", match_model="tertiary-model"),
    )
    events = list(client.stream("primary", [user_msg()], timeout=30))
    finish = events[-1].finish
    assert events[-1].text == "third time" and finish is not None and finish.gateway.route == "tertiary"
    assert _models(fake) == ["primary-model", "secondary-model", "tertiary-model"]


def test_no_fallback_once_the_stream_has_sent(chain: tuple[ServerThread, LLMClient], fake: FakeUpstream) -> None:
    srv, _ = chain
    fake.script(Script(text="one two three four", disconnect_after_chunks=3, match_model="primary-model"))
    with grpc.insecure_channel(srv.target) as channel, pytest.raises(grpc.RpcError) as info:
        list(pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model="primary", messages=[user_msg()]), timeout=30))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _models(fake) == ["primary-model"]


@pytest.mark.parametrize("status", [400, 401])
def test_no_fallback_on_errors_another_route_would_repeat(
    chain: tuple[ServerThread, LLMClient], fake: FakeUpstream, status: int
) -> None:
    _, client = chain
    fake.script(Script(status=status, error={"message": "bad request"}, match_model="primary-model"))
    with pytest.raises(LLMServiceError):
        client.complete("primary", [user_msg()], timeout=30)
    assert _models(fake) == ["primary-model"]


def test_when_every_route_fails_the_last_error_is_returned(chain: tuple[ServerThread, LLMClient], fake: FakeUpstream) -> None:
    _, client = chain
    fake.script(Script(status=503, times=3))
    with pytest.raises(LLMServiceError) as info:
        client.complete("primary", [user_msg()], timeout=30)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and info.value.metadata["route"] == "primary"
    assert _models(fake) == ["primary-model", "secondary-model", "tertiary-model"]
