"""Fault 12: a stream the upstream ends cleanly but early (no finish reason, no [DONE], no
message_stop) is an error, not a finish: the caller must be able to tell a cut from a whole answer."""

from __future__ import annotations

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import error_from_rpc, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import ServerThread

OPENAI_CHUNK = '{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"TEXT"}}]}'
OPENAI_CUT = tuple("data: " + OPENAI_CHUNK.replace("TEXT", f"w{i} ") for i in range(5))
ANTHROPIC_START = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message","role":"assistant",'
    '"model":"claude-test","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":1}}}',
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
)
ANTHROPIC_CUT = ANTHROPIC_START + tuple(
    f'event: content_block_delta\ndata: {{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"w{i} "}}}}'
    for i in range(5)
)


@pytest.mark.parametrize(("route", "lines"), [("openai", OPENAI_CUT), ("anthropic", ANTHROPIC_CUT)])
def test_f12_a_stream_cut_cleanly_after_text_ends_with_an_error_event_not_a_finish(
    server: ServerThread, fake: FakeUpstream, route: str, lines: tuple[str, ...]
) -> None:
    fake.script(Script(sse_raw=lines, times=4))
    with grpc.insecure_channel(server.target) as channel:
        call = pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=30)
        events = []
        with pytest.raises(grpc.RpcError) as info:
            for event in call:
                events.append(event)
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["text_delta"] * 5 + ["error"], kinds
    assert events[-1].error.reason == "UPSTREAM_BAD_RESPONSE" and "cut short" in events[-1].error.message
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(fake.requests()) == 1, "text was sent: never retried (it would repeat it)"


@pytest.mark.parametrize(("route", "lines"), [("openai", ("data: [DONE]",)), ("anthropic", ANTHROPIC_START)])
def test_f12_a_stream_cut_before_any_content_is_retried_then_unavailable(
    server: ServerThread, fake: FakeUpstream, route: str, lines: tuple[str, ...]
) -> None:
    fake.script(Script(sse_raw=lines, times=4))
    with grpc.insecure_channel(server.target) as channel:
        call = pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            list(call)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(fake.requests()) == 4, "a cut before anything was sent is retried as transient (3 retries)"


OPENAI_DONE = (
    "data: " + OPENAI_CHUNK.replace('{"content":"TEXT"}', "{}").replace("}]}", ',"finish_reason":"stop"}]}'),
    "data: [DONE]",
)


@pytest.mark.parametrize("size", [600 * 1024, 2 * 1024 * 1024])
def test_f12_one_large_event_is_decoded(server: ServerThread, fake: FakeUpstream, size: int) -> None:
    """A whole tool call's arguments or an image in one data: line, as providers send them."""
    big = "x" * size
    fake.script(Script(sse_raw=("data: " + OPENAI_CHUNK.replace("TEXT", big), *OPENAI_DONE)))
    with grpc.insecure_channel(server.target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        events = list(pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=30))
    text = "".join(e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta")
    assert text == big and events[-1].WhichOneof("event") == "finish"


def test_f12_a_stream_answered_with_a_json_body_is_an_error(server: ServerThread, fake: FakeUpstream) -> None:
    body = (
        '{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}'
    )
    fake.script(Script(body_raw=body, times=4))
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as info:
        list(pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=30))
    err = error_from_rpc(info.value)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    assert err.metadata.get("upstream_status") == "200" and len(fake.requests()) == 4
