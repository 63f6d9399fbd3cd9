"""Deciding the request: from a route and a call to the arguments LiteLLM is given.

The request rules (PC01–PC11) live here: model strings rewritten for LiteLLM,
default endpoints by model prefix, Claude subscription headers and billing block,
Codex parameters, cache_control on allow-listed models (the system prompt and the end of
the conversation, PC33), the JSON-mode instruction,
tools in OpenAI function format, empty assistant messages dropped, and
stream_options for every provider but Anthropic. Beside them, from their own modules: the
reasoning parameters (`reasoning`), the route's provider-run tools (`provider_tools`) and the
thinking blocks each assistant turn takes back (`thinking`). LiteLLM then applies its own
provider knowledge.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from llm_service.core import secrets, thinking
from llm_service.core.provider_tools import provider_tool_kwargs
from llm_service.core.reasoning import reasoning_kwargs
from llm_service.core.settings import ClaudeCodeConfig, Route
from llm_service.core.types import CallRequest, ToolSpec

MINIMAX_API_BASE = "https://api.minimax.io/v1"
OPENROUTER_API_BASE = "https://openrouter.ai/api/v1"
KIMI_API_BASE = "https://api.kimi.com/coding"
CODEX_MARKER = "chatgpt.com/backend-api/codex"
CLAUDE_OAUTH_PREFIX = "sk-ant-oat"
JSON_MODE_INSTRUCTION = "Please respond with a valid JSON object."
CODEX_DEFAULT_SYSTEM = "You are a helpful assistant."
NO_KEY_PLACEHOLDER = "no-key-configured"

# Models whose provider accepts cache_control on the system message (PC07).
CACHE_CONTROL_PREFIXES = ("anthropic/", "claude-", "minimax/", "minimax-", "MiniMax-", "zai-glm", "glm-")
OPENROUTER_CACHE_CONTROL_PREFIXES = ("anthropic/", "google/gemini-", "z-ai/glm", "minimax/")


@dataclass(frozen=True)
class UpstreamRequest:
    """What will be sent: LiteLLM's keyword arguments and the facts the core needs about them."""

    kwargs: dict[str, Any]
    model: str
    stream: bool
    is_minimax: bool
    is_openrouter: bool
    is_codex: bool
    secrets: tuple[str, ...]


def resolve_model(model: str) -> str:
    """The model string LiteLLM is given: ollama/ becomes ollama_chat/, kimi/ and hive/ become anthropic/ (PC02, PC03)."""
    lower = model.lower()
    if lower.startswith("ollama/"):
        return "ollama_chat/" + model[len("ollama/") :]
    if lower.startswith(("kimi/", "hive/")):
        return "anthropic/" + model.split("/", 1)[1]
    return model


def default_api_base(model: str, hive_api_base: str) -> str:
    """The endpoint by model prefix (MiniMax, OpenRouter, Kimi, Hive) when the route configures none (PC04)."""
    lower = model.lower()
    if lower.startswith(("minimax/", "minimax-")):
        return MINIMAX_API_BASE
    if lower.startswith("openrouter/"):
        return OPENROUTER_API_BASE
    if lower.startswith("kimi/"):
        return KIMI_API_BASE
    if lower.startswith("hive/"):
        return hive_api_base
    return ""


def resolve_api_base(route: Route, hive_api_base: str) -> str:
    """The route's api_base, else the default; kimi/ and hive/ lose a trailing /v1 (PC03, PC04)."""
    base = route.api_base or default_api_base(route.model, hive_api_base)
    if route.model.lower().startswith(("kimi/", "hive/")):
        trimmed = base.rstrip("/")
        if trimmed.endswith("/v1"):
            base = trimmed[: -len("/v1")]
    return base


def supports_cache_control(model: str) -> bool:
    """Whether the system message may carry cache_control: the model's prefix is on the allow-list (PC07)."""
    if model.lower().startswith("openrouter/"):
        rest = model.split("/", 1)[1]
        return rest.startswith(OPENROUTER_CACHE_CONTROL_PREFIXES)
    return model.startswith(CACHE_CONTROL_PREFIXES)


