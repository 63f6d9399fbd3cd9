"""The Embed RPC through a real server, LiteLLM's `aembedding` and the direct transport, against
the fake upstream's OpenAI and Cohere embedding endpoints (issue 22).

One server per path for the module; each test says what the caller gets and what the fake
upstream received: vectors in the inputs' order, `dimensions` honoured, usage and cost, a
429's Retry-After waited and retried, a 2,500-input batch split into the provider's largest
requests and put back in order, the route-kind errors and the limits.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.abc
import json
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream, Script, vector_of
from llm_client import AsyncLLMClient, Embeddings, InvalidArgument, LLMClient, channel_options, pb
from llm_client.client import error_from_rpc
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import PATHS, ServerPath, ServerThread, on_path, service_config

TEXT_EMBEDDING_3_SMALL_USD_PER_TOKEN = 2e-8  # LiteLLM's local price map


def _routes(fake_url: str) -> dict[str, Any]:
    key = {"env": "TEST_PROVIDER_KEY"}
    return {
        "embed": {"model": "openai/text-embedding-3-small", "api_base": f"{fake_url}/v1", "key": key},
        "embed-cohere": {"model": "cohere/embed-v4.0", "api_base": f"{fake_url}/v2/embed", "key": key},
        # A model LiteLLM's map does not know: its kind comes from the route.
        "embed-vllm": {"model": "hosted_vllm/bge-m3", "api_base": f"{fake_url}/v1", "kind": "embedding"},
        "embed-pool": {
            "model": "openai/text-embedding-3-small",
            "api_base": f"{fake_url}/v1",
            "deployments": [{"name": "a", "key": key}, {"name": "b", "key": key, "api_base": f"{fake_url}/b/v1"}],
        },
        "embed-small-batches": {
            "model": "openai/text-embedding-3-small",
            "api_base": f"{fake_url}/v1",
            "key": key,
            "embed_batch_size": 3,
            "embed_concurrency": 2,
        },
    }


@pytest.fixture(scope="module")
def servers(fake: FakeUpstream) -> Iterator[dict[ServerPath, ServerThread]]:
    """A server on each path, whose limits are small enough to reach in a test."""
    config = service_config(fake.base_url, routes=_routes(fake.base_url), limits={"max_embed_input_bytes": 64 * 1024})
    started = {path: ServerThread(on_path(config, path)) for path in PATHS}
    yield started
    for srv in started.values():
        srv.stop()


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> ServerPath:
    """The path the test's server takes: direct where the wire has one, or LiteLLM's."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def client(servers: dict[ServerPath, ServerThread], path: ServerPath) -> Iterator[LLMClient]:
    """The Python client for this path's server, channel retries off."""
    with LLMClient(servers[path].target, options=channel_options(retries=False)) as c:
        yield c


def _embed(client: LLMClient, texts: list[str], **fields: Any) -> pb.EmbedResponse:
    fields.setdefault("model", "embed")
    request = pb.EmbedRequest(inputs=[pb.EmbedInput(text=t) for t in texts], **fields)
    return client.stub.Embed(request, timeout=30)  # type: ignore[no-any-return]


def _vectors(response: pb.EmbedResponse) -> list[list[float]]:
    return [list(e.values) for e in response.embeddings]


def _failure(call: Any) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return error_from_rpc(info.value)


def test_vectors_come_in_input_order_with_dimensions_usage_and_cost(client: LLMClient, fake: FakeUpstream) -> None:
    texts = ["the first text", "a second", "third and last input"]
    r = _embed(client, texts, dimensions=24, metadata={"team": "search"})
    assert _vectors(r) == [vector_of(t, 24) for t in texts]
    assert r.dimensions == 24
    assert r.usage.input_tokens == 9  # the fake bills one token per word
    assert r.cost_usd == pytest.approx(9 * TEXT_EMBEDDING_3_SMALL_USD_PER_TOKEN)
    assert r.provider_model == "text-embedding-3-small"
    assert (r.gateway.route, r.gateway.attempts) == ("embed", 1)
    (sent,) = fake.requests("/v1/embeddings")
    assert sent.body == {"model": "text-embedding-3-small", "input": texts, "dimensions": 24}


