"""LiteLLM's process-wide settings and the work-arounds the pinned release still needs (PC28).

Applied once at start-up by `install()`. Each work-around names the LiteLLM code it
corrects. When that code has moved (after a LiteLLM upgrade), `install()` raises
`LiteLLMInternalsMoved` naming the LiteLLM version and the work-around: the server does
not start, rather than start with a fix that silently does nothing. A work-around that
changes what LiteLLM makes of an answer proves itself at install on a small probe answer.

Most of them make LiteLLM's path read real provider answers as the direct path does
(tests/test_corpus.py replays recorded ones through both).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import itertools
import json
import logging
import sys
import types
from collections.abc import Callable, Mapping
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
    groq_in_band_error_status: bool
    groq_answer_without_service_tier: bool
    content_as_sent: bool
    stream_deltas_kept: bool
    anthropic_server_tools_kept_out: bool
    anthropic_advisor_iterations_left_out: bool
    anthropic_in_band_error_status: bool


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
    """Replace owner.<name> by wrap(original), once per process; raise when owner.<name> is gone
    (for a class, when the class itself no longer defines it: a parent's is not the code fixed)."""
    original = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)
    if not callable(original):
        raise _moved(what, f"{getattr(owner, '__name__', owner)}.{name} is gone")
    applied = getattr(original, "_llm_service_work_arounds", ())  # two may wrap one function, each once
    if what in applied:
        return True
    patched = functools.wraps(original)(wrap(original))
    patched._llm_service_patched = True  # type: ignore[attr-defined]
    patched._llm_service_work_arounds = (*applied, what)  # type: ignore[attr-defined]
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


def _groq_in_band_error_status() -> bool:
    """Give an error Groq sends inside a 200 stream the HTTP status it stands for.

    LiteLLM 1.106 raises it as OpenAIError with Groq's `code` ("tool_use_failed") as the
    status (llms/groq/chat/transformation.py, `GroqChatCompletionStreamingHandler.chunk_parser`);
    its stream wrapper then fails on `int("tool_use_failed")` building MidStreamFallbackError
    (exceptions.py), and the caller got INTERNAL. The status is now the error's own
    `status_code` (Groq sends one), else its type's, as the direct path reads it
    (`direct_decode.in_band_status`), so a 400 is the provider's refusal of the request.
    """
    what = "the Groq in-band error status"
    try:
        from litellm.llms.groq.chat.transformation import GroqChatCompletionStreamingHandler
        from litellm.llms.openai.common_utils import OpenAIError
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc

    from llm_service.core.direct_decode import in_band_status

    def wrap(original: Any) -> Any:
        def chunk_parser(self: Any, chunk: dict[str, Any]) -> Any:
            error = chunk.get("error") if isinstance(chunk, dict) else None
            if error:
                body = error if isinstance(error, dict) else {"message": str(error)}
                raise OpenAIError(status_code=in_band_status(body), message=str(body.get("message") or error), body=body)
            return original(self, chunk)

        return chunk_parser

    _wrap_once(GroqChatCompletionStreamingHandler, "chunk_parser", wrap, what)
    probe = {"error": {"message": "m", "type": "invalid_request_error", "code": "tool_use_failed", "status_code": 400}}
    try:
        GroqChatCompletionStreamingHandler(streaming_response=iter(()), sync_stream=True).chunk_parser(probe)
    except OpenAIError as exc:
        if exc.status_code == 400:
            return True
        raise _moved(what, f"an in-band 400 was raised with status {exc.status_code!r}") from exc
    raise _moved(what, "an in-band error chunk was not raised")