def is_anthropic_model(model: str) -> bool:
    """Anthropic Messages models: they never get stream_options (PC11)."""
    lower = model.lower()
    return lower.startswith(("anthropic/", "claude-"))


def _utf16_unit(text: str, index: int) -> str:
    """The character at UTF-16 code unit index, as JavaScript's text[index]; "0" past the end.

    Half of a surrogate pair becomes U+FFFD, which is what JavaScript's UTF-8 encoder
    hashes for it (the reference raised UnicodeEncodeError on such text).
    """
    encoded = text.encode("utf-16-le", errors="surrogatepass")
    offset = index * 2
    if offset + 2 > len(encoded):
        return "0"
    unit = int.from_bytes(encoded[offset : offset + 2], "little")
    return "\ufffd" if 0xD800 <= unit <= 0xDFFF else chr(unit)


def _first_user_text(messages: list[dict[str, Any]]) -> str:
    for msg in messages:
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
                    return str(block["text"])
    return ""


def claude_billing_block(messages: list[dict[str, Any]], cc: ClaudeCodeConfig) -> str:
    """The billing system block Anthropic requires on subscription (OAuth) calls (PC05)."""
    text = _first_user_text(messages)
    sampled = "".join(_utf16_unit(text, i) for i in (4, 7, 20))
    digest = hashlib.sha256(f"{cc.billing_salt}{sampled}{cc.version}".encode()).hexdigest()
    return f"x-anthropic-billing-header: cc_version={cc.version}.{digest[:3]}; cc_entrypoint={cc.entrypoint}; cch=00000;"


def tool_to_openai(tool: ToolSpec) -> dict[str, Any]:
    """A tool in OpenAI function format, with properties and required from its schema (PC09)."""
    params = tool.parameters
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": {
                "type": "object",
                "properties": params.get("properties", {}),
                "required": params.get("required", []),
            },
        },
    }


def is_empty_assistant(msg: dict[str, Any]) -> bool:
    """An assistant message with no content and no tool calls (dropped before sending, PC10)."""
    return msg.get("role") == "assistant" and not msg.get("content") and not msg.get("tool_calls")


def build_messages(
    call: CallRequest,
    *,
    system: str,
    model: str,
    oauth: bool,
    codex: bool,
    cc: ClaudeCodeConfig,
    route: Route | None = None,
) -> list[dict[str, Any]]:
    """The message list sent upstream: billing block, system, conversation (assistant turns with the
    thinking blocks this route takes back).

    Cache-capable models get at most two cache breakpoints: the system prompt (without its
    dynamic suffix) and the last message of the conversation (PC07, PC33).
    """
    cached = supports_cache_control(model)
    suffix = call.system_dynamic_suffix
    if call.json_mode:
        if suffix:
            suffix = f"{suffix}\n\n{JSON_MODE_INSTRUCTION}"
        else:
            system = f"{system}\n\n{JSON_MODE_INSTRUCTION}" if system else JSON_MODE_INSTRUCTION
    out: list[dict[str, Any]] = []
    if oauth:
        out.append({"role": "system", "content": claude_billing_block(call.messages, cc)})
    if system or suffix:
        out.append(system_message(system, suffix, cached))
    route_model, route_name = (route.model, route.name) if route is not None else (model, "")
    out.extend(thinking.for_route(m, route_model, model, route_name) for m in call.messages if not is_empty_assistant(m))
    if cached and out and out[-1].get("role") != "system":
        out[-1] = {**out[-1], "cache_control": {"type": "ephemeral"}}
    if codex and not any(m.get("role") == "system" for m in out):
        out.insert(0, {"role": "system", "content": CODEX_DEFAULT_SYSTEM})
    return out


