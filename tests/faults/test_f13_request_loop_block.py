"""Fault 13: the largest request of each shape the limits allow does not stall the server's other calls.

A paced stream (a chunk every 5 ms from the upstream) runs while one large request at a time is
sent to the same server, in a process of its own; the longest gap between the stream's chunks
while that request is handled, less the stream's pace, is how long the request kept the event
loop from the stream. Complete requests go to a route whose upstream refuses connections, so all
the request's work is the server's and none is the fake upstream's (which shares this process),
as does the Embed request;
the one streamed shape is answered by the fake, without usage, so the server estimates it from
the whole prompt (1 MiB: the fake decodes it in this process, a few ms).
Requests are serialized before timing, so the client's own work is not in the gaps.

A request that holds the loop does so every time it is sent; the machine's other work only
sometimes (under load the stream alone shows gaps of 50 ms and more now and then). So a shape
whose gap is over the bound is sent again, up to TRIES times, and its smallest gap is the one
judged: a real stall fails every try.
"""

from __future__ import annotations

import functools
import itertools
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from tests.support.messages import user_msg
from tests.support.servers import ServerProcess

PACE_S = 0.005
TEXT_BYTES = 15 * 1024 * 1024  # under limits.max_request_bytes (16 MiB), with room for the framing
# What one request may add to the paced stream's longest gap. The figures were seconds
# (9.1 s, 2.5 s, 1.2 s: shapes the limits now refuse) and 122 ms for 15 MiB parsed on the loop.
# Measured here since the large-request path left the loop (conversion, planning, the body's JSON
# in bounded pieces, token counts, all in a worker thread), less the pace: 2-75 ms across runs with
# the machine's two cores loaded 2.5-6 times over by other work, the 15 MiB shapes the highest,
# the small and many-small-part shapes 2-20 ms; a process's first one or two 15 MiB requests
# 60-215 ms, later ones 17-50 ms (why is not known yet). What is left is gRPC's own copy of a received
# message into Python bytes (on the loop, ~5 ms for 15 MiB) and the turns the loop waits for the
# GIL while a worker thread runs Python (CPython's switch interval, 5 ms a turn); the rest is the
# machine's load. The bound is for "the loop is not held", not a speed figure.
BLOCK_BOUND_MS = 100.0
TRIES = 3


