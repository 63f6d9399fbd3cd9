"""Between protobuf and the core's plain types, validating the caller's request on the way in.

Every rejection is an InvalidRequest naming the field path (`messages[2].tool_call_id`),
so the caller sees exactly what to fix.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_service.config import LimitsConfig
from llm_service.core import types
from llm_service.core.embedding import EmbedCall, Embedding
from llm_service.core.errors import InvalidRequest

TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SCHEMA_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
METADATA_MAX_CHARS = 256

_ROLES = {pb.ROLE_USER: "user", pb.ROLE_ASSISTANT: "assistant", pb.ROLE_TOOL: "tool", pb.ROLE_SYSTEM: "system"}
_EFFORTS = {
    pb.REASONING_EFFORT_NONE: "none",
    pb.REASONING_EFFORT_MINIMAL: "minimal",
    pb.REASONING_EFFORT_LOW: "low",
    pb.REASONING_EFFORT_MEDIUM: "medium",
    pb.REASONING_EFFORT_HIGH: "high",
}
_TOOL_MODES = {pb.TOOL_CHOICE_MODE_AUTO: "auto", pb.TOOL_CHOICE_MODE_NONE: "none", pb.TOOL_CHOICE_MODE_REQUIRED: "required"}
_FINISH = {
    "stop": pb.FINISH_REASON_STOP,
    "end_turn": pb.FINISH_REASON_STOP,
    "stop_sequence": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "max_tokens": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "tool_use": pb.FINISH_REASON_TOOL_CALLS,
    "function_call": pb.FINISH_REASON_TOOL_CALLS,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
    "refusal": pb.FINISH_REASON_CONTENT_FILTER,
    "safety": pb.FINISH_REASON_CONTENT_FILTER,
}

Request = pb.CompleteRequest | pb.StreamRequest


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether JSON text nests deeper than limit, found by counting brackets outside strings
    (no recursion, and no scan at all when there are too few brackets to reach the limit)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match[0]
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(text: str, field: str, what: str, max_depth: int = LimitsConfig.max_json_depth) -> dict[str, Any]:
    if json_depth_exceeds(text, max_depth):
        raise InvalidRequest(field, f"{what} nests deeper than {max_depth} levels (limits.max_json_depth)")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(field, f"{what} must be a JSON object: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:  # NaN, Infinity, -Infinity
        raise InvalidRequest(field, f"{what} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(field, f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _content(msg: pb.Message, i: int, limits: LimitsConfig) -> str | list[dict[str, Any]] | None:
    if len(msg.parts) > limits.max_parts:
        raise InvalidRequest(f"messages[{i}].parts", f"at most {limits.max_parts} parts in a message (limits.max_parts)")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.parts):
        field = f"messages[{i}].parts[{j}]"
        kind = part.WhichOneof("part")
        if kind == "text":
            parts.append({"type": "text", "text": part.text})
        elif kind == "image_url":
            url = part.image_url.url
            if not url.startswith(("https://", "http://", "data:")):
                raise InvalidRequest(f"{field}.image_url.url", "must be an http(s) or data: URL")
            image: dict[str, Any] = {"url": url}
            if part.image_url.detail:
                image["detail"] = part.image_url.detail
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "inline_image":
            url = _inline_image_url(part.inline_image, f"{field}.inline_image")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            parts.append(_document(part.document, f"{field}.document", limits))
        else:
            raise InvalidRequest(field, "exactly one of text, image_url, inline_image or document must be set")
        if kind != "text" and msg.role != pb.ROLE_USER:
            raise InvalidRequest(field, "images and documents are accepted in user messages only")
    if not parts:
        return None
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _inline_image_url(image: pb.InlineImage, field: str) -> str:
    """An inline image as a data: URL, its MIME type and bytes checked."""
    if not re.fullmatch(r"image/[A-Za-z0-9.+-]+", image.mime_type):
        raise InvalidRequest(f"{field}.mime_type", "must be an image MIME type such as image/png")
    if not image.data:
        raise InvalidRequest(f"{field}.data", "must not be empty")
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"


def _check_metadata(metadata: Mapping[str, str], max_entries: int) -> None:
    """The caller's metadata within its limits (count, and characters per key and value)."""
    if len(metadata) > max_entries:
        raise InvalidRequest("metadata", f"at most {max_entries} entries")
    for k, v in metadata.items():
        if len(k) > METADATA_MAX_CHARS or len(v) > METADATA_MAX_CHARS:
            raise InvalidRequest(f"metadata[{k[:40]}]", f"keys and values are at most {METADATA_MAX_CHARS} characters")