def system_message(system: str, suffix: str, cached: bool) -> dict[str, Any]:
    """The system message: for a cache-capable model with a dynamic suffix, two text blocks with only
    the first marked; else one text, the suffix joined by a blank line, marked when cache-capable (PC33)."""
    if suffix and cached:
        blocks: list[dict[str, Any]] = []
        if system:
            blocks.append({"type": "text", "text": system, "cache_control": {"type": "ephemeral"}})
        blocks.append({"type": "text", "text": suffix})
        return {"role": "system", "content": blocks}
    text = f"{system}\n\n{suffix}" if system and suffix else system or suffix
    sys_msg: dict[str, Any] = {"role": "system", "content": text}
    if cached:
        sys_msg["cache_control"] = {"type": "ephemeral"}
    return sys_msg


def build_request(
    route: Route,
    call: CallRequest,
    *,
    stream: bool,
    cc: ClaudeCodeConfig,
    hive_api_base: str,
    timeout_s: float,
    system_override: str | None = None,
    tools_override: tuple[ToolSpec, ...] | None = None,
) -> UpstreamRequest:
    """Everything LiteLLM needs for one upstream call on this route."""
    model = resolve_model(route.model)
    api_base = resolve_api_base(route, hive_api_base)
    key = route.key.reveal() if route.key is not None else ""
    oauth = key.startswith(CLAUDE_OAUTH_PREFIX)
    codex = CODEX_MARKER in api_base
    anthropic = is_anthropic_model(model)
    headers: dict[str, str] = dict(route.headers)
    if oauth:
        headers.setdefault("user-agent", f"claude-code/{cc.version}")
    if route.model.lower().startswith("hive/") and key:
        headers["Authorization"] = f"Bearer {key}"
    system = call.system if system_override is None else system_override
    tools = call.tools if tools_override is None else tools_override
    hosted = provider_tool_kwargs(route, model)
    if "beta" in hosted:
        betas = [b for b in headers.get("anthropic-beta", "").split(",") if b]
        headers["anthropic-beta"] = ",".join([*betas, hosted.pop("beta")])
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": build_messages(call, system=system, model=model, oauth=oauth, codex=codex, cc=cc, route=route),
        "max_tokens": call.max_tokens if call.max_tokens is not None else route.max_tokens,
        "api_key": key or NO_KEY_PLACEHOLDER,
        "timeout": timeout_s,
        "num_retries": 0,
        "max_retries": 0,
    }
    if api_base:
        kwargs["api_base"] = api_base
    if headers:
        kwargs["extra_headers"] = headers
    if stream:
        kwargs["stream"] = True
        if not anthropic:
            kwargs["stream_options"] = {"include_usage": True}
    if tools:
        kwargs["tools"] = [tool_to_openai(t) for t in tools]
        if call.tool_choice is not None:
            kwargs["tool_choice"] = call.tool_choice
    if hosted:  # the route's provider tools, after the caller's own
        kwargs["tools"] = [*kwargs.get("tools", []), *hosted.pop("tools", [])]
        kwargs.update(hosted)
        if not kwargs["tools"]:
            del kwargs["tools"]
    if call.temperature is not None:
        kwargs["temperature"] = call.temperature
    if call.top_p is not None:
        kwargs["top_p"] = call.top_p
    if call.stop:
        kwargs["stop"] = list(call.stop)
    if call.seed is not None:
        kwargs["seed"] = call.seed
    if call.response_format is not None:
        kwargs["response_format"] = call.response_format
    kwargs.update(reasoning_kwargs(route, call, model, kwargs["max_tokens"]))
    if codex:
        kwargs.pop("max_tokens", None)
        kwargs.pop("stream_options", None)
        kwargs["store"] = False
    return UpstreamRequest(
        kwargs=kwargs,
        model=model,
        stream=stream,
        is_minimax=route.model.lower().startswith(("minimax/", "minimax-")),
        is_openrouter=route.model.lower().startswith("openrouter/") or "openrouter.ai/api/v1" in api_base.lower(),
        is_codex=codex,
        secrets=secrets.remember((key, *headers.values())),
    )
