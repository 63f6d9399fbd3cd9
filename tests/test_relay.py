"""Streams whose writes fall behind the provider send the backlog's text as one delta (relay.py).

Through a real server with `server.stream_coalescing` on (the default; the shared test config
turns it off so other tests can compare events one by one), on both transports.
"""

from __future__ import annotations

import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_service.core import types
from llm_service.relay import COALESCE_BACKLOG, joined
from tests.support.messages import user_msg
from tests.support.servers import ServerPath, custom_server, on_both_paths

COALESCING = {"stream_coalescing": True}


def test_runs_of_text_and_of_reasoning_join_and_everything_else_keeps_its_place() -> None:
    call = types.ToolCall("c1", "f", "{}")
    events: list[types.Event] = [
        types.ReasoningDelta("think "),
        types.ReasoningDelta("more"),
        types.TextDelta("a"),
        types.TextDelta("b"),
        call,
        types.TextDelta("c"),
        types.TextEnd(),
    ]
    assert joined(events) == [
        types.ReasoningDelta("think more"),
        types.TextDelta("ab"),
        call,
        types.TextDelta("c"),
        types.TextEnd(),
    ]


@on_both_paths
def test_a_burst_faster_than_the_writes_goes_out_in_fewer_messages(fake: FakeUpstream, path: ServerPath) -> None:
    """Issue 24: 600 chunks sent at once reach the caller as fewer deltas, each only new text,
    joined to exactly the answer, then text_end and finish as always."""
    words = [f"w{i} " for i in range(600)]
    fake.script(Script(text="".join(words), chunks=len(words)))
    with custom_server(fake, path=path, server=COALESCING) as (_, client):
        events = list(client.stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=60))
    kinds = [e.WhichOneof("event") for e in events]
    deltas = [e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta"]
    assert kinds[-2:] == ["text_end", "finish"] and set(kinds[:-2]) == {"text_delta"}
    assert "".join(deltas) == "".join(words)
    assert all(deltas), "every message carries new text"
    assert len(deltas) < len(words), f"{len(deltas)} messages for {len(words)} chunks"
    assert max(len(d) for d in deltas) > len(words[0]), "some message carries several chunks"


def test_a_stream_that_keeps_up_gets_one_message_per_chunk(fake: FakeUpstream) -> None:
    """Chunks 20 ms apart never build a backlog: each is its own delta, as without coalescing."""
    chunks = COALESCE_BACKLOG + 4
    fake.script(Script(text=" ".join(["word"] * chunks), chunks=chunks, chunk_delay_s=0.02))
    with custom_server(fake, server=COALESCING) as (_, client):
        events = list(client.stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=60))
    assert [e.WhichOneof("event") for e in events] == ["text_delta"] * chunks + ["text_end", "finish"]


@pytest.mark.parametrize("coalescing", [True, False])
def test_cancelling_a_relayed_stream_closes_the_upstream_request(fake: FakeUpstream, coalescing: bool) -> None:
    fake.script(Script(text=" ".join(["word"] * 400), chunk_delay_s=0.01))
    with custom_server(fake, server={"stream_coalescing": coalescing}) as (_, client):
        call = client.stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=60)
        assert next(call).WhichOneof("event") == "text_delta"
        call.cancel()
        [request] = fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None, timeout_s=5)
    assert request.outcome == "aborted"