def _document(doc: pb.Document, field: str, limits: LimitsConfig) -> dict[str, Any]:
    """A document as LiteLLM's file content part, which it maps per provider (Anthropic document
    blocks, OpenAI file parts, Gemini inline data); a URL as the part's file_id."""
    source = doc.WhichOneof("source")
    if source == "url":
        if not doc.url.startswith("https://"):
            raise InvalidRequest(f"{field}.url", "must be an https URL")
        return {"type": "file", "file": {"file_id": doc.url}}
    if source != "data" or not doc.data:
        raise InvalidRequest(field, "exactly one of data or url must be set, and data must not be empty")
    if len(doc.data) > limits.max_document_bytes:
        raise InvalidRequest(f"{field}.data", f"at most {limits.max_document_bytes} bytes (limits.max_document_bytes)")
    if not re.fullmatch(r"(application|text)/[A-Za-z0-9.+-]+", doc.mime_type):
        raise InvalidRequest(f"{field}.mime_type", "must be a document MIME type such as application/pdf")
    data = base64.b64encode(doc.data).decode()
    return {
        "type": "file",
        "file": {"file_data": f"data:{doc.mime_type};base64,{data}", "filename": doc.filename or "document"},
    }


def messages_from_proto(messages: Any, limits: LimitsConfig, field_prefix: str = "messages") -> list[dict[str, Any]]:
    """The conversation as OpenAI chat-format dicts, validated within the limits."""
    if len(messages) > limits.max_messages:
        raise InvalidRequest(field_prefix, f"at most {limits.max_messages} messages (limits.max_messages)")
    if not messages:
        raise InvalidRequest(field_prefix, "at least one message is required")
    out: list[dict[str, Any]] = []
    open_calls: set[str] = set()
    documents = 0
    for i, msg in enumerate(messages):
        field = f"{field_prefix}[{i}]"
        documents += sum(1 for part in msg.parts if part.WhichOneof("part") == "document")
        if documents > limits.max_documents:
            raise InvalidRequest(
                f"{field}.parts", f"at most {limits.max_documents} documents in one request (limits.max_documents)"
            )
        role = _ROLES.get(msg.role)
        if role is None:
            raise InvalidRequest(f"{field}.role", "must be ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL or ROLE_SYSTEM")
        content = _content(msg, i, limits)
        if msg.tool_calls and role != "assistant":
            raise InvalidRequest(f"{field}.tool_calls", "only assistant messages carry tool calls")
        if msg.tool_call_id and role != "tool":
            raise InvalidRequest(f"{field}.tool_call_id", "only tool messages carry a tool_call_id")
        entry: dict[str, Any] = {"role": role, "content": content}
        if len(msg.tool_calls) > limits.max_tool_calls:
            raise InvalidRequest(f"{field}.tool_calls", f"at most {limits.max_tool_calls} tool calls (limits.max_tool_calls)")
        if role == "assistant" and msg.tool_calls:
            calls = []
            for j, tc in enumerate(msg.tool_calls):
                tc_field = f"{field}.tool_calls[{j}]"
                if not tc.id:
                    raise InvalidRequest(f"{tc_field}.id", "is required")
                if not TOOL_NAME_RE.fullmatch(tc.name):
                    raise InvalidRequest(f"{tc_field}.name", "must be 1-64 letters, digits, '_' or '-'")
                _json_object(tc.arguments_json or "{}", f"{tc_field}.arguments_json", "arguments", limits.max_json_depth)
                calls.append(
                    {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments_json or "{}"}}
                )
                open_calls.add(tc.id)
            entry["tool_calls"] = calls
        if msg.thinking_blocks:
            entry["thinking_blocks"] = _thinking_in(msg, field, limits)
        if role == "tool":
            if not msg.tool_call_id:
                raise InvalidRequest(f"{field}.tool_call_id", "is required for a tool message")
            if msg.tool_call_id not in open_calls:
                raise InvalidRequest(f"{field}.tool_call_id", "must answer a tool call made by an earlier assistant message")
            entry["tool_call_id"] = msg.tool_call_id
            entry["content"] = content if content is not None else ""
            if msg.name:
                entry["name"] = msg.name
        elif role in ("user", "system") and content is None:
            raise InvalidRequest(f"{field}.parts", f"a {role} message needs content")
        out.append(entry)
    return out


