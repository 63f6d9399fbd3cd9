"""LiteLLM's process-wide settings and the reference provider's work-arounds (PC28).

Applied once at start-up by `install()`. When LiteLLM's internals have moved, a
work-around is skipped with one warning naming the LiteLLM version.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import litellm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetupReport:
    """Which work-arounds were applied."""

    litellm_version: str
    oauth_header_fix: bool
    metadata_none_guard: bool
    mcp_gateway_stub: bool
    anthropic_malformed_sse_guard: bool
    no_422_param_retry: bool = False


_REPORT: SetupReport | None = None


def litellm_version() -> str:
    """The installed LiteLLM release."""
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _wrap_once(owner: Any, name: str, wrap: Callable[[Any], Any], what: str) -> bool:
    """Replace owner.<name> by wrap(original), once per process.

    When LiteLLM's internals have moved (owner or attribute gone), logs one warning
    naming the LiteLLM version and returns False.
    """
    original = getattr(owner, name, None) if owner is not None else None
    if original is None:
        log.warning("LiteLLM %s: %s not applied (internals moved)", litellm_version(), what)
        return False
    if getattr(original, "_llm_service_patched", False):
        return True
    patched = functools.wraps(original)(wrap(original))
    patched._llm_service_patched = True  # type: ignore[attr-defined]
    setattr(owner, name, patched)
    return True


def _oauth_header_fix() -> bool:
    """Send Claude subscription tokens as Authorization: Bearer only, with the OAuth beta flag (PC05).

    LiteLLM releases before 1.8x put an api_key that is an OAuth token into x-api-key, which
    Anthropic rejects; 1.106 gets this right itself, and then the fix changes nothing.
    """
    owner: Any = None  # None when the module moved: _wrap_once reports it
    try:
        from litellm.llms.anthropic.common_utils import AnthropicModelInfo
        from litellm.types.llms.anthropic import ANTHROPIC_OAUTH_BETA_HEADER, ANTHROPIC_OAUTH_TOKEN_PREFIX

        owner = AnthropicModelInfo
    except ImportError:
        pass

    def wrap(original: Any) -> Any:
        def validate_environment(
            self: Any,
            headers: dict[str, Any],
            model: str,
            messages: list[Any],
            optional_params: dict[str, Any],
            litellm_params: dict[str, Any],
            api_key: str | None = None,
            api_base: str | None = None,
        ) -> dict[str, Any]:
            result: dict[str, Any] = original(
                self, headers, model, messages, optional_params, litellm_params, api_key=api_key, api_base=api_base
            )
            auth = str(result.get("authorization", ""))
            x_api_key = str(result.get("x-api-key", ""))
            if x_api_key.startswith(ANTHROPIC_OAUTH_TOKEN_PREFIX) or auth.startswith(f"Bearer {ANTHROPIC_OAUTH_TOKEN_PREFIX}"):
                token = x_api_key if x_api_key.startswith(ANTHROPIC_OAUTH_TOKEN_PREFIX) else auth.removeprefix("Bearer ").strip()
                result.pop("x-api-key", None)
                result["authorization"] = f"Bearer {token}"
                beta = [b.strip() for b in str(result.get("anthropic-beta", "")).split(",") if b.strip()]
                if ANTHROPIC_OAUTH_BETA_HEADER not in beta:
                    beta.append(ANTHROPIC_OAUTH_BETA_HEADER)
                result["anthropic-beta"] = ",".join(beta)
            return result

        return validate_environment

    return _wrap_once(
        owner, "validate_environment", wrap, "Anthropic OAuth header fix (Claude subscription keys may be rejected)"
    )


def _metadata_none_guard() -> bool:
    """Drop metadata=None before LiteLLM's error handler trips over it (the reference's crash guard)."""

    def wrap(original: Any) -> Any:
        async def acompletion(*args: Any, **kwargs: Any) -> Any:
            if "metadata" in kwargs and kwargs["metadata"] is None:
                del kwargs["metadata"]
            return await original(*args, **kwargs)

        return acompletion

    return _wrap_once(litellm, "acompletion", wrap, "metadata=None guard")


_MCP_HANDLER_MODULE = "litellm.responses.mcp.litellm_proxy_mcp_handler"


def _mcp_gateway_stub() -> bool:
    """Let Responses-API models (the Codex backend, PC06) run without LiteLLM's proxy-only `mcp` dependency.

    LiteLLM 1.106's responses() imports its proxy's MCP gateway module on every call, before
    checking whether any tool names that gateway; the module needs the `mcp` package, which
    this service does not install. The service never sends MCP tools, so a stand-in module
    that says "no gateway tools" is what the real one would answer.
    """
    installed = sys.modules.get(_MCP_HANDLER_MODULE)
    if installed is not None:
        return getattr(installed, "_llm_service_stand_in", False) is True
    if importlib.util.find_spec("mcp") is not None:
        return False
    try:
        from litellm.responses import main as responses_main
    except ImportError:
        log.warning("LiteLLM %s: MCP gateway stand-in not installed (internals moved)", litellm_version())
        return False
    if not hasattr(responses_main, "_responses_try_dispatch_mcp_gateway"):
        log.warning(
            "LiteLLM %s: MCP gateway stand-in not installed (responses() changed); check Responses-API models",
            litellm_version(),
        )
        return False

    class NoMCPGateway:
        """Stands in for LiteLLM_Proxy_MCP_Handler: no tool ever names the proxy's MCP gateway."""

        @staticmethod
        def should_use_litellm_mcp_gateway(tools: Any) -> bool:
            return False

        _should_use_litellm_mcp_gateway = should_use_litellm_mcp_gateway

    stand_in = types.ModuleType(_MCP_HANDLER_MODULE)
    stand_in.LiteLLM_Proxy_MCP_Handler = NoMCPGateway  # type: ignore[attr-defined]
    stand_in._llm_service_stand_in = True  # type: ignore[attr-defined]
    sys.modules[_MCP_HANDLER_MODULE] = stand_in
    return True


