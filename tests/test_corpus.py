"""Real recorded provider answers, replayed byte for byte through both paths (issue 16).

`tests/corpus/manifest.yaml` lists recorded HTTP response bodies from public SDK test
snapshots and VCR cassettes (each with its repository, path, commit and licence; see
`tests/corpus/SOURCES.md`). The fake upstream sends each one unchanged to a route on the
direct path (`fast_path: true`) and to the same route on LiteLLM's path (`fast_path: false`),
cut four ways: all at once, one write per event, and every 5 and every 7 bytes (so writes
end inside events, inside JSON and inside UTF-8 characters). A streamed recording is asked
for with `Stream`, a whole JSON answer with `Complete`.

What the caller must see is computed here from the recording's bytes by `read_recording`, a
small reader of each wire format written for this test, never by either of the service's
decoders. The rules it applies are the contract's (`protos/llm/v1/llm_service.proto`):

- text is the answer's text parts, concatenated; reasoning is the thinking/reasoning parts
  (`reasoning_content`, else `reasoning`, Mistral's `thinking` parts, Anthropic's
  `thinking_delta`s, Gemini's `thought` parts, the Responses API's reasoning text);
- tool calls are the caller's own tools only, assembled by index and id, with the wire's id
  where it gives one; tools the provider runs itself (Anthropic `server_tool_use`,
  `mcp_tool_use` and their results, Responses `web_search_call`) are never tool calls;
- the finish reason is the provider's, normalised (stop/end_turn/stop_sequence/pause_turn →
  STOP, length/max_tokens → LENGTH, tool_calls/tool_use → TOOL_CALLS, content_filter and
  refusals → CONTENT_FILTER, anything else → OTHER); an answer with tool calls finishes
  TOOL_CALLS;
- usage is the provider's last report: input tokens include cached and cache-written ones,
  output tokens include reasoning ones; reasoning tokens are compared only where the wire
  reports a count, and usage not at all when the recording has none;
- an in-band error (an `error` object or event in a 200 stream) fails the call with the
  status its HTTP status code or type maps to, never INTERNAL;
- text is sent as the provider sent it: a `<think>…</think>` inside the text stays text, on
  both paths (LiteLLM's own reading of such tags is undone in `litellm_setup`).

Each call must reach the upstream exactly once. Every recording passes on both paths: there
is no exception list.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, channel_options, pb
from llm_service.logs import JsonFormatter
from tests.support.messages import user_msg
from tests.support.servers import PATHS, ServerPath, ServerThread, on_path, service_config

CORPUS = Path(__file__).resolve().parent / "corpus"

# The write sizes a recording is cut into: 0 sends it in one write, -1 one write per event.
CHUNKINGS: dict[str, int] = {"whole": 0, "per-event": -1, "every-7-bytes": 7}

# The route each wire format and provider family is replayed through (model, endpoint under the fake).
_OPENAI_ROUTE = ("openai/corpus-model", "/v1")
ROUTES: dict[str, tuple[str, str]] = {
    "corpus-openai": _OPENAI_ROUTE,
    "corpus-groq": ("groq/llama-3.3-70b-versatile", "/openai/v1"),
    "corpus-deepseek": ("deepseek/deepseek-chat", "/v1"),
    "corpus-openrouter": ("openrouter/meta-llama/llama-3-8b", "/api/v1"),
    "corpus-anthropic": ("anthropic/claude-sonnet-4-5", ""),
    "corpus-responses": ("openai/gpt-5-codex", "/chatgpt.com/backend-api/codex"),
    "corpus-gemini": ("gemini/gemini-2.5-flash", ""),
}
_PROVIDER_ROUTES = {"groq": "corpus-groq", "deepseek": "corpus-deepseek", "openrouter": "corpus-openrouter"}
_WIRE_ROUTES = {"anthropic": "corpus-anthropic", "responses": "corpus-responses", "gemini": "corpus-gemini"}
_CONTENT_TYPES = {"stream": "text/event-stream; charset=utf-8", "whole": "application/json"}

FINISH_NAMES = {
    pb.FINISH_REASON_UNSPECIFIED: "UNSPECIFIED",
    pb.FINISH_REASON_STOP: "STOP",
    pb.FINISH_REASON_LENGTH: "LENGTH",
    pb.FINISH_REASON_TOOL_CALLS: "TOOL_CALLS",
    pb.FINISH_REASON_CONTENT_FILTER: "CONTENT_FILTER",
    pb.FINISH_REASON_OTHER: "OTHER",
}


@dataclass(frozen=True)
class Recording:
    """One recorded response body and what the manifest says of it."""

    name: str
    file: str
    provider: str
    wire: str  # openai-chat, anthropic, responses, gemini
    kind: str  # stream (SSE) or whole (one JSON answer)

    @property
    def body(self) -> str:
        """The recorded bytes, as text (every recording is UTF-8)."""
        return (CORPUS / self.file).read_text(encoding="utf-8")

    @property
    def route(self) -> str:
        """The route this recording is replayed through."""
        return _WIRE_ROUTES.get(self.wire) or _PROVIDER_ROUTES.get(self.provider, "corpus-openai")


def load_manifest() -> list[Recording]:
    """The recordings of tests/corpus/manifest.yaml, in its order."""
    data = yaml.safe_load((CORPUS / "manifest.yaml").read_text(encoding="utf-8"))
    return [Recording(r["name"], r["file"], r["provider"], r["wire"], r["kind"]) for r in data["recordings"]]


RECORDINGS = load_manifest()


# --- the reference reader ---------------------------------------------------------------------


@dataclass
class Call:
    """A tool call as the caller sees it; id None where the wire gives none (the service makes one)."""

    id: str | None
    name: str
    arguments: str = ""

    def key(self) -> tuple[str | None, str, Any]:
        """What is compared: id (when the wire has one), name and the parsed (or repaired) arguments."""
        text = self.arguments.strip() or "{}"
        for candidate in (text, repaired(text)):
            try:
                return (self.id, self.name, json.loads(candidate))
            except json.JSONDecodeError:
                continue
        return (self.id, self.name, text)


def repaired(text: str) -> str:
    """Cut-off JSON closed as the contract's repair rule says (PC20): an open string closed, a trailing
    `,` or `:` dropped, open brackets closed."""
    closers, in_string, escaped = [], False, False
    for ch in text:
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            closers.append("}" if ch == "{" else "]")
        elif ch in "}]" and closers:
            closers.pop()
    out = text + '"' if in_string else text.rstrip().rstrip(",:").rstrip()
    return out + "".join(reversed(closers))


@dataclass
class Seen:
    """What a caller sees of one answer: the fields the corpus compares.

    None in an expectation means "not stated by the bytes, not compared".
    """

    text: str = ""
    reasoning: str = ""
    tool_calls: list[Call] = field(default_factory=list)
    finish: str = ""
    usage: dict[str, int] | None = None
    refusal: str | None = ""
    thinking_blocks: list[tuple[str, str, str]] | None = None
    model: str | None = None  # the model the answer names (provider_model)
    error: str = ""  # the gRPC status code name when the call failed
    message: str = ""  # and the status message the caller read


def sse_events(body: str) -> Iterator[tuple[str, str]]:
    """(event name, data) for each event of an SSE body, per the WHATWG rules (comments skipped)."""
    for block in body.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
        if data:
            yield name, "\n".join(data)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


_ERROR_TYPES = {
    "invalid_request_error": "INVALID_ARGUMENT",
    "rate_limit_error": "RESOURCE_EXHAUSTED",
    "rate_limit_exceeded": "RESOURCE_EXHAUSTED",
    "authentication_error": "FAILED_PRECONDITION",
    "permission_error": "FAILED_PRECONDITION",
    "not_found_error": "FAILED_PRECONDITION",
}


def error_code(error: dict[str, Any]) -> str:
    """The gRPC status an in-band error maps to, by its HTTP status code, else its type (as an HTTP error would)."""
    status = next((_int(error.get(k)) for k in ("status_code", "code", "status") if _int(error.get(k))), 0)
    if status:
        if status == 429:
            return "RESOURCE_EXHAUSTED"
        if status in (401, 402, 403, 404):
            return "FAILED_PRECONDITION"
        if 400 <= status < 500 and status != 408:
            return "INVALID_ARGUMENT"
        return "UNAVAILABLE"
    return _ERROR_TYPES.get(str(error.get("type", "")), "UNAVAILABLE")


_OPENAI_FINISH = {
    "stop": "STOP",
    "length": "LENGTH",
    "tool_calls": "TOOL_CALLS",
    "function_call": "TOOL_CALLS",
    "content_filter": "CONTENT_FILTER",
}


def _finish(seen: Seen, mapped: str) -> None:
    """Set the normalised finish reason; an answer with tool calls finishes TOOL_CALLS, a refusal CONTENT_FILTER."""
    if seen.refusal:
        mapped = "CONTENT_FILTER"
    elif seen.tool_calls and mapped in ("STOP", "OTHER", ""):
        mapped = "TOOL_CALLS"
    seen.finish = mapped


def _openai_usage(u: dict[str, Any]) -> dict[str, int]:
    prompt = u.get("prompt_tokens_details") or {}
    completion = u.get("completion_tokens_details") or {}
    cached = _int(prompt.get("cached_tokens")) if "cached_tokens" in prompt else _int(u.get("prompt_cache_hit_tokens"))
    usage = {
        "input": _int(u.get("prompt_tokens")),
        "output": _int(u.get("completion_tokens")),
        "cached": cached,
        "creation": _int(prompt.get("cache_write_tokens")) or _int(u.get("cache_creation_input_tokens")),
    }
    if "reasoning_tokens" in completion:
        usage["reasoning"] = _int(completion.get("reasoning_tokens"))
    return usage


def _openai_content(seen: Seen, content: Any) -> None:
    """Chat-completions content: a string, or Mistral's list of typed parts (text, and thinking with text parts)."""
    if isinstance(content, str):
        seen.text += content
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                seen.text += str(part.get("text") or "")
            elif part.get("type") == "thinking":
                inner = part.get("thinking")
                if isinstance(inner, str):
                    seen.reasoning += inner
                elif isinstance(inner, list):
                    seen.reasoning += "".join(str(p.get("text") or "") for p in inner if isinstance(p, dict))


