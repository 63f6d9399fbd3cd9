"""The direct transport's request: LiteLLM's provider configuration decides the HTTP request, we send it.

LiteLLM keeps deciding what goes upstream (URL, headers, body, parameter mapping,
drop_params) through the same provider configuration classes its own handlers use;
only the sending and the decoding of the answer move to `fast_transport` and
`direct_decode`. Each supported provider family reproduces the glue LiteLLM 1.106's
handler puts around those classes, and `tests/test_direct_vs_litellm.py` checks at the fake
upstream that both paths send the same request.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any, Literal

import litellm
from litellm.anthropic_beta_headers_manager import update_request_with_filtered_beta
from litellm.types.utils import LlmProviders
from litellm.utils import ProviderConfigManager, get_optional_params, get_optional_params_embeddings

from llm_service.core.json_pieces import dumps_in_pieces
from llm_service.core.request import UpstreamRequest

Wire = Literal["openai", "anthropic"]

# Providers LiteLLM sends through its OpenAI SDK handler (`_complete_custom_openai`).
OPENAI_SDK_PROVIDERS = frozenset({"openai", "custom_openai"})
# Providers LiteLLM sends through its generic HTTP handler with an OpenAI-compatible body.
_OPENAI_HTTP_PROVIDERS = frozenset({"openrouter", "groq", "deepseek", "hosted_vllm", "minimax"})
# Request keys the service passes to litellm.acompletion that are not model parameters.
_CALL_OPTIONS = frozenset(
    {"model", "messages", "api_key", "api_base", "extra_headers", "timeout", "num_retries", "max_retries", "_skip_mcp_handler"}
)
_OPENROUTER_ATTRIBUTION = {"HTTP-Referer": "https://litellm.ai", "X-Title": "liteLLM"}
_ANTHROPIC_DEFAULT_BASE = "https://api.anthropic.com"


@dataclass(frozen=True)
class HttpCall:
    """One upstream HTTP request, ready to send, and how to read its answer."""

    wire: Wire
    provider: str
    model: str
    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool


def direct_provider(req: UpstreamRequest) -> str | None:
    """The LiteLLM provider when the direct transport can carry this request, else None."""
    resolved = None if req.is_codex else _resolve(req.model, req.kwargs.get("api_base"))
    return resolved[0] if resolved is not None else None


@functools.lru_cache(maxsize=1024)
def _resolve(model: str, api_base: str | None) -> tuple[str, str, str] | None:
    """LiteLLM's provider, model name and default endpoint for a direct-transport route; asked once per route."""
    try:
        litellm_model, provider, _, default_base = litellm.get_llm_provider(model, api_base=api_base)
    except Exception:
        return None
    if provider in OPENAI_SDK_PROVIDERS or provider in _OPENAI_HTTP_PROVIDERS or provider == "anthropic":
        return str(provider), str(litellm_model), str(default_base or "")
    return None


@dataclass
class _Parts:
    """What LiteLLM's handlers hand their provider configuration, for one request."""

    config: Any
    provider: str
    model: str
    messages: list[dict[str, Any]]
    optional: dict[str, Any]
    litellm_params: dict[str, Any]
    api_key: str
    api_base: str
    extra_headers: dict[str, str]


def prepare(req: UpstreamRequest, provider: str) -> HttpCall | None:
    """The HTTP request LiteLLM would send for req; None when only LiteLLM's own handler can send it."""
    kwargs = req.kwargs
    resolved = _resolve(req.model, kwargs.get("api_base"))
    if resolved is None:
        return None
    _, model, default_base = resolved
    messages = kwargs["messages"]
    params = {k: v for k, v in kwargs.items() if k not in _CALL_OPTIONS}
    optional = get_optional_params(model=model, custom_llm_provider=provider, messages=messages, **params)
    if optional.pop("json_mode", False) or optional.get("fake_stream"):
        return None  # LiteLLM rewrites such answers (JSON-mode tool, faked stream): its own path reads them
    config = ProviderConfigManager.get_provider_chat_config(model=model, provider=LlmProviders(provider))
    if config is None:
        return None
    api_base = kwargs.get("api_base") or default_base
    api_key = kwargs["api_key"]
    extra_headers = dict(kwargs.get("extra_headers") or {})
    if provider == "openrouter":
        extra_headers = {**_OPENROUTER_ATTRIBUTION, **extra_headers}
    parts = _Parts(
        config, provider, model, messages, optional, {"api_base": api_base, "api_key": api_key}, api_key, api_base, extra_headers
    )
    if provider == "anthropic":
        return _anthropic(parts, req.stream)
    if provider in OPENAI_SDK_PROVIDERS:
        return _openai_sdk(parts)
    return _openai_http(parts)


