"""Fault 2: a 2 s deadline against an upstream that never answers."""

from __future__ import annotations

import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import ServerPath, custom_server, on_both_paths

DEADLINE_S = 2.0
BOUND_S = 2.1


@pytest.mark.parametrize(
    ("rpc", "upstream"),
    [
        ("Complete", "silent before its headers"),
        ("Stream", "silent before its headers"),
        ("Stream", "one chunk, then silence"),
    ],
)
def test_f02_deadline_exceeded_within_the_bound_and_the_upstream_closed(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, rpc: str, upstream: str
) -> None:
    """Mid-stream, the deadline is what ends the wait for the next chunk (the route's idle_timeout_s is
    60 s): the direct path's socket read and LiteLLM's path's per-chunk wait are both bounded by it."""
    fake.script(
        {
            "silent before its headers": Script(first_byte_delay_s=120),
            "one chunk, then silence": Script(text="a b c", stall_after_chunks=1, stall_s=120),
        }[upstream]
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        if rpc == "Complete":
            stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=DEADLINE_S)
        else:
            list(stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=DEADLINE_S))
    ended = time.monotonic()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ended - started < BOUND_S, f"{ended - started:.2f} s"
    [req] = fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None, timeout_s=3)
    assert req.outcome == "aborted"
    assert req.ended_at is not None and req.ended_at - started < BOUND_S, "the server closed its upstream request"


ROUTE_TIMEOUT_S = 1.5


@on_both_paths
@pytest.mark.parametrize(
    ("rpc", "upstream"),
    [
        ("Complete", "silent before its headers"),
        ("Stream", "silent before its headers"),
        ("Stream", "headers, then nothing"),
        ("Stream", "one chunk, then only keep-alives"),
    ],
)
def test_f02_a_call_without_a_deadline_is_bounded_by_the_routes_timeout(
    fake: FakeUpstream, path: ServerPath, rpc: str, upstream: str
) -> None:
    """No caller deadline: the route's timeout_s bounds the whole call, every attempt and retry wait together."""
    script = {
        "silent before its headers": Script(first_byte_delay_s=120, times=10),
        "headers, then nothing": Script(text="a b c", stall_after_chunks=0, stall_s=120, times=10),
        "one chunk, then only keep-alives": Script(
            text="a b c", stall_after_chunks=1, stall_s=120, keepalive_comments=True, times=10
        ),
    }[upstream]
    route = {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    route.update(timeout_s=ROUTE_TIMEOUT_S, idle_timeout_s=0.5)
    fake.script(script)
    with custom_server(fake, path=path, routes={"openai": route}) as (srv, _), grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.LLMServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            if rpc == "Complete":
                stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]))
            else:
                list(stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()])))
        took = time.monotonic() - started
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
    assert took < ROUTE_TIMEOUT_S + 1.0, f"the call took {took:.1f} s against a {ROUTE_TIMEOUT_S:g} s route timeout"
