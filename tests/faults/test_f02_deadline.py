"""Fault 2: a 2 s deadline against an upstream that never answers."""

from __future__ import annotations

import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.conftest import user_msg

DEADLINE_S = 2.0
BOUND_S = 2.1


@pytest.mark.parametrize("rpc", ["Complete", "Stream"])
def test_f02_deadline_exceeded_within_the_bound_and_the_upstream_closed(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, rpc: str
) -> None:
    fake.script(Script(first_byte_delay_s=120))
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
