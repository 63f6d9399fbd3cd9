"""Fault 3: an upstream that goes silent mid-stream, or sends only keep-alive comments."""

from __future__ import annotations

import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import ServerPath, custom_server, on_both_paths

IDLE_S = 0.5
MARGIN_S = 0.5  # scheduling slack on a shared machine; the stall itself lasts 30 s


@on_both_paths
@pytest.mark.parametrize("keepalive_comments", [False, True], ids=["silent", "keepalive-comments-only"])
@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_f03_stall_mid_stream_ends_with_an_error_event_and_unavailable(
    fake: FakeUpstream, route: str, keepalive_comments: bool, path: ServerPath
) -> None:
    """On both transports: the direct path's idle watchdog, and LiteLLM's path's per-chunk idle bound."""
    _assert_the_stall_ends_the_stream(fake, path, route, keepalive_comments)


@pytest.mark.parametrize("route", ["gemini"])
def test_f03_stall_on_a_route_only_litellm_serves_ends_the_same_way(fake: FakeUpstream, route: str) -> None:
    """A route with no direct path (Gemini, like Ollama and Codex) has LiteLLM's per-chunk idle bound
    as its only protection against a silent upstream."""
    _assert_the_stall_ends_the_stream(fake, "litellm-path", route, keepalive_comments=False)


def _assert_the_stall_ends_the_stream(fake: FakeUpstream, path: ServerPath, route: str, keepalive_comments: bool) -> None:
    """The upstream stalls after three chunks: the caller gets the text so far, then an UPSTREAM_STALLED
    error event and UNAVAILABLE within the idle timeout (plus slack), and the upstream request is closed."""
    known = {
        "openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1"},
        "anthropic": {"model": "anthropic/claude-test", "api_base": fake.base_url},
        "gemini": {"model": "gemini/gemini-2.0-flash", "api_base": fake.base_url, "key": {"env": "TEST_PROVIDER_KEY"}},
    }
    routes = {route: known[route] | {"idle_timeout_s": IDLE_S}}
    fake.script(Script(text="one two three four five", stall_after_chunks=3, stall_s=30, keepalive_comments=keepalive_comments))
    with custom_server(fake, path=path, routes=routes) as (srv, _), grpc.insecure_channel(srv.target) as channel:
        call = pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=60)
        events = []
        with pytest.raises(grpc.RpcError) as info:
            for event in call:
                if event.WhichOneof("event") == "text_delta":
                    last_delta = time.monotonic()
                events.append(event)
        ended = time.monotonic()
    kinds = [e.WhichOneof("event") for e in events]
    assert "text_delta" in kinds and kinds[-1] == "error"
    assert events[-1].error.reason == "UPSTREAM_STALLED"
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended - last_delta < IDLE_S + MARGIN_S, f"ended {ended - last_delta:.2f} s after the last delta"
    [req] = fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None, timeout_s=5)
    assert req.outcome == "aborted", "the stalled upstream request was closed"
