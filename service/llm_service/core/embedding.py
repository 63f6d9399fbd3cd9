"""Embeddings: what an Embed call asks for, a route's kind, and each upstream request it makes.

A route is a chat or an embedding route: its `kind` setting, else LiteLLM's model map
(`mode: embedding`), else chat. A call's inputs are split into batches of the provider's
largest request (`MAX_BATCH_BY_PROVIDER`, or the route's `embed_batch_size`); each batch is
one upstream request, planned once (`EmbedPlanner`) and attempted by the engine like a whole
chat answer. The request is LiteLLM's `aembedding` keyword arguments; the direct transport
sends the same body itself where it speaks the provider's wire format (OpenAI's).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import litellm

from llm_service.core import errors, secrets
from llm_service.core.request import NO_KEY_PLACEHOLDER, UpstreamRequest
from llm_service.core.settings import Route
from llm_service.core.transport import PreparedEmbedding, Transport
from llm_service.core.types import GatewayInfo, Usage

CHAT = "chat"
EMBEDDING = "embedding"

# The most inputs one request may carry, by LiteLLM provider (the providers' documented limits);
# a provider not listed gets DEFAULT_MAX_BATCH. A route's embed_batch_size overrides both.
MAX_BATCH_BY_PROVIDER = {
    "openai": 2048,
    "azure": 2048,
    "hosted_vllm": 2048,
    "cohere": 96,
    "voyage": 1000,
    "gemini": 100,
    "vertex_ai": 250,
    "mistral": 512,
}
DEFAULT_MAX_BATCH = 100

# The caller's input type, in each provider's words, and the LiteLLM argument that carries it.
# LiteLLM maps `input_type` to Gemini's and Vertex's task type itself.
_INPUT_TYPES = {
    "cohere": {"query": "search_query", "document": "search_document"},
    "voyage": {"query": "query", "document": "document"},
    "gemini": {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"},
    "vertex_ai": {"query": "RETRIEVAL_QUERY", "document": "RETRIEVAL_DOCUMENT"},
}
# Providers whose LiteLLM embedding takes images (base64 data URLs in `input`).
IMAGE_PROVIDERS = frozenset({"cohere"})


@dataclass(frozen=True)
class EmbedCall:
    """An Embed call, provider-neutral: texts, or images as data: URLs (never both in one call)."""

    inputs: tuple[str, ...]
    images: bool = False
    dimensions: int | None = None
    input_type: str = ""  # "query", "document", or "" for the provider's default
    max_retries: int | None = None
    large: bool = False  # the request is large enough that building its upstream requests leaves the event loop


@dataclass(frozen=True)
class EmbedAnswer:
    """What one upstream request answered: a vector per input, in order, and its billing."""

    vectors: list[list[float]]
    input_tokens: int
    model: str


@dataclass(frozen=True)
class Embedding:
    """A whole Embed answer: the vectors of every batch, in the inputs' order."""

    vectors: list[list[float]]
    usage: Usage
    cost_usd: float
    provider_model: str
    gateway: GatewayInfo


@functools.lru_cache(maxsize=1024)
def provider_of(model: str) -> str:
    """LiteLLM's provider for a model string ("" when it cannot tell)."""
    try:
        return str(litellm.get_llm_provider(model)[1])
    except Exception:
        return ""


@functools.lru_cache(maxsize=1024)
def _mapped_mode(model: str) -> str:
    """The `mode` LiteLLM's (local) model map gives the model, as named or by its bare name."""
    try:
        bare = str(litellm.get_llm_provider(model)[0])
    except Exception:
        bare = model
    for name in (model, bare):
        mode = (litellm.model_cost.get(name) or {}).get("mode")
        if mode:
            return str(mode)
    return ""


def route_kind(route: Route) -> str:
    """CHAT or EMBEDDING: the route's `kind`, else its model's mode in LiteLLM's map, else CHAT."""
    if route.kind:
        return route.kind
    return EMBEDDING if _mapped_mode(route.model) == EMBEDDING else CHAT