@pytest.mark.parametrize("route", ["embed", "embed-vllm"])
def test_both_transports_send_the_same_request_and_answer_alike(
    servers: dict[ServerPath, ServerThread], fake: FakeUpstream, route: str
) -> None:
    texts = ["naïve café — 日本語", "plain"]
    seen = {}
    for path in PATHS:
        fake.reset()
        with LLMClient(servers[path].target, options=channel_options(retries=False)) as c:
            r = _embed(c, texts, model=route, dimensions=8)
        r.gateway.ClearField("upstream_duration")
        (sent,) = fake.requests("/embeddings")
        headers = {k.lower(): v for k, v in sent.headers.items() if k.lower() in ("authorization", "content-type")}
        seen[path] = (r.SerializeToString(deterministic=True), sent.path, json.dumps(sent.body), headers)
    assert seen["fast-path"] == seen["litellm-path"]
    assert _vectors(r) == [vector_of(t, 8) for t in texts]


def test_a_rate_limit_is_waited_as_retry_after_asks_then_retried(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "0.2"}, error={"message": "slow down"}))
    r = _embed(client, ["once more"])
    assert _vectors(r) == [vector_of("once more")]
    assert r.gateway.attempts == 2
    first, second = fake.requests("/embeddings")
    assert second.started_at - first.ended_at >= 0.2  # type: ignore[operator]


def test_a_transient_failure_is_retried_and_a_bad_request_is_not(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=503, error={"message": "overloaded"}))
    assert _embed(client, ["x"]).gateway.attempts == 2
    fake.script(Script(status=400, error={"message": "input too long"}))
    err = _failure(lambda: _embed(client, ["x"]))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST")


def test_a_retry_wait_past_the_deadline_ends_the_call_at_once(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "1.5"}, error={"message": "slow down"}))
    request = pb.EmbedRequest(model="embed", inputs=[pb.EmbedInput(text="x")])
    err = _failure(lambda: client.stub.Embed(request, timeout=1))
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
    assert err.retry_delay_s == pytest.approx(1.5)
    assert len(fake.requests("/embeddings")) == 1


def test_2500_inputs_are_split_into_the_providers_largest_requests_and_put_back_in_order(
    client: LLMClient, fake: FakeUpstream
) -> None:
    texts = [f"input number {i}" for i in range(2500)]
    r = _embed(client, texts)
    assert _vectors(r) == [vector_of(t) for t in texts]
    sent = sorted(fake.requests("/embeddings"), key=lambda q: q.body["input"][0] != texts[0])
    assert [len(q.body["input"]) for q in sent] == [2048, 452]  # OpenAI's most inputs per request
    assert [q.body["input"] for q in sent] == [texts[:2048], texts[2048:]]
    assert r.usage.input_tokens == 3 * 2500 and r.gateway.attempts == 2


def test_split_requests_are_sent_concurrently_within_the_routes_bound(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(first_byte_delay_s=0.1, times=4))
    texts = [f"t{i}" for i in range(12)]  # 4 requests of 3 (embed_batch_size), 2 at once (embed_concurrency)
    r = _embed(client, texts, model="embed-small-batches")
    assert _vectors(r) == [vector_of(t) for t in texts]
    sent = fake.requests("/embeddings")
    assert len(sent) == 4 and r.gateway.attempts == 4
    overlaps = [sum(1 for o in sent if o.started_at <= q.started_at < o.ended_at) for q in sent]  # type: ignore[operator]
    assert max(overlaps) == 2


def test_a_failed_split_request_fails_the_call_and_counts_every_attempt(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=401, error={"message": "bad key"}))
    err = _failure(lambda: _embed(client, [f"t{i}" for i in range(6)], model="embed-small-batches", max_retries=0))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED")
    assert int(err.metadata["attempts"]) == len(fake.requests("/embeddings")) >= 1


def test_a_split_request_that_fails_for_good_ends_the_others_at_once(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=401, error={"message": "bad key"}), Script(first_byte_delay_s=5.0))  # either one gets either
    err = _failure(lambda: _embed(client, [f"t{i}" for i in range(6)], model="embed-small-batches", max_retries=0))
    assert err.reason == "UPSTREAM_AUTH_FAILED"
    sent = fake.wait_for(lambda rs: len(rs) == 2 and all(r.ended_at is not None for r in rs), timeout_s=10)
    assert sorted(r.outcome for r in sent) == ["aborted", "completed"]  # the slow one was hung up on