def _json(body: dict[str, Any]) -> bytes:
    """The body's JSON. A large request is prepared off the event loop (Engine._plan), where one
    json.dumps would still hold the GIL, and the loop with it, for the whole body: there it is
    made in bounded pieces, the same bytes."""
    if asyncio._get_running_loop() is None:
        return dumps_in_pieces(body)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _anthropic(p: _Parts, stream: bool) -> HttpCall:
    """LiteLLM's Anthropic handler: validate_environment, transform_request, beta filtering, /v1/messages."""
    p.optional.pop("stream", None)
    p.optional.pop("is_vertex_request", None)
    headers = p.config.validate_environment(
        api_key=p.api_key,
        headers=p.extra_headers,
        model=p.model,
        messages=p.messages,
        optional_params={**p.optional, "is_vertex_request": False},
        litellm_params=p.litellm_params,
        api_base=p.api_base,
    )
    body = p.config.transform_request(
        model=p.model,
        messages=p.messages,
        optional_params={**p.optional, "is_vertex_request": False},
        litellm_params=p.litellm_params,
        headers=headers,
    )
    headers, body = update_request_with_filtered_beta(headers=headers, request_data=body, provider="anthropic")
    if stream:
        body["stream"] = True
    base = (p.api_base or _ANTHROPIC_DEFAULT_BASE).rstrip("/")
    url = base if base.endswith("/v1/messages") else base + "/v1/messages"
    return HttpCall("anthropic", "anthropic", p.model, url, _str_headers(headers), _json(body), stream)


def _openai_sdk(p: _Parts) -> HttpCall:
    """LiteLLM's OpenAI handler: transform_request, then what the openai SDK does with the result."""
    stream_options = p.optional.pop("stream_options", None)
    stream = bool(p.optional.pop("stream", False))
    body = p.config.transform_request(
        model=p.model, messages=p.messages, optional_params=p.optional, litellm_params=p.litellm_params, headers={}
    )
    extra_body = body.pop("extra_body", None) or {}
    body.pop("extra_headers", None)
    body.pop("extra_query", None)
    if stream:
        body["stream"] = True
        if stream_options is not None:
            body["stream_options"] = stream_options
    body.update(extra_body)
    base = (p.api_base or "https://api.openai.com/v1").rstrip("/")
    headers = {"Authorization": f"Bearer {p.api_key}", "Content-Type": "application/json"}
    headers.update(p.config.get_attribution_headers() or {})
    headers.update(p.extra_headers)
    return HttpCall("openai", p.provider, p.model, base + "/chat/completions", headers, _json(body), stream)


def _openai_http(p: _Parts) -> HttpCall:
    """LiteLLM's generic HTTP handler with an OpenAI-compatible provider configuration."""
    stream = bool(p.optional.pop("stream", False))
    extra_body = p.optional.pop("extra_body", None)
    headers = p.config.validate_environment(
        api_key=p.api_key,
        headers=p.extra_headers,
        model=p.model,
        messages=p.messages,
        optional_params=p.optional,
        api_base=p.api_base,
        litellm_params=p.litellm_params,
    )
    url = p.config.get_complete_url(
        api_base=p.api_base,
        api_key=p.api_key,
        model=p.model,
        optional_params=p.optional,
        stream=stream,
        litellm_params=p.litellm_params,
    )
    body = p.config.transform_request(
        model=p.model, messages=p.messages, optional_params=p.optional, litellm_params=p.litellm_params, headers=headers
    )
    if extra_body is not None:
        extra = p.config.transform_extra_body(extra_body=extra_body, request=body, model=p.model, litellm_params=p.litellm_params)
        body = {**body, **extra}
    body.pop("stream", None)
    if stream and p.config.supports_stream_param_in_request_body:
        body["stream"] = True
    return HttpCall("openai", p.provider, p.model, url, _str_headers(headers), _json(body), stream)


