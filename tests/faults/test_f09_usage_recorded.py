"""Fault 9: usage and cost are recorded for every finished stream, and partial usage for cancelled
streams where the upstream had reported it (Anthropic reports input tokens when the stream starts)."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, Usage
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import ServerPath, custom_server, on_both_paths


def test_f09_every_finished_stream_is_recorded(fake: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    usages = [Usage(input=100 + i, output=10 + i) for i in range(10)]
    fake.script(*(Script(text="a b c", usage=u) for u in usages))
    with caplog.at_level(logging.INFO), custom_server(fake) as (srv, client):
        for _ in usages:
            list(client.stream("bare", [user_msg()], timeout=30))  # gpt-4o-mini: LiteLLM can price it
        samples = scrape(srv.running.metrics_port if srv.running else 0)
    lines = [r for r in caplog.records if r.getMessage() == "rpc" and getattr(r, "rpc", "") == "Stream"]
    assert len(lines) == len(usages)
    assert sorted(getattr(r, "input_tokens", 0) for r in lines) == [u.input for u in usages]
    assert all(getattr(r, "cost_usd", 0) > 0 for r in lines)
    assert total(samples, "llm_tokens_total", route="bare", kind="input") == sum(u.input for u in usages)
    assert total(samples, "llm_tokens_total", route="bare", kind="output") == sum(u.output for u in usages)
    assert total(samples, "llm_cost_usd_total", route="bare") > 0


@on_both_paths
@pytest.mark.parametrize(("route", "recorded_input"), [("anthropic", 321), ("openai", 0)])
def test_f09_cancelled_streams_record_the_usage_the_upstream_had_reported(
    fake: FakeUpstream, path: ServerPath, route: str, recorded_input: int
) -> None:
    """Anthropic sends input tokens in message_start; OpenAI only at the end, which a cancelled stream
    never sees. Each transport fills in usage its own way, so both are held to it."""
    fake.script(Script(text=" ".join(["word"] * 40), chunk_delay_s=0.05, usage=Usage(input=321, output=40)))
    with custom_server(fake, path=path) as (srv, _), grpc.insecure_channel(srv.target) as channel:
        call = pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=30)
        next(call), next(call)
        call.cancel()
        fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None)
        time.sleep(0.2)
        samples = scrape(srv.running.metrics_port if srv.running else 0)
    assert total(samples, "llm_tokens_total", route=route, kind="input") == recorded_input