def _thinking_in(msg: pb.Message, field: str, limits: LimitsConfig) -> list[dict[str, Any]]:
    """An assistant turn's thinking blocks in LiteLLM's format, each marked with its provider (the
    request builder keeps or drops them per route, then removes the mark)."""
    if msg.role != pb.ROLE_ASSISTANT:
        raise InvalidRequest(f"{field}.thinking_blocks", "only assistant messages carry thinking blocks")
    if len(msg.thinking_blocks) > limits.max_parts:
        raise InvalidRequest(f"{field}.thinking_blocks", f"at most {limits.max_parts} blocks (limits.max_parts)")
    blocks: list[dict[str, Any]] = []
    for j, b in enumerate(msg.thinking_blocks):
        if b.redacted_data and (b.thinking or b.signature):
            raise InvalidRequest(f"{field}.thinking_blocks[{j}]", "a redacted block has redacted_data only")
        if b.redacted_data:
            blocks.append({"type": "redacted_thinking", "data": b.redacted_data, "provider": b.provider})
        elif b.signature:
            blocks.append({"type": "thinking", "thinking": b.thinking, "signature": b.signature, "provider": b.provider})
        else:
            raise InvalidRequest(f"{field}.thinking_blocks[{j}].signature", "is required (send blocks back as they came)")
    return blocks


def reasoning_from_proto(req: Request) -> types.ReasoningAsk:
    """The reasoning a request asks for; checked against the route when the request is built."""
    if not req.HasField("reasoning"):
        return types.ReasoningAsk()
    r = req.reasoning
    effort = _EFFORTS.get(r.effort, "")
    if r.effort and not effort:
        raise InvalidRequest("reasoning.effort", "unknown effort")
    budget = r.budget_tokens if r.HasField("budget_tokens") else None
    if budget is not None and budget <= 0:
        raise InvalidRequest("reasoning.budget_tokens", "must be positive")
    return types.ReasoningAsk(effort, budget)


