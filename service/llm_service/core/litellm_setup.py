"""LiteLLM's process-wide settings and the work-arounds the pinned release still needs (PC28).

Applied once at start-up by `install()`. Each work-around names the LiteLLM code it
corrects. When that code has moved (after a LiteLLM upgrade), `install()` raises
`LiteLLMInternalsMoved` naming the LiteLLM version and the work-around: the server does
not start, rather than start with a fix that silently does nothing.
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

MALFORMED_SSE_MESSAGE = "invalid JSON in the upstream's event stream"
_MCP_HANDLER_MODULE = "litellm.responses.mcp.litellm_proxy_mcp_handler"


class LiteLLMInternalsMoved(RuntimeError):
    """A work-around's target is gone from the installed LiteLLM: re-read its code before upgrading."""


@dataclass(frozen=True)
class SetupReport:
    """Which work-arounds were applied."""

    litellm_version: str
    mcp_gateway_stub: bool
    anthropic_malformed_sse_guard: bool
    no_422_param_retry: bool


_REPORT: SetupReport | None = None


def litellm_version() -> str:
    """The installed LiteLLM release."""
    try:
        return importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _moved(what: str, detail: str) -> LiteLLMInternalsMoved:
    return LiteLLMInternalsMoved(f"LiteLLM {litellm_version()}: {what} cannot be applied: {detail}")


def _wrap_once(owner: Any, name: str, wrap: Callable[[Any], Any], what: str) -> bool:
    """Replace owner.<name> by wrap(original), once per process; raise when owner.<name> is gone."""
    original = getattr(owner, name, None)
    if not callable(original):
        raise _moved(what, f"{getattr(owner, '__name__', owner)}.{name} is gone")
    if getattr(original, "_llm_service_patched", False):
        return True
    patched = functools.wraps(original)(wrap(original))
    patched._llm_service_patched = True  # type: ignore[attr-defined]
    setattr(owner, name, patched)
    return True


def _mcp_gateway_stub() -> bool:
    """Let calls with tools, and Responses-API models (the Codex backend, PC06), run without `mcp`.

    LiteLLM 1.106 imports its proxy's MCP gateway module, which needs the `mcp` package
    this service does not install, on every responses() call before it reads its
    `_skip_mcp_handler` flag (responses/main.py, `_responses_try_dispatch_mcp_gateway`),
    and on every completion() call with tools unless that flag is set (main.py,
    `completion`). The service never sends MCP tools, so a stand-in module that says
    "no gateway tools" is what the real one would answer, on both paths. Nothing is
    replaced when `mcp` is installed.
    """
    installed = sys.modules.get(_MCP_HANDLER_MODULE)
    if installed is not None:
        return getattr(installed, "_llm_service_stand_in", False) is True
    if importlib.util.find_spec("mcp") is not None:
        return False
    if importlib.util.find_spec(_MCP_HANDLER_MODULE) is None:
        raise _moved("the MCP gateway stand-in", f"{_MCP_HANDLER_MODULE} is gone")

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


def _anthropic_malformed_sse_guard() -> bool:
    """Fail an Anthropic stream whose SSE data is not JSON, instead of ending it quietly.

    LiteLLM 1.106 keeps an undecodable data line in a buffer, in case the rest of it
    comes in a later line, and at the end of the stream drops whatever never decoded
    (anthropic/chat/handler.py, `ModelResponseIterator.__anext__`: the drain through
    `_handle_accumulated_json_chunk(is_final=True)` returns None, then
    StopAsyncIteration). The caller would get a cut-short answer, or one whose later
    events were swallowed. At the end of the stream a non-empty, undecodable buffer
    (LiteLLM's `accumulated_json`) now raises, as the direct path does.

    The guard reads LiteLLM internals, so install() proves it on a one-line stream and
    raises LiteLLMInternalsMoved when it no longer takes effect.
    """
    what = "the Anthropic malformed-SSE guard"
    try:
        from litellm.llms.anthropic.chat.handler import ModelResponseIterator
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc
    if not isinstance(getattr(ModelResponseIterator, "accumulated_json", None), property):
        raise _moved(what, "ModelResponseIterator.accumulated_json is gone")

    def wrap(original: Any) -> Any:
        def handle(self: Any, data_str: str, is_final: bool = False) -> Any:
            result = original(self, data_str, is_final=is_final)
            if is_final and result is None and self.accumulated_json.strip():
                raise ValueError(MALFORMED_SSE_MESSAGE)
            return result

        return handle

    _wrap_once(ModelResponseIterator, "_handle_accumulated_json_chunk", wrap, what)
    try:
        list(ModelResponseIterator(streaming_response=iter(["data: {not json"]), sync_stream=True))
    except ValueError as exc:
        if str(exc) == MALFORMED_SSE_MESSAGE:
            return True
        raise _moved(what, f"a malformed stream raised {exc!r} instead") from exc
    raise _moved(what, "a malformed stream still ends quietly")


def _no_422_param_retry() -> bool:
    """Let an OpenAI-format 422 fail as itself instead of being retried and answered as nothing.

    With drop_params on, LiteLLM 1.106's OpenAI handler answers a 422 by guessing which
    parameters the body named, dropping them and sending the request again
    (llms/openai/openai.py, `drop_params_from_unprocessable_entity_error` inside
    `for _ in range(2)`); when the second answer is a 422 too it falls out of its loop
    and returns None, which reached callers as an empty OK answer. The service has one
    retry layer and already drops the parameters LiteLLM knows a provider does not take,
    so the 422 is re-raised as it came and classified as the provider's refusal
    (INVALID_ARGUMENT, UPSTREAM_BAD_REQUEST, upstream_status 422).
    """
    what = "the 422 parameter-retry guard"
    try:
        from litellm.llms.openai import openai as openai_handler
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc

    def wrap(original: Any) -> Any:
        def drop_params_from_unprocessable_entity_error(e: Exception, data: dict[str, Any]) -> dict[str, Any]:
            raise e

        return drop_params_from_unprocessable_entity_error

    return _wrap_once(openai_handler, "drop_params_from_unprocessable_entity_error", wrap, what)


def _route_litellm_logs_to_the_service() -> None:
    """LiteLLM's records go through the service's JSON handler (one object per line, secrets redacted).

    On import LiteLLM gives its three loggers a plain-text stderr handler of its own
    (_logging.py); those are removed, and records propagate to the root logger.
    """
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        logger.setLevel(logging.WARNING)


def install() -> SetupReport:
    """Apply LiteLLM's settings and the work-arounds, once per process; raise LiteLLMInternalsMoved."""
    global _REPORT
    if _REPORT is None:
        # Parameters a provider does not take are dropped, not forwarded (PC11).
        litellm.drop_params = True
        litellm.suppress_debug_info = True
        # The service is the one retry layer (PC12–PC16): LiteLLM never retries by itself.
        litellm.num_retries = 0
        # Token counting must never reach for the network: tokenizers not bundled with LiteLLM
        # would be downloaded from Hugging Face, blocking the event loop until that times out.
        litellm.disable_hf_tokenizer_download = True
        _route_litellm_logs_to_the_service()
        _REPORT = SetupReport(
            litellm_version(),
            mcp_gateway_stub=_mcp_gateway_stub(),
            anthropic_malformed_sse_guard=_anthropic_malformed_sse_guard(),
            no_422_param_retry=_no_422_param_retry(),
        )
    return _REPORT