def _text(n_bytes: int) -> str:
    return ("lorem ipsum " * (n_bytes // 12 + 1))[:n_bytes]


def _shapes() -> dict[str, tuple[str, bytes]]:
    """Each shape at the largest the default limits allow, and a streamed one the fake answers
    without usage: (method, serialized request)."""
    many_messages = [user_msg(_text(TEXT_BYTES // 1000)) for _ in range(1000)]  # limits.max_messages
    parts = [pb.ContentPart(text=_text(TEXT_BYTES // 1000)) for _ in range(1000)]  # limits.max_parts
    calls = [  # limits.max_tool_calls, arguments within limits.max_json_depth
        pb.ToolCall(id=f"call_{i}", name="lookup", arguments_json=json.dumps({"q": _text(TEXT_BYTES // 256 - 64)}))
        for i in range(256)
    ]
    schema = {"type": "object", "properties": {"q": {"type": "string", "description": _text(TEXT_BYTES // 128 - 256)}}}
    tools = [pb.Tool(name=f"tool_{i}", description="d", parameters_json=json.dumps(schema)) for i in range(128)]
    nested: dict[str, object] = {"type": "string"}
    for _ in range(31):  # two levels each: 63, under limits.max_json_depth (64)
        nested = {"type": "object", "properties": {"a": nested}}
    deep_tool = pb.Tool(name="deep", description="d", parameters_json=json.dumps(nested))

    def complete(**fields: object) -> tuple[str, bytes]:
        return "Complete", pb.CompleteRequest(model="refused", max_retries=0, **fields).SerializeToString()  # type: ignore[arg-type]

    return {
        "one 15 MiB text": complete(messages=[user_msg(_text(TEXT_BYTES))]),
        "1000 messages": complete(messages=many_messages),
        "1000 parts": complete(messages=[pb.Message(role=pb.ROLE_USER, parts=parts)]),
        "256 tool calls": complete(
            messages=[
                user_msg(),
                pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=calls),
                *(pb.Message(role=pb.ROLE_TOOL, tool_call_id=f"call_{i}", parts=[pb.ContentPart(text="ok")]) for i in range(256)),
            ]
        ),
        "128 tools": complete(messages=[user_msg()], tools=tools),
        "16 stops, depth 63": complete(messages=[user_msg()], tools=[deep_tool], stop_sequences=[f"stop{i}" for i in range(16)]),
        "CountTokens 1000 messages": (
            "CountTokens",
            pb.CountTokensRequest(model="paced", messages=many_messages).SerializeToString(),
        ),
        "Embed 2000 inputs, 8 MiB": (  # limits.max_embed_input_bytes, one upstream batch
            "Embed",
            pb.EmbedRequest(
                model="refused-embed", max_retries=0, inputs=[pb.EmbedInput(text=_text(4096 - 16)) for _ in range(2000)]
            ).SerializeToString(),
        ),
        "Stream 1 MiB, usage estimated": (
            "Stream",
            pb.StreamRequest(model="paced", messages=[user_msg(_text(1024)) for _ in range(1000)]).SerializeToString(),
        ),
    }


def test_f13_no_allowed_request_stalls_a_concurrent_stream(fake: FakeUpstream, tmp_path: Path) -> None:
    base = f"{fake.base_url}/v1"
    routes = {
        "paced": {"model": "openai/test-model", "api_base": base, "key": {"env": "TEST_PROVIDER_KEY"}},
        "refused": {"model": "openai/test-model", "api_base": "http://127.0.0.1:9/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
        "refused-embed": {
            "model": "openai/text-embedding-3-small",
            "api_base": "http://127.0.0.1:9/v1",
            "key": {"env": "TEST_PROVIDER_KEY"},
        },
    }
    shapes = _shapes()
    chunks = 6000  # 30 s at the pace: longer than the test; cancelled at its end
    fake.script(Script(text=" ".join(["w"] * chunks), chunks=chunks, chunk_delay_s=PACE_S))
    server = ServerProcess({"routes": routes}, tmp_path)
    arrivals: list[float] = []
    windows: dict[str, list[tuple[float, float, str]]] = {}
    try:
        with (
            grpc.insecure_channel(server.target) as stream_channel,
            grpc.insecure_channel(server.target, options=[("grpc.max_send_message_length", 32 * 2**20)]) as channel,
        ):
            call = stream_channel.unary_stream("/llm.v1.LLMService/Stream")(
                pb.StreamRequest(model="paced", messages=[user_msg()]).SerializeToString(), timeout=60
            )

            def read() -> None:
                try:
                    for _ in call:
                        arrivals.append(time.perf_counter())
                except grpc.RpcError:
                    pass

            reader = threading.Thread(target=read)
            reader.start()
            while len(arrivals) < 100:  # the stream is flowing
                time.sleep(0.01)
            # LiteLLM loads its tokenizer on a process's first count (a one-time stall of 100-400 ms
            # whatever the request's size): loaded here, so the shapes' gaps are their own.
            channel.unary_unary("/llm.v1.LLMService/CountTokens")(
                pb.CountTokensRequest(model="paced", messages=[user_msg()]).SerializeToString(), timeout=60
            )
            quiet_start = time.perf_counter()
            time.sleep(0.5)
            windows["(none: the stream alone)"] = [(quiet_start, time.perf_counter(), "-")]
            for name, (method, body) in shapes.items():
                send = _caller(channel, method)
                for _ in range(TRIES):
                    if method == "Stream":
                        fake.script(Script(text="fine", usage_mode="none"))
                    started = time.perf_counter()
                    try:
                        send(body)
                        outcome = "OK"
                    except grpc.RpcError as err:
                        outcome = err.code().name
                    ended = time.perf_counter() + 0.02
                    windows.setdefault(name, []).append((started, ended, outcome))
                    while arrivals[-1] <= ended and reader.is_alive():  # the window's next chunk is in
                        time.sleep(PACE_S)
                    if _longest_gap_ms(arrivals, started, ended) - PACE_S * 1000 < BLOCK_BOUND_MS:
                        break
            call.cancel()
            reader.join(10)
    finally:
        output = server.stop()

    pace_ms = statistics.median(b - a for a, b in itertools.pairwise(arrivals)) * 1000
    report, blocked, outcomes = [], {}, {}
    for name, tries in windows.items():
        gaps = [_longest_gap_ms(arrivals, start, end) for start, end, _ in tries]
        blocked[name] = min(gaps) - pace_ms
        outcomes[name] = {outcome for _, _, outcome in tries}
        took = ", ".join(f"{(end - start) * 1000:.0f}" for start, end, _ in tries)
        shown = ", ".join(f"{g:.1f}" for g in gaps)
        report.append(f"  {name}: {'/'.join(sorted(outcomes[name]))} in {took} ms, longest gap {shown} ms")
    print(f"\npaced stream (median {pace_ms:.1f} ms between chunks) beside one large request at a time:\n" + "\n".join(report))
    taken = {name: o for name, o in outcomes.items() if name in shapes}
    assert set().union(*taken.values()) <= {"OK", "UNAVAILABLE"}, f"each was taken in (UNAVAILABLE: upstream refused): {taken}"
    assert all(blocked[name] < BLOCK_BOUND_MS for name in shapes), blocked
    assert "Traceback" not in output


def _caller(channel: grpc.Channel, method: str) -> Callable[[bytes], object]:
    """Sends one serialized request of the method and waits for its whole answer."""
    path = f"/llm.v1.LLMService/{method}"
    if method == "Stream":
        stream = channel.unary_stream(path)
        return lambda body: list(stream(body, timeout=60))
    return functools.partial(channel.unary_unary(path), timeout=60)


def _longest_gap_ms(arrivals: list[float], start: float, end: float) -> float:
    """The longest time between two of the stream's chunks around and within [start, end]."""
    inside = [t for t in arrivals if start <= t <= end]
    before = [t for t in arrivals if t < start][-1:]
    after = [t for t in arrivals if t > end][:1]
    points = before + inside + after
    return max(b - a for a, b in itertools.pairwise(points)) * 1000