def tools_from_proto(tools: Any, limits: LimitsConfig) -> tuple[types.ToolSpec, ...]:
    """The tools, their names and JSON Schemas validated within the limits."""
    if len(tools) > limits.max_tools:
        raise InvalidRequest("tools", f"at most {limits.max_tools} tools (limits.max_tools)")
    specs: list[types.ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        field = f"tools[{i}]"
        if not TOOL_NAME_RE.fullmatch(tool.name):
            raise InvalidRequest(f"{field}.name", "must be 1-64 letters, digits, '_' or '-'")
        if tool.name in seen:
            raise InvalidRequest(f"{field}.name", f"duplicate tool name '{tool.name}'")
        seen.add(tool.name)
        params = (
            _json_object(tool.parameters_json, f"{field}.parameters_json", "the parameters schema", limits.max_json_depth)
            if tool.parameters_json
            else {}
        )
        if params.get("type", "object") != "object":
            raise InvalidRequest(f"{field}.parameters_json", 'the schema\'s "type" must be "object"')
        if not isinstance(params.get("properties", {}), dict):
            raise InvalidRequest(f"{field}.parameters_json", '"properties" must be an object')
        required = params.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise InvalidRequest(f"{field}.parameters_json", '"required" must be a list of property names')
        specs.append(types.ToolSpec(tool.name, tool.description, params))
    return tuple(specs)


def call_from_proto(req: Request, max_metadata_entries: int, limits: LimitsConfig | None = None) -> types.CallRequest:
    """A validated CallRequest from a CompleteRequest or StreamRequest, within the server's limits."""
    limits = limits or LimitsConfig()
    if req.HasField("max_tokens") and req.max_tokens > limits.max_tokens:
        raise InvalidRequest("max_tokens", f"at most {limits.max_tokens} (limits.max_tokens)")
    if len(req.stop_sequences) > limits.max_stop_sequences:
        raise InvalidRequest("stop_sequences", f"at most {limits.max_stop_sequences} (limits.max_stop_sequences)")
    messages = messages_from_proto(req.messages, limits)
    tools = tools_from_proto(req.tools, limits)
    tool_choice: str | dict[str, Any] | None = None
    if req.HasField("tool_choice"):
        which = req.tool_choice.WhichOneof("choice")
        if which == "tool_name":
            if req.tool_choice.tool_name not in {t.name for t in tools}:
                raise InvalidRequest("tool_choice.tool_name", "must name one of the request's tools")
            tool_choice = {"type": "function", "function": {"name": req.tool_choice.tool_name}}
        elif which == "mode" and req.tool_choice.mode != pb.TOOL_CHOICE_MODE_UNSPECIFIED:
            tool_choice = _TOOL_MODES.get(req.tool_choice.mode)
            if tool_choice is None:
                raise InvalidRequest("tool_choice.mode", "unknown mode")
    if req.HasField("max_tokens") and req.max_tokens <= 0:
        raise InvalidRequest("max_tokens", "must be positive")
    if req.HasField("temperature") and not 0.0 <= req.temperature <= 2.0:
        raise InvalidRequest("temperature", "must be between 0 and 2")
    if req.HasField("top_p") and not 0.0 <= req.top_p <= 1.0:
        raise InvalidRequest("top_p", "must be between 0 and 1")
    if req.HasField("max_retries") and req.max_retries < 0:
        raise InvalidRequest("max_retries", "must not be negative")
    if any(not s for s in req.stop_sequences):
        raise InvalidRequest("stop_sequences", "must not contain empty strings")
    _check_metadata(req.metadata, max_metadata_entries)
    response_format = None
    if req.HasField("response_format"):
        rf = req.response_format
        name = rf.name or "response"
        if not SCHEMA_NAME_RE.match(name):
            raise InvalidRequest("response_format.name", "must be 1-64 letters, digits, '_' or '-'")
        schema = _json_object(rf.json_schema, "response_format.json_schema", "the schema", limits.max_json_depth)
        spec: dict[str, Any] = {"name": name, "schema": schema}
        if rf.strict:
            spec["strict"] = True
        response_format = {"type": "json_schema", "json_schema": spec}
    return types.CallRequest(
        messages=messages,
        system=req.system,
        system_dynamic_suffix=req.system_dynamic_suffix,
        tools=tools,
        tool_choice=tool_choice,
        max_tokens=req.max_tokens if req.HasField("max_tokens") else None,
        temperature=req.temperature if req.HasField("temperature") else None,
        top_p=req.top_p if req.HasField("top_p") else None,
        stop=tuple(req.stop_sequences),
        seed=req.seed if req.HasField("seed") else None,
        json_mode=req.json_mode,
        response_format=response_format,
        max_retries=req.max_retries if req.HasField("max_retries") else None,
        reasoning=reasoning_from_proto(req),
    )


def count_call_from_proto(req: pb.CountTokensRequest, limits: LimitsConfig | None = None) -> types.CallRequest:
    """The CallRequest whose input tokens CountTokens estimates, under the same limits as Complete."""
    limits = limits or LimitsConfig()
    return types.CallRequest(
        messages=messages_from_proto(req.messages, limits), system=req.system, tools=tools_from_proto(req.tools, limits)
    )


# --- outgoing ------------------------------------------------------------------------------------


def finish_reason_to_proto(raw: str) -> pb.FinishReason.ValueType:
    """The normalised finish reason for a provider's raw one."""
    if not raw:
        return pb.FINISH_REASON_UNSPECIFIED
    return _FINISH.get(raw, pb.FINISH_REASON_OTHER)


def gateway_to_proto(g: types.GatewayInfo) -> pb.GatewayInfo:
    """GatewayInfo as protobuf."""
    info = pb.GatewayInfo()
    _fill_gateway(info, g)
    return info


def _fill_gateway(info: pb.GatewayInfo, g: types.GatewayInfo) -> None:
    info.route = g.route
    info.attempts = g.attempts
    if g.deployment:
        info.deployment = g.deployment
    info.upstream_duration.FromNanoseconds(int(g.upstream_s * 1e9))


def tool_call_to_proto(tc: types.ToolCall) -> pb.ToolCall:
    """A tool call as protobuf."""
    return pb.ToolCall(id=tc.id, name=tc.name, arguments_json=tc.arguments_json)


def _thinking(blocks: tuple[types.ThinkingBlock, ...]) -> list[pb.ThinkingBlock]:
    return [
        pb.ThinkingBlock(thinking=b.thinking, signature=b.signature, redacted_data=b.redacted_data, provider=b.provider)
        for b in blocks
    ]


def _citations(citations: tuple[types.Citation, ...]) -> list[pb.Citation]:
    return [pb.Citation(url=c.url, title=c.title, cited_text=c.cited_text) for c in citations]


def finish_to_proto(f: types.Finish) -> pb.Finish:
    """The finish event as protobuf."""
    message = pb.Finish(**_finish_fields(f))
    _set_usage_and_gateway(message, f)
    return message


def completion_to_proto(c: types.Completion) -> pb.CompleteResponse:
    """A whole answer as CompleteResponse."""
    fields = _finish_fields(c.finish)
    if c.text:
        fields["text"] = c.text
    if c.reasoning:
        fields["reasoning"] = c.reasoning
    if c.tool_calls:
        fields["tool_calls"] = [tool_call_to_proto(tc) for tc in c.tool_calls]
    message = pb.CompleteResponse(**fields)
    _set_usage_and_gateway(message, c.finish)
    return message


def _finish_fields(f: types.Finish) -> dict[str, Any]:
    """The fields a finish sets, empty ones left out: a message built with every field named,
    each empty list and string converted, cost about twice as much to build (the bytes are the same)."""
    fields: dict[str, Any] = {
        "finish_reason": finish_reason_to_proto(f.finish_reason),
        "provider_finish_reason": f.finish_reason,
        "provider_model": f.provider_model,
    }
    if f.cost_usd:
        fields["cost_usd"] = f.cost_usd
    if f.thinking_blocks:
        fields["thinking_blocks"] = _thinking(f.thinking_blocks)
    if f.refusal:
        fields["refusal"] = f.refusal
    if f.citations:
        fields["citations"] = _citations(f.citations)
    return fields


def _set_usage_and_gateway(message: pb.Finish | pb.CompleteResponse, f: types.Finish) -> None:
    """Usage and gateway set in place (always present, even when zero), non-zero counts only."""
    u, usage = f.usage, message.usage
    usage.SetInParent()
    for name in _USAGE_FIELDS:
        if value := getattr(u, name):
            setattr(usage, name, value)
    _fill_gateway(message.gateway, f.gateway)


_USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_tokens", "reasoning_tokens")


_TEXT_END = pb.StreamResponse(text_end=pb.TextEnd())


def event_to_proto(event: types.Event) -> pb.StreamResponse:
    """One core event as a StreamResponse."""
    if isinstance(event, types.TextDelta):
        return pb.StreamResponse(text_delta=pb.TextDelta(text=event.text))
    if isinstance(event, types.ReasoningDelta):
        return pb.StreamResponse(reasoning_delta=pb.ReasoningDelta(text=event.text))
    if isinstance(event, types.ToolCall):
        return pb.StreamResponse(tool_call=tool_call_to_proto(event))
    if isinstance(event, types.TextEnd):
        return _TEXT_END
    return pb.StreamResponse(finish=finish_to_proto(event))


# --- embeddings ----------------------------------------------------------------------------------

_INPUT_TYPES = {pb.EMBED_INPUT_TYPE_QUERY: "query", pb.EMBED_INPUT_TYPE_DOCUMENT: "document"}


def embed_call_from_proto(req: pb.EmbedRequest, max_metadata_entries: int, limits: LimitsConfig | None = None) -> EmbedCall:
    """A validated EmbedCall: at least one input, each text (not empty) or an inline image, all of
    one kind, within limits.max_embed_inputs and limits.max_embed_input_bytes."""
    limits = limits or LimitsConfig()
    if not req.inputs:
        raise InvalidRequest("inputs", "at least one input is required")
    if len(req.inputs) > limits.max_embed_inputs:
        raise InvalidRequest("inputs", f"at most {limits.max_embed_inputs} inputs (limits.max_embed_inputs)")
    inputs: list[str] = []
    size = 0
    kinds = set()
    for i, item in enumerate(req.inputs):
        kind = item.WhichOneof("input")
        if kind == "text":
            if not item.text:
                raise InvalidRequest(f"inputs[{i}].text", "must not be empty")
            inputs.append(item.text)
            size += len(item.text.encode())
        elif kind == "inline_image":
            inputs.append(_inline_image_url(item.inline_image, f"inputs[{i}].inline_image"))
            size += len(item.inline_image.data)
        else:
            raise InvalidRequest(f"inputs[{i}]", "exactly one of text or inline_image must be set")
        kinds.add(kind)
        if len(kinds) > 1:
            raise InvalidRequest(f"inputs[{i}]", "a request's inputs are all text or all images")
        if size > limits.max_embed_input_bytes:
            raise InvalidRequest(
                "inputs", f"at most {limits.max_embed_input_bytes} bytes of input (limits.max_embed_input_bytes)"
            )
    if req.HasField("dimensions") and req.dimensions <= 0:
        raise InvalidRequest("dimensions", "must be positive")
    if req.HasField("max_retries") and req.max_retries < 0:
        raise InvalidRequest("max_retries", "must not be negative")
    if req.input_type not in (pb.EMBED_INPUT_TYPE_UNSPECIFIED, *_INPUT_TYPES):
        raise InvalidRequest("input_type", "must be EMBED_INPUT_TYPE_QUERY or EMBED_INPUT_TYPE_DOCUMENT")
    _check_metadata(req.metadata, max_metadata_entries)
    return EmbedCall(
        inputs=tuple(inputs),
        images=kinds == {"inline_image"},
        dimensions=req.dimensions if req.HasField("dimensions") else None,
        input_type=_INPUT_TYPES.get(req.input_type, ""),
        max_retries=req.max_retries if req.HasField("max_retries") else None,
    )


def embedding_to_proto(e: Embedding) -> pb.EmbedResponse:
    """The vectors and their accounting as EmbedResponse."""
    return pb.EmbedResponse(
        embeddings=[pb.Embedding(values=v) for v in e.vectors],
        dimensions=len(e.vectors[0]) if e.vectors else 0,
        usage=pb.Usage(input_tokens=e.usage.input_tokens),
        cost_usd=e.cost_usd,
        provider_model=e.provider_model,
        gateway=gateway_to_proto(e.gateway),
    )