def _str_headers(headers: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in headers.items() if v is not None}


# LiteLLM's own keyword arguments of an embedding request; the rest are model parameters.
_EMBED_CALL_OPTIONS = frozenset(
    {"model", "input", "api_key", "api_base", "extra_headers", "timeout", "num_retries", "max_retries"}
)


# Providers whose embeddings LiteLLM sends with its generic HTTP handler and an OpenAI-format
# embedding configuration (the answer is OpenAI's format too).
_OPENAI_HTTP_EMBEDDING_PROVIDERS = frozenset({"hosted_vllm"})


def prepare_embedding(req: UpstreamRequest) -> HttpCall | None:
    """The POST /embeddings LiteLLM would send for an OpenAI-format embedding request, else None.

    The parameters are mapped by LiteLLM's `get_optional_params_embeddings` (which also drops
    what the model does not take, such as `dimensions` before text-embedding-3). For OpenAI,
    LiteLLM sends `{"model", "input", **params}` through the openai SDK with no
    `encoding_format` of its own, and the same body is built here; for an OpenAI-compatible
    provider with an embedding configuration (hosted vLLM) that configuration builds the
    headers, URL and body, as LiteLLM's generic handler has it do."""
    kwargs = req.kwargs
    resolved = _resolve(req.model, kwargs.get("api_base"))
    if resolved is None or resolved[0] not in OPENAI_SDK_PROVIDERS | _OPENAI_HTTP_EMBEDDING_PROVIDERS:
        return None
    provider, model, _ = resolved
    params = {k: v for k, v in kwargs.items() if k not in _EMBED_CALL_OPTIONS}
    optional = get_optional_params_embeddings(model=model, custom_llm_provider=provider, **params)
    if provider in _OPENAI_HTTP_EMBEDDING_PROVIDERS:
        return _openai_http_embedding(req, provider, model, optional)
    if optional.get("encoding_format") is None:
        optional.pop("encoding_format", None)
    body = {"model": model, "input": kwargs["input"], **optional}
    base = (kwargs.get("api_base") or "https://api.openai.com/v1").rstrip("/")
    headers = {"Authorization": f"Bearer {kwargs['api_key']}", "Content-Type": "application/json"}
    headers.update(kwargs.get("extra_headers") or {})
    return HttpCall("openai", provider, model, base + "/embeddings", headers, _json(body), False)


def _openai_http_embedding(req: UpstreamRequest, provider: str, model: str, optional: dict[str, Any]) -> HttpCall | None:
    """LiteLLM's generic embedding handler: the provider's embedding configuration decides it all."""
    config = ProviderConfigManager.get_provider_embedding_config(model=model, provider=LlmProviders(provider))
    if config is None or optional.pop("extra_body", None):
        return None
    kwargs = req.kwargs
    api_key, api_base = kwargs["api_key"], kwargs.get("api_base")
    litellm_params = {"api_key": api_key, "api_base": api_base}
    headers = config.validate_environment(
        api_key=api_key,
        headers=dict(kwargs.get("extra_headers") or {}),
        model=model,
        messages=[],
        optional_params=optional,
        litellm_params=litellm_params,
    )
    url = config.get_complete_url(
        api_base=api_base, api_key=api_key, model=model, optional_params=optional, litellm_params=litellm_params
    )
    body = config.transform_embedding_request(model=model, input=kwargs["input"], optional_params=optional, headers=headers)
    return HttpCall("openai", provider, model, url, _str_headers(headers), _json(body), False)