def _openai_reasoning(obj: dict[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def read_openai_chat(body: str, kind: str) -> Seen:
    """Chat completions (OpenAI and every OpenAI-compatible provider), streamed or whole."""
    seen = Seen()
    finish = ""
    if kind == "whole":
        obj = json.loads(body)
        seen.model = obj.get("model") or None
        choice = (obj.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        _openai_content(seen, message.get("content"))
        seen.reasoning += _openai_reasoning(message)
        seen.refusal = message.get("refusal") or ""
        for tc in message.get("tool_calls") or []:
            fn = tc.get("function") or {}
            seen.tool_calls.append(Call(tc.get("id") or None, fn.get("name") or "", fn.get("arguments") or ""))
        finish = choice.get("finish_reason") or ""
        seen.usage = _openai_usage(obj["usage"]) if obj.get("usage") else None
        _finish(seen, _OPENAI_FINISH.get(finish, "OTHER"))
        return seen
    by_index: dict[int, Call] = {}
    for _, data in sse_events(body):
        if data.strip() == "[DONE]":
            break
        obj = json.loads(data)
        if obj.get("error"):
            seen.error = error_code(obj["error"])
            return seen
        if obj.get("usage"):
            seen.usage = _openai_usage(obj["usage"])
        seen.model = obj.get("model") or seen.model
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            _openai_content(seen, delta.get("content"))
            seen.reasoning += _openai_reasoning(delta)
            seen.refusal = (seen.refusal or "") + (delta.get("refusal") or "")
            for tc in delta.get("tool_calls") or []:
                index, fn = tc.get("index", 0), tc.get("function") or {}
                open_call = by_index.get(index)
                if tc.get("id") and (open_call is None or (open_call.id and open_call.id != tc["id"])):
                    open_call = by_index[index] = Call(tc["id"], "")
                    seen.tool_calls.append(open_call)
                elif open_call is None:
                    open_call = seen.tool_calls[-1] if seen.tool_calls else None
                    if open_call is None:
                        open_call = by_index[index] = Call(None, "")
                        seen.tool_calls.append(open_call)
                if fn.get("name") and not open_call.name:
                    open_call.name = fn["name"]
                open_call.arguments += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    _finish(seen, _OPENAI_FINISH.get(finish, "OTHER"))
    return seen


_ANTHROPIC_FINISH = {
    "end_turn": "STOP",
    "stop_sequence": "STOP",
    "pause_turn": "STOP",
    "max_tokens": "LENGTH",
    "tool_use": "TOOL_CALLS",
    "refusal": "CONTENT_FILTER",
}


def _anthropic_usage(usage: dict[str, Any]) -> dict[str, int]:
    """Anthropic's usage; with `iterations` (compaction), the sum of the answering model's iterations.

    The top-level counts leave compaction out; an iteration naming another `model` (an advisor)
    is that model's, not the route's.
    """
    own = [it for it in usage.get("iterations") or [] if isinstance(it, dict) and not it.get("model")]
    parts = own or [usage]
    read = sum(_int(p.get("cache_read_input_tokens")) for p in parts)
    written = sum(_int(p.get("cache_creation_input_tokens")) for p in parts)
    return {
        "input": sum(_int(p.get("input_tokens")) for p in parts) + read + written,
        "output": sum(_int(p.get("output_tokens")) for p in parts),
        "cached": read,
        "creation": written,
    }


def _anthropic_finish(seen: Seen, stop_reason: str) -> None:
    if stop_reason == "refusal":
        seen.refusal = None  # the contract leaves the words to the service; the finish reason says it
        seen.finish = "CONTENT_FILTER"
        return
    _finish(seen, _ANTHROPIC_FINISH.get(stop_reason, "OTHER"))


def read_anthropic(body: str, kind: str) -> Seen:
    """Anthropic Messages, streamed or whole: only `tool_use` blocks are the caller's tool calls."""
    seen = Seen(thinking_blocks=[])
    assert seen.thinking_blocks is not None
    if kind == "whole":
        obj = json.loads(body)
        for block in obj.get("content") or []:
            kind_ = block.get("type")
            if kind_ == "text":
                seen.text += block.get("text") or ""
            elif kind_ == "thinking":
                seen.reasoning += block.get("thinking") or ""
                seen.thinking_blocks.append((block.get("thinking") or "", block.get("signature") or "", ""))
            elif kind_ == "redacted_thinking":
                seen.thinking_blocks.append(("", "", block.get("data") or ""))
            elif kind_ == "tool_use":
                seen.tool_calls.append(Call(block.get("id"), block.get("name") or "", json.dumps(block.get("input") or {})))
        seen.usage = _anthropic_usage(obj.get("usage") or {})
        seen.model = obj.get("model") or None
        _anthropic_finish(seen, obj.get("stop_reason") or "")
        return seen
    blocks: dict[int, dict[str, Any]] = {}
    usage: dict[str, Any] = {}
    stop_reason = ""
    for _, data in sse_events(body):
        obj = json.loads(data)
        event = obj.get("type")
        if event == "error":
            seen.error = error_code(obj.get("error") or {})
            return seen
        if event == "message_start":
            usage.update((obj.get("message") or {}).get("usage") or {})
            seen.model = (obj.get("message") or {}).get("model") or None
        elif event == "content_block_start":
            block = dict(obj.get("content_block") or {})
            block["_args"] = ""
            blocks[obj["index"]] = block
            if block.get("type") == "tool_use":
                seen.tool_calls.append(Call(block.get("id"), block.get("name") or ""))
                block["_call"] = seen.tool_calls[-1]
            elif block.get("type") == "text":
                seen.text += block.get("text") or ""
        elif event == "content_block_delta":
            block, delta = blocks.get(obj["index"], {}), obj.get("delta") or {}
            if delta.get("type") == "text_delta" and block.get("type") == "text":
                seen.text += delta.get("text") or ""
            elif delta.get("type") == "thinking_delta":
                seen.reasoning += delta.get("thinking") or ""
                block["thinking"] = (block.get("thinking") or "") + (delta.get("thinking") or "")
            elif delta.get("type") == "signature_delta":
                block["signature"] = (block.get("signature") or "") + (delta.get("signature") or "")
            elif delta.get("type") == "input_json_delta" and "_call" in block:
                block["_call"].arguments += delta.get("partial_json") or ""
        elif event == "content_block_stop":
            block = blocks.get(obj["index"], {})
            if block.get("type") == "thinking":
                seen.thinking_blocks.append((block.get("thinking") or "", block.get("signature") or "", ""))
            elif block.get("type") == "redacted_thinking":
                seen.thinking_blocks.append(("", "", block.get("data") or ""))
        elif event == "message_delta":
            usage.update({k: v for k, v in (obj.get("usage") or {}).items() if v is not None})
            stop_reason = (obj.get("delta") or {}).get("stop_reason") or stop_reason
    seen.usage = _anthropic_usage(usage)
    _anthropic_finish(seen, stop_reason)
    return seen


def read_responses(body: str, kind: str) -> Seen:
    """The OpenAI Responses API's event stream: function calls are tool calls, built-in tools are not."""
    seen = Seen()
    assert kind == "stream", "whole Responses answers are not in the corpus"
    status, incomplete = "", ""
    for _, data in sse_events(body):
        obj = json.loads(data)
        event = obj.get("type", "")
        if event == "error" or event == "response.failed":
            err = obj.get("error") or (obj.get("response") or {}).get("error") or {}
            seen.error = error_code(err)
            return seen
        if event == "response.output_text.delta":
            seen.text += obj.get("delta") or ""
        elif event in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            seen.reasoning += obj.get("delta") or ""
        elif event == "response.refusal.delta":
            seen.refusal = (seen.refusal or "") + (obj.get("delta") or "")
        elif event == "response.output_item.done" and (obj.get("item") or {}).get("type") == "function_call":
            item = obj["item"]
            seen.tool_calls.append(Call(item.get("call_id") or None, item.get("name") or "", item.get("arguments") or ""))
        elif event in ("response.completed", "response.incomplete"):
            response = obj.get("response") or {}
            status = response.get("status") or ""
            incomplete = (response.get("incomplete_details") or {}).get("reason") or ""
            u = response.get("usage") or {}
            if u:
                seen.usage = {
                    "input": _int(u.get("input_tokens")),
                    "output": _int(u.get("output_tokens")),
                    "cached": _int((u.get("input_tokens_details") or {}).get("cached_tokens")),
                    "creation": 0,
                }
                details = u.get("output_tokens_details") or {}
                if "reasoning_tokens" in details:
                    seen.usage["reasoning"] = _int(details["reasoning_tokens"])
    mapped = (
        "STOP"
        if status == "completed"
        else {"max_output_tokens": "LENGTH", "content_filter": "CONTENT_FILTER"}.get(incomplete, "OTHER")
    )
    _finish(seen, mapped)
    return seen


_GEMINI_FINISH = {"STOP": "STOP", "MAX_TOKENS": "LENGTH"}
_GEMINI_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}


def read_gemini(body: str, kind: str) -> Seen:
    """Gemini generateContent, whole or as `alt=sse` chunks: thought parts are reasoning."""
    seen = Seen()
    chunks = [json.loads(body)] if kind == "whole" else [json.loads(data) for _, data in sse_events(body)]
    finish = ""
    for obj in chunks:
        if obj.get("error"):
            seen.error = error_code(obj["error"])
            return seen
        for candidate in (obj.get("candidates") or [])[:1]:
            for part in (candidate.get("content") or {}).get("parts") or []:
                if "functionCall" in part:
                    fc = part["functionCall"]
                    seen.tool_calls.append(Call(fc.get("id") or None, fc.get("name") or "", json.dumps(fc.get("args") or {})))
                elif part.get("thought"):
                    seen.reasoning += part.get("text") or ""
                elif "text" in part:
                    seen.text += part.get("text") or ""
            finish = candidate.get("finishReason") or finish
        u = obj.get("usageMetadata")
        if u:
            thoughts = _int(u.get("thoughtsTokenCount"))
            seen.usage = {
                "input": _int(u.get("promptTokenCount")),
                "output": _int(u.get("candidatesTokenCount")) + thoughts,
                "cached": _int(u.get("cachedContentTokenCount")),
                "creation": 0,
            }
            if "thoughtsTokenCount" in u:
                seen.usage["reasoning"] = thoughts
    _finish(seen, "CONTENT_FILTER" if finish in _GEMINI_FILTERED else _GEMINI_FINISH.get(finish, "OTHER"))
    return seen


READERS = {"openai-chat": read_openai_chat, "anthropic": read_anthropic, "responses": read_responses, "gemini": read_gemini}


@cache
def expected(name: str) -> Seen:
    """What the caller must see for a recording, read from its bytes."""
    rec = next(r for r in RECORDINGS if r.name == name)
    return READERS[rec.wire](rec.body, rec.kind)


# --- what the caller got -----------------------------------------------------------------------


def _tools(exp: Seen) -> list[pb.Tool]:
    """The request's tools: the ones the recording calls, with an open schema."""
    names = sorted({c.name for c in exp.tool_calls if c.name})
    return [pb.Tool(name=n, description=n, parameters_json='{"type": "object"}') for n in names]


def _usage(u: pb.Usage) -> dict[str, int]:
    return {
        "input": u.input_tokens,
        "output": u.output_tokens,
        "cached": u.cached_input_tokens,
        "creation": u.cache_creation_tokens,
        "reasoning": u.reasoning_tokens,
    }


def _blocks(blocks: Any) -> list[tuple[str, str, str]]:
    return [(b.thinking, b.signature, b.redacted_data) for b in blocks]


def call(client: LLMClient, rec: Recording, exp: Seen) -> Seen:
    """Ask the recording's route once, as its kind says (Stream or Complete), and collect what came back."""
    fields: dict[str, Any] = {"model": rec.route, "messages": [user_msg("Hello")], "tools": _tools(exp), "max_retries": 0}
    got = Seen()
    try:
        if rec.kind == "whole":
            answer = client.stub.Complete(pb.CompleteRequest(**fields), timeout=30)
            got.text, got.reasoning = answer.text, answer.reasoning
            got.tool_calls = [Call(t.id, t.name, t.arguments_json) for t in answer.tool_calls]
            got.finish, got.refusal = FINISH_NAMES[answer.finish_reason], answer.refusal
            got.usage, got.thinking_blocks = _usage(answer.usage), _blocks(answer.thinking_blocks)
            got.model = answer.provider_model
            return got
        for event in client.stub.Stream(pb.StreamRequest(**fields), timeout=30):
            which = event.WhichOneof("event")
            if which == "text_delta":
                got.text += event.text_delta.text
            elif which == "reasoning_delta":
                got.reasoning += event.reasoning_delta.text
            elif which == "tool_call":
                got.tool_calls.append(Call(event.tool_call.id, event.tool_call.name, event.tool_call.arguments_json))
            elif which == "finish":
                got.finish, got.refusal = FINISH_NAMES[event.finish.finish_reason], event.finish.refusal
                got.usage, got.thinking_blocks = _usage(event.finish.usage), _blocks(event.finish.thinking_blocks)
                got.model = event.finish.provider_model
            elif which == "error":
                got.error, got.message = event.error.code, event.error.message
    except grpc.RpcError as err:
        got.error, got.message = err.code().name, got.message or str(err.details())
    return got


def differences(exp: Seen, got: Seen) -> list[str]:
    """The fields where the caller's view differs from the recording's, one line each."""
    if exp.error or got.error:
        if exp.error == got.error:
            return []
        return [f"outcome: got {got.error or 'OK'} {got.message!r:.200}, expected {exp.error or 'OK'}"]
    out = []
    for name in ("text", "reasoning", "finish", "refusal", "model"):
        want, have = getattr(exp, name), getattr(got, name)
        if want is not None and want != have:
            out.append(f"{name}: got {have!r:.160}, expected {want!r:.160}")
    want_calls = [c.key() for c in exp.tool_calls]
    have_calls = [(c.id if w[0] is not None else None, *c.key()[1:]) for c, w in zip(got.tool_calls, want_calls, strict=False)]
    have_calls += [c.key() for c in got.tool_calls[len(want_calls) :]]
    if want_calls != have_calls:
        out.append(f"tool_calls: got {have_calls!r:.240}, expected {want_calls!r:.240}")
    if exp.usage is not None and got.usage is not None:
        wrong = {k: (got.usage.get(k), v) for k, v in exp.usage.items() if got.usage.get(k) != v}
        if wrong:
            out.append("usage: " + ", ".join(f"{k} got {h} expected {w}" for k, (h, w) in wrong.items()))
    if exp.thinking_blocks is not None and exp.thinking_blocks != got.thinking_blocks:
        have, want = len(got.thinking_blocks or []), len(exp.thinking_blocks)
        out.append(f"thinking_blocks: got {have}, expected {want} (or their text or signatures differ)")
    return out


# --- the servers and the cases -----------------------------------------------------------------


@pytest.fixture(scope="module")
def clients(fake: FakeUpstream) -> Iterator[dict[ServerPath, LLMClient]]:
    """One server per path for the whole module, with a route per wire format and provider family."""
    routes = {
        name: {"model": model, "api_base": f"{fake.base_url}{base}", "key": {"env": "TEST_PROVIDER_KEY"}}
        for name, (model, base) in ROUTES.items()
    }
    config = service_config(fake.base_url, routes=routes)
    servers = {path: ServerThread(on_path(config, path)) for path in PATHS}
    out = {path: LLMClient(srv.target, options=channel_options(retries=False)) for path, srv in servers.items()}
    yield out
    for c in out.values():
        c.close()
    for srv in servers.values():
        srv.stop()


def _cases() -> Iterator[Any]:
    for rec in RECORDINGS:
        for path in PATHS:
            yield pytest.param(rec, path, id=f"{rec.name}-{path}")


@pytest.mark.parametrize(("rec", "path"), list(_cases()))
def test_recording_comes_out_as_its_bytes_say(
    rec: Recording, path: ServerPath, clients: dict[ServerPath, LLMClient], fake: FakeUpstream
) -> None:
    """At every chunking, one upstream request, and the caller sees what the recording's bytes say."""
    exp = expected(rec.name)
    body = rec.body
    verdicts: dict[str, list[str]] = {}
    for chunking, size in CHUNKINGS.items():
        if rec.kind == "whole" and size == -1:
            continue  # one JSON document has no events
        fake.reset()
        fake.script(
            Script(
                body_raw=body,
                raw_content_type=_CONTENT_TYPES[rec.kind],
                raw_write_bytes=max(size, 0),
                raw_write_events=size == -1,
            )
        )
        got = call(clients[path], rec, exp)
        problems = differences(exp, got)
        asked = len(fake.requests())
        if asked != 1:
            problems.append(f"upstream asked {asked} times, expected once")
        if problems:
            verdicts[chunking] = problems
    assert not verdicts, "\n".join(f"{chunking}: {'; '.join(p)}" for chunking, p in verdicts.items())


def test_corpus_covers_every_wire_format_and_kind() -> None:
    """At least 60 recordings; every wire format of the direct path streamed and whole; the others streamed."""
    assert len(RECORDINGS) >= 60
    kinds = {(r.wire, r.kind) for r in RECORDINGS}
    for needed in [("openai-chat", "stream"), ("openai-chat", "whole"), ("anthropic", "stream"), ("anthropic", "whole")]:
        assert needed in kinds
    assert {"responses", "gemini"} <= {r.wire for r in RECORDINGS}
    for rec in RECORDINGS:
        assert (CORPUS / rec.file).is_file(), rec.file


@pytest.mark.parametrize("path", PATHS)
def test_an_in_band_error_is_logged_with_the_status_the_caller_got(
    path: ServerPath, clients: dict[ServerPath, LLMClient], fake: FakeUpstream
) -> None:
    """Groq's in-band 400 after reasoning was sent: the caller's INVALID_ARGUMENT is in the RPC's log line."""
    rec = next(r for r in RECORDINGS if r.name == "groq-stream-inband-error-tool-use-failed")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    rpc_log = logging.getLogger("llm_service.rpc")
    previous = rpc_log.level
    rpc_log.addHandler(handler)
    rpc_log.setLevel(logging.INFO)
    try:
        fake.reset()
        fake.script(Script(body_raw=rec.body, raw_content_type=_CONTENT_TYPES["stream"]))
        got = call(clients[path], rec, expected(rec.name))
    finally:
        rpc_log.removeHandler(handler)
        rpc_log.setLevel(previous)
    assert got.error == "INVALID_ARGUMENT" and "Tool call validation failed" in got.message
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [(line["rpc"], line["code"], line["reason"]) for line in lines] == [
        ("Stream", "INVALID_ARGUMENT", "UPSTREAM_BAD_REQUEST")
    ]