def _groq_answer_without_service_tier() -> bool:
    """Let a whole Groq answer without `service_tier` through instead of failing it.

    LiteLLM 1.106 reads `getattr(model_response, "service_tier")` with no default after
    decoding a Groq answer (llms/groq/chat/transformation.py, `GroqChatConfig.transform_response`);
    the object it reads is built from the answer's JSON alone
    (llms/openai_like/chat/transformation.py, `OpenAILikeChatConfig._transform_response`), so an
    answer without the field (most of them) raised AttributeError, which reached callers as
    UNAVAILABLE "'ModelResponse' object has no attribute 'service_tier'". An answer without
    the field now gets `service_tier = None`, as the OpenAI SDK's objects have it.
    """
    what = "the Groq service_tier default"
    try:
        from litellm.llms.groq.chat.transformation import GroqChatConfig
        from litellm.llms.openai_like.chat.transformation import OpenAILikeChatConfig
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc
    original = OpenAILikeChatConfig.__dict__.get("_transform_response")
    if not isinstance(original, staticmethod):
        raise _moved(what, "OpenAILikeChatConfig._transform_response is gone or no longer a staticmethod")
    if what not in getattr(original.__func__, "_llm_service_work_arounds", ()):

        @functools.wraps(original.__func__)
        def _transform_response(*args: Any, **kwargs: Any) -> Any:
            response = original.__func__(*args, **kwargs)
            if not hasattr(response, "service_tier"):
                response.service_tier = None
            return response

        _transform_response._llm_service_patched = True  # type: ignore[attr-defined]
        _transform_response._llm_service_work_arounds = (what,)  # type: ignore[attr-defined]
        OpenAILikeChatConfig._transform_response = staticmethod(_transform_response)  # type: ignore[method-assign]
    import httpx
    from litellm.types.utils import ModelResponse

    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
    }
    try:
        response = GroqChatConfig().transform_response(
            model="m",
            raw_response=httpx.Response(200, json=answer),
            model_response=ModelResponse(),
            logging_obj=_probe_logging(),
            request_data={},
            messages=[],
            optional_params={},
            litellm_params={},
            encoding=None,
        )
    except Exception as exc:
        raise _moved(what, f"an answer without service_tier still fails: {exc!r}") from exc
    if response.choices[0].message.content != "ok":
        raise _moved(what, "the probe answer's text was lost")
    return True


def _content_as_sent() -> bool:
    """Read a whole OpenAI-format answer's content as the provider sent it, on both paths.

    LiteLLM 1.106 builds the message from `extract_reasoning_content`
    (litellm_core_utils/prompt_templates/common_utils.py, used by
    llm_response_utils/convert_dict_to_response.py and llms/openai/chat/gpt_transformation.py),
    which (1) fails on content that is a list of typed parts, as Mistral's reasoning models
    send it (pydantic rejects the list: "Invalid response object", a traceback in its
    message), and (2) moves a leading `<think>…</think>` out of a string content into
    reasoning (Together, Groq's reasoning models). The service's rule, the direct path's and
    the contract's: text is the text parts as sent, tags included; reasoning is what the
    provider sends as reasoning (`reasoning_content`, `reasoning`, thinking parts).
    """
    what = "the content-as-sent reader"
    try:
        from litellm.litellm_core_utils.llm_response_utils import convert_dict_to_response
        from litellm.llms.openai.chat import gpt_transformation
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc

    from llm_service.core.decode import content_parts

    def wrap(original: Any) -> Any:
        def extract_reasoning_content(message: Any) -> tuple[str | None, str | None]:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                text, listed = content_parts(content)
                stated, _ = original({**message, "content": None})
                return ((stated or "") + listed) or None, text or None
            if isinstance(content, str) and "reasoning_content" not in message and "reasoning" not in message:
                return None, content
            return original(message)  # type: ignore[no-any-return]

        return extract_reasoning_content

    for module in (convert_dict_to_response, gpt_transformation):
        _wrap_once(module, "extract_reasoning_content", wrap, what)
    probe = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]},
                        {"type": "text", "text": "<think>a</think>b"},
                    ],
                },
            }
        ],
    }
    from litellm.types.utils import ModelResponse

    try:
        message = convert_dict_to_response.convert_to_model_response_object(probe, ModelResponse()).choices[0].message
    except Exception as exc:
        raise _moved(what, f"typed-part content still fails: {exc!r}") from exc
    if (message.content, getattr(message, "reasoning_content", None)) != ("<think>a</think>b", "hm"):
        raise _moved(what, f"the probe answer came out as {message.content!r} / {message.reasoning_content!r}")
    return True