def test_cohere_through_litellm_gets_its_input_type_and_output_dimension(client: LLMClient, fake: FakeUpstream) -> None:
    texts = ["what is a vector?", "documents"]
    r = _embed(client, texts, model="embed-cohere", dimensions=12, input_type=pb.EMBED_INPUT_TYPE_QUERY)
    assert _vectors(r) == [vector_of(t, 12) for t in texts]
    assert r.usage.input_tokens == 5 and r.cost_usd > 0
    (sent,) = fake.requests("/v2/embed")
    assert sent.body == {"model": "embed-v4.0", "texts": texts, "input_type": "search_query", "output_dimension": 12}


def test_a_route_declares_the_kind_of_a_model_litellm_does_not_know(client: LLMClient, fake: FakeUpstream) -> None:
    r = _embed(client, ["local model"], model="embed-vllm", input_type=pb.EMBED_INPUT_TYPE_DOCUMENT)
    assert _vectors(r) == [vector_of("local model")]
    (sent,) = fake.requests("/v1/embeddings")
    assert sent.body["model"] == "bge-m3" and "input_type" not in sent.body  # OpenAI's format has none


def test_list_models_says_each_routes_kind(client: LLMClient) -> None:
    kinds = {m.name: m.kind for m in client.models()}
    assert kinds["embed"] == kinds["embed-cohere"] == kinds["embed-vllm"] == pb.MODEL_KIND_EMBEDDING
    assert kinds["openai"] == kinds["anthropic"] == pb.MODEL_KIND_CHAT


def test_calling_a_route_of_the_other_kind_is_invalid_argument_naming_its_kind(client: LLMClient) -> None:
    messages = [user_msg("hi")]
    calls = {
        "Complete": lambda: client.stub.Complete(pb.CompleteRequest(model="embed", messages=messages), timeout=10),
        "Stream": lambda: list(client.stub.Stream(pb.StreamRequest(model="embed", messages=messages), timeout=10)),
        "CountTokens": lambda: client.stub.CountTokens(pb.CountTokensRequest(model="embed", messages=messages), timeout=10),
    }
    for rpc, call in calls.items():
        err = _failure(call)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, rpc
        assert "route 'embed' is an embedding route: call Embed" in err.message, rpc
        assert err.field_violations[0][0] == "model"
    err = _failure(lambda: _embed(client, ["x"], model="openai"))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "route 'openai' is a chat route: call Complete, Stream or CountTokens" in err.message


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        ({"inputs": []}, "inputs", "at least one input"),
        ({"inputs": [pb.EmbedInput(text="x")] * 10_001}, "inputs", "limits.max_embed_inputs"),
        ({"inputs": [pb.EmbedInput(text="x" * 40_000)] * 2}, "inputs", "limits.max_embed_input_bytes"),
        ({"inputs": [pb.EmbedInput(text="")]}, "inputs[0].text", "must not be empty"),
        ({"inputs": [pb.EmbedInput(text="x")], "dimensions": 0}, "dimensions", "must be positive"),
        (
            {
                "inputs": [
                    pb.EmbedInput(text="x"),
                    pb.EmbedInput(inline_image=pb.InlineImage(data=b"\x89PNG", mime_type="image/png")),
                ]
            },
            "inputs[1]",
            "all text or all images",
        ),
        (
            {"inputs": [pb.EmbedInput(inline_image=pb.InlineImage(data=b"\x89PNG", mime_type="image/png"))]},
            "inputs[0].inline_image",
            "embeds text only",
        ),
    ],
    ids=["none", "too-many", "too-large", "empty-text", "dimensions", "mixed", "image-on-text-route"],
)
def test_bad_requests_and_limits_are_invalid_argument_naming_the_field(
    client: LLMClient, fake: FakeUpstream, request_fields: dict[str, Any], field: str, words: str
) -> None:
    err = _failure(lambda: client.stub.Embed(pb.EmbedRequest(model="embed", **request_fields), timeout=10))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in err.message and err.field_violations[0][0] == field
    assert fake.requests() == []


