"""The Python client's production channel: gRFC A6 retries of UNAVAILABLE only, honouring the server's delay."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError, pb
from tests.support.messages import user_msg
from tests.support.paths import ROOT
from tests.support.servers import ServerThread, custom_server


def test_channel_retries_unavailable_after_the_servers_retry_delay(server: ServerThread, fake: FakeUpstream) -> None:
    # The server's own transient retries (3) fail; it answers UNAVAILABLE with RetryInfo 0.8 s
    # and grpc-retry-pushback-ms: the channel waits that long, then its retry succeeds.
    fake.script(Script(status=503, headers={"retry-after": "0.8"}, times=4), Script(text="second time lucky"))
    with LLMClient(server.target) as client:
        result = client.complete("openai", [user_msg()], timeout=30)
    assert result.text == "second time lucky"
    starts = [r.started_at for r in fake.requests()]
    assert len(starts) == 5
    assert starts[4] - starts[3] >= 0.8, "the channel waited the server's delay before retrying"


def test_channel_never_retries_other_codes(server: ServerThread, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "0.1"}, times=30))
    with LLMClient(server.target) as client, pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], max_retries=1, timeout=30)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.retry_delay_s == pytest.approx(0.1)
    assert len(fake.requests()) == 2, "one gRPC call: the server's attempt and its one retry, no channel retry"


def test_errors_are_one_family_by_code(client: LLMClient, fake: FakeUpstream) -> None:
    from llm_client import FailedPrecondition, NotFound, ResourceExhausted

    with pytest.raises(NotFound) as not_found:
        client.complete("no-such-route", [user_msg()], timeout=30)
    fake.script(Script(status=401))
    with pytest.raises(FailedPrecondition):
        client.complete("openai", [user_msg()], timeout=30)
    fake.script(Script(status=429, headers={"retry-after": "0.2"}))
    with pytest.raises(ResourceExhausted) as limited:
        client.complete("openai", [user_msg()], max_retries=0, timeout=30)
    assert isinstance(not_found.value, LLMServiceError) and not_found.value.reason == "ROUTE_NOT_FOUND"
    assert limited.value.retry_delay_s == pytest.approx(0.2) and limited.value.reason == "UPSTREAM_RATE_LIMITED"


def test_async_client_completes_streams_and_raises_the_same_errors(server: ServerThread, fake: FakeUpstream) -> None:
    import asyncio

    from llm_client import AsyncLLMClient, FailedPrecondition, channel_options

    async def scenario() -> tuple[str, list[str], str]:
        async with AsyncLLMClient(server.target, options=channel_options(retries=False)) as client:
            fake.script(Script(text="async hello"), Script(text="a b"), Script(status=401))
            answer = await client.complete("openai", [user_msg()], timeout=30)
            events = [e async for e in client.stream("openai", [user_msg()], timeout=30)]
            try:
                await client.complete("openai", [user_msg()], timeout=30)
            except FailedPrecondition as err:
                return answer.text, [e.kind for e in events], err.reason
            raise AssertionError("no error")

    text, kinds, reason = asyncio.run(scenario())
    assert text == "async hello"
    assert kinds == ["text_delta", "text_delta", "text_end", "finish"]
    assert reason == "UPSTREAM_AUTH_FAILED"


# --- the client's own API: typed events, every request field, closing early ----------------------

README = ROOT / "clients/python/README.md"


def test_the_readme_examples_pass_mypy_strict(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        (tmp_path / f"example_{i}.py").write_text(block)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT / "clients/python/src")},
    )
    assert done.returncode == 0, done.stdout


def test_every_request_field_reaches_the_upstream(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(text="ok"))
    tool = pb.Tool(name="lookup", parameters_json='{"type": "object", "properties": {"q": {"type": "string"}}}')
    client.complete(
        "openai",
        [user_msg()],
        system="be brief",
        tools=[tool],
        tool_choice="lookup",
        max_tokens=64,
        temperature=0.5,
        top_p=0.9,
        stop_sequences=["END"],
        seed=7,
        response_format={"type": "object", "properties": {"a": {"type": "integer"}}},
        metadata={"team": "search"},
        timeout=30,
    )
    body = fake.requests()[0].body
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["seed"]) == (64, 0.5, 0.9, ["END"], 7)
    assert body["response_format"]["json_schema"]["schema"]["properties"] == {"a": {"type": "integer"}}
    with pytest.raises(TypeError, match="unexpected option"):
        client.count_tokens("openai", [user_msg()], max_tokens=5)


def test_count_tokens_and_models_on_both_clients(server: ServerThread) -> None:
    import asyncio

    from llm_client import AsyncLLMClient

    with LLMClient(server.target) as c:
        counted = c.count_tokens("openai", [user_msg("How many tokens is this?")], system="short")
        names = [m.name for m in c.models()]

    async def scenario() -> tuple[int, list[str]]:
        async with AsyncLLMClient(server.target) as ac:
            return (await ac.count_tokens("openai", [user_msg("How many tokens is this?")], system="short")).input_tokens, [
                m.name for m in await ac.models()
            ]

    assert counted.input_tokens > 5 and counted.method in ("litellm", "estimate")
    assert asyncio.run(scenario()) == (counted.input_tokens, names)


def test_stream_text_is_joined_when_read_not_per_event(fake: FakeUpstream) -> None:
    # The client's own behaviour: one server (the direct transport) is enough.
    words = [f"w{i} " for i in range(12_000)]
    fake.script(Script(text="".join(words), chunks=len(words)))
    with custom_server(fake) as (_, client), client.stream("openai", [user_msg()], timeout=60) as answer:
        events = list(answer)
        assert answer._text._joined_count == 0, "iterating joined nothing"
        assert answer.text == "".join(words)
    deltas = [e for e in events if e.kind == "text_delta"]
    assert len(deltas) > 10_000
    assert deltas[2].text == "".join(e.delta for e in deltas[:3]) and events[-1].text == answer.text


def test_leaving_async_with_closes_the_upstream_request(server: ServerThread, fake: FakeUpstream) -> None:
    import asyncio

    from llm_client import AsyncLLMClient

    fake.script(Script(text=" ".join(["word"] * 200), chunk_delay_s=0.05))

    async def scenario() -> float:
        async with AsyncLLMClient(server.target) as ac:
            async with ac.stream("openai", [user_msg()], timeout=30) as answer:
                async for event in answer:
                    if event.kind == "text_delta":
                        break
            left = time.monotonic()
            await asyncio.sleep(0.5)  # the channel stays open: only the call was closed
            return left

    left = asyncio.run(scenario())
    [req] = fake.wait_for(lambda rs: len(rs) == 1 and rs[0].ended_at is not None, timeout_s=3)
    assert req.outcome == "aborted" and req.ended_at is not None and req.ended_at - left < 0.2