def _stream_deltas_kept() -> bool:
    """Keep the stream deltas LiteLLM would drop: typed-part content and a refusal alone.

    LiteLLM 1.106's stream wrapper (litellm_core_utils/streaming_handler.py,
    `CustomStreamWrapper.is_chunk_non_empty`) passes on a delta only when its content is a
    non-empty string or it carries tool calls, reasoning or a few other fields: Mistral's
    list of typed parts (`[{"type": "thinking", …}]`) and OpenAI's `refusal` with no content
    were dropped, so the caller lost the thinking and could not tell a refusal from an empty
    answer. Typed parts are now read, before the wrapper sees the chunk (`chunk_creator`),
    into text and `reasoning_content`; a delta with a refusal counts as not empty.
    """
    what = "the stream-delta keeper"
    try:
        from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc

    from llm_service.core.decode import content_parts

    def wrap_creator(original: Any) -> Any:
        def chunk_creator(self: Any, chunk: Any) -> Any:
            for choice in getattr(chunk, "choices", None) or ():
                delta = getattr(choice, "delta", None)
                content = getattr(delta, "content", None)
                if delta is not None and isinstance(content, list):
                    text, reasoning = content_parts([p if isinstance(p, dict) else _as_dict(p) for p in content])
                    delta.content = text
                    if reasoning and not getattr(delta, "reasoning_content", None):
                        delta.reasoning_content = reasoning
            return original(self, chunk)

        return chunk_creator

    def wrap_non_empty(original: Any) -> Any:
        def is_chunk_non_empty(self: Any, completion_obj: Any, model_response: Any, response_obj: Any) -> bool:
            if original(self, completion_obj, model_response, response_obj):
                return True
            choices = getattr(model_response, "choices", None) or ()
            refusal = getattr(getattr(choices[0], "delta", None), "refusal", None) if choices else None
            return isinstance(refusal, str) and bool(refusal)

        return is_chunk_non_empty

    _wrap_once(CustomStreamWrapper, "chunk_creator", wrap_creator, what)
    _wrap_once(CustomStreamWrapper, "is_chunk_non_empty", wrap_non_empty, what)
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": ""},
        {"content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hm"}]}]},
        {"content": [{"type": "text", "text": "ok"}]},
        {"refusal": "no"},
    ]
    try:
        got = [
            (
                c.choices[0].delta.content,
                getattr(c.choices[0].delta, "reasoning_content", None),
                getattr(c.choices[0].delta, "refusal", None),
            )
            for c in _replayed_openai_stream(deltas)
            if c.choices
        ]
    except Exception as exc:
        raise _moved(what, f"the probe stream failed: {exc!r}") from exc
    joined = ["".join(str(g[i] or "") for g in got) for i in range(3)]
    if joined != ["ok", "hm", "no"]:
        raise _moved(what, f"the probe stream came out as {joined!r}")
    return True


def _probe_logging() -> Any:
    """A LiteLLM call-logging object for a work-around's probe (no callbacks are configured)."""
    from datetime import datetime

    from litellm.litellm_core_utils.litellm_logging import Logging

    return Logging(
        model="m",
        messages=[],
        stream=False,
        call_type="completion",
        start_time=datetime.now(),
        litellm_call_id="probe",
        function_id="probe",
    )


def _as_dict(part: Any) -> Any:
    dump = getattr(part, "model_dump", None)
    return dump() if callable(dump) else part