MALFORMED_SSE_MESSAGE = "invalid JSON in the upstream's event stream"


def _anthropic_malformed_sse_guard() -> bool:
    """Fail an Anthropic stream whose SSE data is not JSON, instead of ending it quietly.

    LiteLLM keeps an undecodable data line in a buffer, in case the rest of it comes
    in a later line, and at the end of the stream drops whatever never decoded: the
    caller would get a truncated answer that looks complete. At the end of the stream
    a non-empty, undecodable buffer now raises.
    """
    owner: Any = None  # None when the module moved: _wrap_once reports it
    try:
        from litellm.llms.anthropic.chat.handler import ModelResponseIterator

        owner = ModelResponseIterator
    except ImportError:
        pass

    def wrap(original: Any) -> Any:
        def handle(self: Any, data_str: str, is_final: bool = False) -> Any:
            result = original(self, data_str, is_final=is_final)
            if is_final and result is None:
                buffer = getattr(self, "_json_buffer", None)
                leftover = buffer.snapshot() if buffer is not None and hasattr(buffer, "snapshot") else ""
                if leftover.strip():
                    raise ValueError(MALFORMED_SSE_MESSAGE)
            return result

        return handle

    return _wrap_once(owner, "_handle_accumulated_json_chunk", wrap, "malformed-SSE guard")


def _no_422_param_retry() -> bool:
    """Let an OpenAI-format 422 fail as itself instead of being retried and answered as nothing.

    With drop_params on, LiteLLM's OpenAI handler answers a 422 by guessing which parameters
    the body named, dropping them and sending the request again; when the second answer is a
    422 too it falls out of its loop and returns None, which reached callers as an empty OK
    answer. The service has one retry layer and already drops the parameters LiteLLM knows a
    provider does not take, so the 422 is re-raised as it came and classified as the
    provider's refusal (INVALID_ARGUMENT, UPSTREAM_BAD_REQUEST, upstream_status 422).
    """
    owner: Any = None
    try:
        from litellm.llms.openai import openai as openai_handler

        owner = openai_handler
    except ImportError:
        pass

    def wrap(original: Any) -> Any:
        def drop_params_from_unprocessable_entity_error(e: Exception, data: dict[str, Any]) -> dict[str, Any]:
            raise e

        return drop_params_from_unprocessable_entity_error

    return _wrap_once(owner, "drop_params_from_unprocessable_entity_error", wrap, "422 parameter-retry guard")


def install() -> SetupReport:
    """Apply LiteLLM's settings and the work-arounds, once per process."""
    global _REPORT
    if _REPORT is None:
        litellm.drop_params = True  # unsupported parameters are dropped, not forwarded (PC11)
        litellm.suppress_debug_info = True
        litellm.num_retries = 0
        litellm.telemetry = False
        # Token counting must never reach for the network: tokenizers not bundled with LiteLLM
        # would be downloaded from Hugging Face, blocking the event loop until that times out.
        litellm.disable_hf_tokenizer_download = True
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
            # LiteLLM installs plain-text stderr handlers of its own on import; its records go
            # through the service's JSON handler instead (one object per line, secrets redacted).
            logger = logging.getLogger(name)
            logger.handlers[:] = []
            logger.propagate = True
        logging.getLogger("LiteLLM").setLevel(logging.WARNING)
        _REPORT = SetupReport(
            litellm_version(),
            _oauth_header_fix(),
            _metadata_none_guard(),
            _mcp_gateway_stub(),
            _anthropic_malformed_sse_guard(),
            _no_422_param_retry(),
        )
    return _REPORT