def test_metrics_count_embed_requests_tokens_and_cost_by_route(
    servers: dict[ServerPath, ServerThread], fake: FakeUpstream
) -> None:
    running = servers["fast-path"].running
    assert running is not None
    before = scrape(running.metrics_port)
    with LLMClient(servers["fast-path"].target, options=channel_options(retries=False)) as c:
        _embed(c, ["four words right here", "two more"])
    after = scrape(running.metrics_port)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("llm_requests_total", rpc="Embed", route="embed", provider="openai", code="OK") == 1
    assert grew("llm_tokens_total", route="embed", kind="input") == 6
    assert grew("llm_cost_usd_total", route="embed") == pytest.approx(6 * TEXT_EMBEDDING_3_SMALL_USD_PER_TOKEN)
    assert grew("llm_request_duration_seconds_count", rpc="Embed", route="embed") == 1


def test_a_bad_kind_in_the_configuration_names_the_key(fake: FakeUpstream) -> None:
    from llm_service.config import ConfigError

    with pytest.raises(ConfigError, match=r"routes\.e\.kind: expected \"chat\", \"embedding\""):
        service_config(fake.base_url, routes={"e": {"model": "openai/x", "kind": "vectors"}})


def test_a_rate_limited_deployment_hands_the_batch_to_another_at_once(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "20"}, error={"message": "slow down"}))
    r = _embed(client, ["x"], model="embed-pool")
    assert r.gateway.attempts == 2 and r.gateway.deployment in ("a", "b")
    first, second = fake.requests("/embeddings")
    assert first.path != second.path  # no wait: the other deployment answered at once


def test_the_python_client_gives_a_float32_numpy_array_blocking_and_lists_when_asked_async(
    servers: dict[ServerPath, ServerThread],
) -> None:
    import numpy as np

    target, texts = servers["fast-path"].target, ["one", "two words"]
    with LLMClient(target, options=channel_options(retries=False)) as c:
        e = c.embed("embed", texts, dimensions=8, input_type="query", metadata={"team": "search"})
    assert isinstance(e.vectors, np.ndarray) and e.vectors.dtype == np.float32 and e.vectors.shape == (2, 8)
    assert e.vectors.tolist() == [vector_of(t, 8) for t in texts]
    assert (e.dimensions, e.input_tokens, e.route, e.attempts, e.provider_model) == (8, 3, "embed", 1, "text-embedding-3-small")

    async def embedded() -> Embeddings:
        async with AsyncLLMClient(target, options=channel_options(retries=False)) as c:
            return await c.embed("embed", texts, as_lists=True)

    assert asyncio.run(embedded()).vectors == [vector_of(t) for t in texts]


class _HiddenNumpy(importlib.abc.MetaPathFinder):
    """An import hook for one test: NumPy is not installed, as far as an import can tell."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "numpy" or name.startswith("numpy."):
            raise ImportError(f"No module named {name!r}")


def test_without_numpy_the_python_client_gives_lists_of_floats(
    servers: dict[ServerPath, ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "meta_path", [_HiddenNumpy(), *sys.meta_path])
    for name in [m for m in sys.modules if m == "numpy" or m.startswith("numpy.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError):
        importlib.import_module("numpy")
    with LLMClient(servers["fast-path"].target, options=channel_options(retries=False)) as c:
        e = c.embed("embed", ["no numpy here"])
    assert e.vectors == [vector_of("no numpy here")]
    with pytest.raises(InvalidArgument, match="route 'openai' is a chat route"):
        with LLMClient(servers["fast-path"].target, options=channel_options(retries=False)) as c:
            c.embed("openai", ["x"])


@pytest.mark.parametrize(
    ("model", "input_type", "sent", "batch"),
    [
        ("cohere/embed-v4.0", "query", "search_query", 96),
        ("voyage/voyage-3", "document", "document", 1000),
        ("gemini/text-embedding-004", "query", "RETRIEVAL_QUERY", 100),  # LiteLLM makes it Gemini's taskType
        ("openai/text-embedding-3-small", "query", None, 2048),  # OpenAI's format has no input type
    ],
)
def test_each_provider_gets_the_input_type_in_its_words_and_its_batch_size(
    model: str, input_type: str, sent: str | None, batch: int
) -> None:
    from llm_service.core.embedding import EmbedCall, batch_size, build_embed_request
    from llm_service.core.settings import Route

    route = Route(name="r", model=model)
    kwargs = build_embed_request(route, ("x",), EmbedCall(inputs=("x",), input_type=input_type)).kwargs
    assert kwargs.get("input_type") == sent
    assert batch_size(route) == batch
    assert batch_size(Route(name="r", model=model, embed_batch_size=7)) == 7