def _replayed_openai_stream(deltas: list[dict[str, Any]]) -> list[Any]:
    """The chunks LiteLLM's stream wrapper makes of an OpenAI SDK stream with these deltas (then a stop)."""
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    def chunk(delta: dict[str, Any], finish: str | None = None) -> Any:
        value = {
            "id": "probe",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return construct_type(type_=ChatCompletionChunk, value=value)

    logging_obj = _probe_logging()
    stream = iter([*(chunk(d) for d in deltas), chunk({}, "stop")])
    wrapper = CustomStreamWrapper(completion_stream=stream, model="m", logging_obj=logging_obj, custom_llm_provider="openai")
    # Not read to its end: the end builds the whole answer, counting its reasoning tokens, which
    # loads a tokenizer (~40 MB of RSS) no server needs at start-up.
    return list(itertools.islice(wrapper, len(deltas)))


_SERVER_TOOL_BLOCKS = frozenset({"server_tool_use", "mcp_tool_use"})


def _anthropic_server_tools_kept_out() -> bool:
    """Keep the tools Anthropic runs itself out of the caller's tool calls.

    LiteLLM 1.106 turns a `server_tool_use` block (web_search, web_fetch, code_execution,
    an advisor) into an OpenAI tool call, streamed (llms/anthropic/chat/handler.py,
    `ModelResponseIterator.chunk_parser`) and whole (llms/anthropic/chat/transformation.py,
    `AnthropicConfig.extract_response_content`): the caller got `srvtoolu_…` calls it never
    offered and finish TOOL_CALLS for a finished answer. Those calls are now left out; the
    blocks' results stay in LiteLLM's provider_specific_fields, which the service does not read.
    """
    what = "the Anthropic server-tool filter"
    try:
        from litellm.llms.anthropic.chat.handler import ModelResponseIterator
        from litellm.llms.anthropic.chat.transformation import AnthropicConfig
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc
    if not hasattr(ModelResponseIterator(streaming_response=iter(()), sync_stream=True), "tool_index"):
        raise _moved(what, "ModelResponseIterator.tool_index is gone")

    def wrap_stream(original: Any) -> Any:
        def chunk_parser(self: Any, chunk: dict[str, Any]) -> Any:
            block = getattr(self, "current_content_block_type", None)  # a delta's or a stop's block
            out = original(self, chunk)
            if chunk.get("type") == "content_block_start":
                block = getattr(self, "current_content_block_type", None)
            if block in _SERVER_TOOL_BLOCKS:
                for choice in getattr(out, "choices", None) or ():
                    if getattr(choice.delta, "tool_calls", None):
                        choice.delta.tool_calls = None
            return out

        return chunk_parser

    def wrap_whole(original: Any) -> Any:
        def extract_response_content(self: Any, completion_response: dict[str, Any]) -> Any:
            out = list(original(self, completion_response=completion_response))
            server = {
                b.get("id")
                for b in completion_response.get("content") or ()
                if isinstance(b, dict) and b.get("type") in _SERVER_TOOL_BLOCKS
            }
            if server:
                out[4] = [call for call in out[4] if call.get("id") not in server]
            return tuple(out)

        return extract_response_content

    _wrap_once(ModelResponseIterator, "chunk_parser", wrap_stream, what)
    _wrap_once(AnthropicConfig, "extract_response_content", wrap_whole, what)
    blocks = [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "m",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        },
        *({"type": "content_block_start", "index": i, "content_block": {**b, "input": {}}} for i, b in enumerate(blocks)),
    ]
    try:
        whole = AnthropicConfig().extract_response_content(completion_response={"content": blocks})
        lines = iter(f"data: {json.dumps(e)}" for e in events)
        streamed = [
            tc.id
            for c in ModelResponseIterator(streaming_response=lines, sync_stream=True)
            for tc in (c.choices[0].delta.tool_calls or ())
            if c.choices
        ]
    except Exception as exc:
        raise _moved(what, f"the probe answer failed: {exc!r}") from exc
    ids = [call.get("id") for call in whole[4]]
    if ids != ["toolu_1"] or streamed != ["toolu_1"]:
        raise _moved(what, f"the probe's tool calls came out as {ids!r} (whole) and {streamed!r} (streamed)")
    return True


def _anthropic_advisor_iterations_left_out() -> bool:
    """Count an Anthropic answer's usage as the answering model's: an advisor's iteration is not.

    With compaction or an advisor tool, Anthropic reports each model call in `usage.iterations`;
    an iteration naming another `model` is the advisor's (its tokens are not in the answer's
    top-level counts). LiteLLM 1.106 sums every iteration (llms/anthropic/chat/transformation.py,
    `AnthropicConfig.calculate_usage`, streamed and whole), so an advised answer reported the
    advisor's input and output as the route's. Iterations naming another model are now left
    out, as the direct path does (`direct_decode.own_iterations_usage`).
    """
    what = "the Anthropic advisor-iteration filter"
    try:
        from litellm.llms.anthropic.chat.transformation import AnthropicConfig
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc

    def wrap(original: Any) -> Any:
        def calculate_usage(self: Any, usage_object: Any, *args: Any, **kwargs: Any) -> Any:
            iterations = usage_object.get("iterations") if isinstance(usage_object, Mapping) else None
            if isinstance(iterations, list) and any(isinstance(it, dict) and it.get("model") for it in iterations):
                own = [it for it in iterations if not (isinstance(it, dict) and it.get("model"))]
                usage_object = {**usage_object, "iterations": own or None}
            return original(self, usage_object, *args, **kwargs)

        return calculate_usage

    _wrap_once(AnthropicConfig, "calculate_usage", wrap, what)
    probe = {
        "input_tokens": 3,
        "output_tokens": 2,
        "iterations": [
            {"input_tokens": 1, "output_tokens": 1, "type": "message"},
            {"input_tokens": 50, "output_tokens": 50, "type": "advisor_message", "model": "advisor"},
            {"input_tokens": 2, "output_tokens": 1, "type": "message"},
        ],
    }
    usage = AnthropicConfig().calculate_usage(usage_object=types.MappingProxyType(probe), reasoning_content=None)
    if (usage.prompt_tokens, usage.completion_tokens) != (3, 2):
        raise _moved(what, f"the probe's usage came out as {usage.prompt_tokens} in, {usage.completion_tokens} out")
    return True