def batch_size(route: Route) -> int:
    """The most inputs one upstream request of this route carries."""
    if route.embed_batch_size is not None:
        return route.embed_batch_size
    return MAX_BATCH_BY_PROVIDER.get(provider_of(route.model), DEFAULT_MAX_BATCH)


def batches(call: EmbedCall, size: int) -> list[tuple[str, ...]]:
    """The call's inputs cut into requests of at most size inputs, in order."""
    return [call.inputs[i : i + size] for i in range(0, len(call.inputs), size)]


def build_embed_request(route: Route, inputs: tuple[str, ...], call: EmbedCall) -> UpstreamRequest:
    """LiteLLM's `aembedding` arguments for one batch of a call on the route (one deployment's view)."""
    key = route.key.reveal() if route.key is not None else ""
    headers = dict(route.headers)
    kwargs: dict[str, Any] = {
        "model": route.model,
        "input": list(inputs),
        "api_key": key or NO_KEY_PLACEHOLDER,
        "timeout": route.timeout_s,
        "num_retries": 0,
        "max_retries": 0,
    }
    if route.api_base:
        kwargs["api_base"] = route.api_base
    if headers:
        kwargs["extra_headers"] = headers
    if call.dimensions is not None:
        kwargs["dimensions"] = call.dimensions
    input_type = _INPUT_TYPES.get(provider_of(route.model), {}).get(call.input_type)
    if input_type is not None:
        kwargs["input_type"] = input_type
    return UpstreamRequest(
        kwargs=kwargs,
        model=route.model,
        stream=False,
        is_minimax=False,
        is_openrouter=False,
        is_codex=False,
        secrets=secrets.remember((key, *headers.values())),
    )


def answered_vectors(data: Any, count: int) -> list[list[float]]:
    """The vectors of an OpenAI-format `data` list (entries with `index` and `embedding`), in input
    order; an answer without exactly one vector per input is not the provider's format."""
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else 0
        raise errors.UpstreamBadResponse(f"the upstream answered {got} vectors for {count} inputs", upstream_status=200)

    def field(entry: Any, name: str) -> Any:
        return entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)

    ordered: list[list[float] | None] = [None] * count
    for position, entry in enumerate(data):
        index = field(entry, "index")
        index = position if not isinstance(index, int) else index
        vector = field(entry, "embedding")
        if not 0 <= index < count or ordered[index] is not None or not isinstance(vector, list):
            raise errors.UpstreamBadResponse("the upstream's vectors are not one per input", upstream_status=200)
        ordered[index] = vector
    return [v for v in ordered if v is not None]


@dataclass(frozen=True)
class EmbedPlan:
    """How every attempt of one batch on one route (or deployment) is made."""

    route: Route
    request: UpstreamRequest
    prepared: PreparedEmbedding
    count: int  # the batch's inputs


class EmbedPlanner:
    """Plans embedding requests: the direct transport where it speaks the wire, else LiteLLM's."""

    def __init__(self, direct: Transport, litellm_transport: Transport) -> None:
        self._direct = direct
        self._litellm = litellm_transport

    def plan(self, route: Route, inputs: tuple[str, ...], call: EmbedCall) -> EmbedPlan:
        """The plan for one batch of call on route."""
        if not route.ready:
            assert route.key_source is not None
            raise errors.RouteNotReady(
                f"route '{route.name}' has no provider key on the server: set {route.key_source.describe()}"
            )
        if call.images and provider_of(route.model) not in IMAGE_PROVIDERS:
            raise errors.InvalidRequest(
                "inputs[0].inline_image", f"route '{route.name}' embeds text only: its provider does not take images"
            )
        req = build_embed_request(route, inputs, call)
        prepared = (
            self._direct.prepare_embedding(route, req) if route.transport == "direct" else None
        ) or self._litellm.prepare_embedding(route, req)
        assert prepared is not None  # LiteLLM's transport carries every embedding request
        return EmbedPlan(route, req, prepared, len(inputs))
