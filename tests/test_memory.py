"""Memory: given back after a burst, and not growing with a stream's length.

The idle trimmer (memory.py) on a real server and on a real event loop: how much RSS comes
back is measured by `make bench` (1,000 open streams, then closed); tests prove when the trim
runs: once calls have stopped, never while one is in flight. A long stream holds no more per
chunk on LiteLLM's transport than on the direct one.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, pb
from llm_service.memory import IdleTrimmer
from tests.support.messages import user_msg
from tests.support.servers import custom_server


def test_the_server_trims_its_heap_once_the_calls_stop(fake: FakeUpstream) -> None:
    with custom_server(fake) as (srv, client):
        assert srv.running is not None
        trimmer = srv.running.admission.trimmer
        for _ in range(3):
            client.complete("openai", [user_msg()], timeout=30)
        assert trimmer.trims == 0 and trimmer.active == 0
        deadline = time.monotonic() + trimmer.idle_s + 10
        while trimmer.trims == 0:
            assert time.monotonic() < deadline, "no trim after the calls stopped"
            time.sleep(0.05)
        time.sleep(trimmer.idle_s + 0.5)
        assert trimmer.trims == 1  # once per quiet period, not again and again


def test_no_trim_while_a_call_is_in_flight_or_calls_keep_coming() -> None:
    async def scenario() -> list[int]:
        trimmer = IdleTrimmer(idle_s=0.2)
        seen = []
        trimmer.begin()
        await asyncio.sleep(0.5)  # one long call
        seen.append(trimmer.trims)
        trimmer.end()
        await asyncio.sleep(0.5)  # quiet
        seen.append(trimmer.trims)
        for _ in range(50):  # short calls every 10 ms: never a whole quiet period
            trimmer.begin()
            await asyncio.sleep(0.005)
            trimmer.end()
            await asyncio.sleep(0.005)
        seen.append(trimmer.trims)
        await asyncio.sleep(0.5)  # quiet again
        seen.append(trimmer.trims)
        trimmer.begin()
        trimmer.end()
        trimmer.cancel()  # the server stops: the pending trim is dropped
        await asyncio.sleep(0.5)
        seen.append(trimmer.trims)
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1, 2, 2]


# --- a long stream's memory (issue 17, item 13) ---------------------------------------------------

SHORT_STREAM_CHUNKS, LONG_STREAM_CHUNKS = 40, 400
# LiteLLM's stream wrapper kept every chunk, 3.9 KB each as measured here; what a stream on
# LiteLLM's transport may hold per chunk beyond the direct transport's figure (now about 0).
EXTRA_KB_PER_CHUNK_BOUND = 1.5


def _held_kb(client: LLMClient, fake: FakeUpstream, route: str, chunks: int) -> float:
    """The Python memory allocated during one stream of `chunks` chunks and still live, read while
    the upstream pauses before its last chunk (the chunks before it have passed through); the
    call is then cancelled.

    Only this stream's allocations are traced (tracing starts with it), so an earlier call's
    objects freed meanwhile cannot hide what this one holds; its garbage is collected first."""
    fake.script(Script(text=" ".join(["w"] * chunks), chunks=chunks, stall_after_chunks=chunks - 1, stall_s=10))
    tracemalloc.start()
    try:
        call = client.stub.Stream(pb.StreamRequest(model=route, messages=[user_msg()]), timeout=60)
        deltas = 0
        for event in call:  # the last delta before the pause may wait for the chunk after it
            deltas += event.WhichOneof("event") == "text_delta"
            if deltas == chunks - 2:
                break
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    call.cancel()
    assert deltas == chunks - 2, "the chunks before the pause came through"
    return held / 1024


def test_a_streams_memory_does_not_grow_with_its_length_on_either_transport(fake: FakeUpstream) -> None:
    """On LiteLLM's transport a stream held 3.9 KB more for each chunk until it ended (LiteLLM's
    wrapper keeps each one); now its memory per chunk is the direct transport's, within a bound far
    below that. tracemalloc counts live allocations, so memory this process freed before cannot
    hide growth as it would in RSS; the short stream's figure takes out each call's fixed cost."""
    route = {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    routes = {"direct": {**route, "transport": "direct"}, "litellm": {**route, "transport": "litellm"}}
    with custom_server(fake, routes=routes) as (_, client):
        for name in routes:  # first-call allocations (pools, caches) before measuring
            _held_kb(client, fake, name, SHORT_STREAM_CHUNKS)
        held = {
            name: (_held_kb(client, fake, name, SHORT_STREAM_CHUNKS), _held_kb(client, fake, name, LONG_STREAM_CHUNKS))
            for name in routes
        }
    per_chunk_kb = {name: (long - short) / (LONG_STREAM_CHUNKS - SHORT_STREAM_CHUNKS) for name, (short, long) in held.items()}
    print(
        "\nmemory held by one stream, "
        + "; ".join(
            f"{name}: {short:.0f} KB at {SHORT_STREAM_CHUNKS} chunks, {long:.0f} KB at {LONG_STREAM_CHUNKS} "
            f"({per_chunk_kb[name]:.2f} KB per chunk)"
            for name, (short, long) in held.items()
        )
    )
    assert per_chunk_kb["litellm"] - max(per_chunk_kb["direct"], 0.0) < EXTRA_KB_PER_CHUNK_BOUND, per_chunk_kb