def _anthropic_in_band_error_status() -> bool:
    """Give an error event inside an Anthropic stream the HTTP status its type stands for.

    LiteLLM 1.106 raises every one as a 500 (llms/anthropic/chat/handler.py,
    `ModelResponseIterator.chunk_parser`: "Anthropic API does not return a status code in the
    chunk error"), so an `invalid_request_error` was retried as the upstream's trouble and an
    `overloaded_error` reported as 500 where the direct path says 529. The status is now the
    type's, as Anthropic gives it over HTTP (`direct_decode.anthropic_error_status`).
    """
    what = "the Anthropic in-band error status"
    try:
        from litellm.llms.anthropic.chat.handler import ModelResponseIterator
        from litellm.llms.anthropic.common_utils import AnthropicError
    except ImportError as exc:
        raise _moved(what, str(exc)) from exc

    from llm_service.core.direct_decode import anthropic_error_status

    def wrap(original: Any) -> Any:
        def chunk_parser(self: Any, chunk: dict[str, Any]) -> Any:
            if isinstance(chunk, dict) and chunk.get("type") == "error":
                err = chunk.get("error") or {}
                message = err.get("message") if isinstance(err, dict) else None
                raise AnthropicError(message=str(message or chunk), status_code=anthropic_error_status(err))
            return original(self, chunk)

        return chunk_parser

    _wrap_once(ModelResponseIterator, "chunk_parser", wrap, what)
    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    try:
        ModelResponseIterator(streaming_response=iter(()), sync_stream=True).chunk_parser(event)
    except AnthropicError as exc:
        if exc.status_code == 529:
            return True
        raise _moved(what, f"an overloaded_error event was raised with status {exc.status_code!r}") from exc
    raise _moved(what, "an error event was not raised")


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
        # LiteLLM 1.106's OpenAI embedding reads max_retries=0 as unset and gives the openai SDK
        # DEFAULT_MAX_RETRIES (2) retries of its own (llms/openai/openai.py, `embedding`): its
        # default is the service's 0 too (tests/test_embed.py counts a 429's upstream requests).
        litellm.DEFAULT_MAX_RETRIES = 0  # type: ignore[attr-defined]
        # Token counting must never reach for the network: tokenizers not bundled with LiteLLM
        # would be downloaded from Hugging Face, blocking the event loop until that times out.
        litellm.disable_hf_tokenizer_download = True
        _route_litellm_logs_to_the_service()
        _REPORT = SetupReport(
            litellm_version(),
            mcp_gateway_stub=_mcp_gateway_stub(),
            anthropic_malformed_sse_guard=_anthropic_malformed_sse_guard(),
            no_422_param_retry=_no_422_param_retry(),
            groq_in_band_error_status=_groq_in_band_error_status(),
            groq_answer_without_service_tier=_groq_answer_without_service_tier(),
            content_as_sent=_content_as_sent(),
            stream_deltas_kept=_stream_deltas_kept(),
            anthropic_server_tools_kept_out=_anthropic_server_tools_kept_out(),
            anthropic_advisor_iterations_left_out=_anthropic_advisor_iterations_left_out(),
            anthropic_in_band_error_status=_anthropic_in_band_error_status(),
        )
    return _REPORT
