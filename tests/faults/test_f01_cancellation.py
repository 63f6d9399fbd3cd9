"""Cancellation reaches the upstream: when the caller goes, the upstream HTTP request is closed."""

from __future__ import annotations

import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg

CLOSE_WITHIN_S = 0.1  # the bound: the fake upstream sees the connection closed within 100 ms


def _aborted_request(fake: FakeUpstream) -> float:
    [req] = fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None, timeout_s=3)
    assert req.outcome == "aborted", req
    assert req.ended_at is not None
    return req.ended_at


@pytest.mark.parametrize("route", ["openai", "gemini"])
def test_cancelled_stream_mid_answer_closes_the_upstream_request(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, route: str
) -> None:
    """On each transport; Gemini has no direct path, so on both servers it is LiteLLM's Gemini stream that must close."""
    fake.script(Script(text=" ".join(["word"] * 100), chunk_delay_s=0.05))
    call = stub.Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=30)
    received = [next(call) for _ in range(3)]
    assert all(e.WhichOneof("event") == "text_delta" for e in received)
    cancelled_at = time.monotonic()
    call.cancel()
    closed_after = _aborted_request(fake) - cancelled_at
    assert closed_after < CLOSE_WITHIN_S, f"closed after {closed_after * 1000:.0f} ms"


def test_cancelled_stream_before_first_token_closes_the_upstream_request(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream
) -> None:
    fake.script(Script(first_byte_delay_s=30))
    call = stub.Stream(pb.StreamRequest(model="anthropic", messages=[user_msg()]), timeout=30)
    fake.wait_for(lambda rs: len(rs) == 1)
    cancelled_at = time.monotonic()
    call.cancel()
    closed_after = _aborted_request(fake) - cancelled_at
    assert closed_after < CLOSE_WITHIN_S, f"closed after {closed_after * 1000:.0f} ms"


def test_cancelled_complete_closes_the_upstream_request(server: object, fake: FakeUpstream) -> None:
    fake.script(Script(first_byte_delay_s=30))
    with grpc.insecure_channel(server.target) as channel:  # type: ignore[attr-defined]
        future = pb_grpc.LLMServiceStub(channel).Complete.future(pb.CompleteRequest(model="openai", messages=[user_msg()]))
        fake.wait_for(lambda rs: len(rs) == 1)
        cancelled_at = time.monotonic()
        future.cancel()
        closed_after = _aborted_request(fake) - cancelled_at
    assert closed_after < CLOSE_WITHIN_S, f"closed after {closed_after * 1000:.0f} ms"
