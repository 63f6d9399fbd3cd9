"""The client: channels set up for production, typed results and events, one error type."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack

import grpc
import grpc.aio

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_client._rpc_status import parse_details
from llm_client.embeddings import Embeddings, EmbedOptions, embed_request

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DEFAULT_TIMEOUT_S = 120.0

# gRFC A6 retry policy: only UNAVAILABLE is retried by the channel; the server's own
# retries already handled rate limits, so RESOURCE_EXHAUSTED is left to the caller.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "llm.v1.LLMService"}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.2s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def channel_options(*, round_robin: bool = True, retries: bool = True) -> list[tuple[str, Any]]:
    """Channel options for production: keepalive, message sizes, service config."""
    config = dict(_SERVICE_CONFIG)
    if not round_robin:
        config.pop("loadBalancingConfig")
    if not retries:
        config.pop("methodConfig")
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.service_config", json.dumps(config)),
    ]


def _credentials(tls: bool | grpc.ChannelCredentials, token: str | None) -> grpc.ChannelCredentials | None:
    """TLS (system roots, or the credentials given), with the token on every call.

    A token without TLS is only sent to a loopback server (grpc's local credentials):
    gRPC refuses to send call credentials in plain text anywhere else.
    """
    if tls is False and token is None:
        return None
    if tls is False:
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    else:
        creds = tls if isinstance(tls, grpc.ChannelCredentials) else grpc.ssl_channel_credentials()
    if token is not None:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
    return creds


# --- messages ------------------------------------------------------------------------------------


def user(text: str) -> pb.Message:
    """A user message with text."""
    return pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text=text)])


def document(source: bytes | str, mime_type: str = "application/pdf", filename: str = "") -> pb.ContentPart:
    """A document part for a user message: its bytes (with their MIME type), or an https URL the
    provider fetches itself (`pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text=...), document(pdf)])`)."""
    if isinstance(source, str):
        return pb.ContentPart(document=pb.Document(url=source, filename=filename))
    return pb.ContentPart(document=pb.Document(data=source, mime_type=mime_type, filename=filename))


def system(text: str) -> pb.Message:
    """A system message with text."""
    return pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.ContentPart(text=text)])


def assistant(
    text: str = "", tool_calls: Sequence[pb.ToolCall] = (), thinking_blocks: Sequence[pb.ThinkingBlock] = ()
) -> pb.Message:
    """An assistant message: earlier answer text, the tool calls it made and the thinking blocks it
    came with (sent back unchanged: Anthropic requires them after a tool call with thinking on)."""
    parts = [pb.ContentPart(text=text)] if text else []
    return pb.Message(role=pb.ROLE_ASSISTANT, parts=parts, tool_calls=list(tool_calls), thinking_blocks=list(thinking_blocks))


def tool_result(tool_call_id: str, text: str) -> pb.Message:
    """The result of a tool call."""
    return pb.Message(role=pb.ROLE_TOOL, tool_call_id=tool_call_id, parts=[pb.ContentPart(text=text)])


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """A complete answer."""

    text: str
    tool_calls: list[pb.ToolCall]
    reasoning: str
    finish_reason: str
    usage: pb.Usage
    cost_usd: float
    provider_model: str
    route: str
    attempts: int
    raw: pb.CompleteResponse
    refusal: str = ""  # the model declined (finish_reason is then FINISH_REASON_CONTENT_FILTER)
    deployment: str = ""  # the route's deployment that answered, for a route with several
    thinking_blocks: tuple[pb.ThinkingBlock, ...] = ()  # signed reasoning, to send back with this turn
    citations: tuple[pb.Citation, ...] = ()  # sources a provider-run tool (web search) found and the text cites

    def as_message(self) -> pb.Message:
        """This answer as the assistant turn of the next request: text, tool calls and thinking blocks."""
        return assistant(self.text, self.tool_calls, self.thinking_blocks)

    @classmethod
    def from_proto(cls, r: pb.CompleteResponse) -> Completion:
        """Wrap a CompleteResponse."""
        return cls(
            text=r.text,
            tool_calls=list(r.tool_calls),
            reasoning=r.reasoning,
            finish_reason=pb.FinishReason.Name(r.finish_reason),
            usage=r.usage,
            cost_usd=r.cost_usd,
            provider_model=r.provider_model,
            route=r.gateway.route,
            attempts=r.gateway.attempts,
            raw=r,
            refusal=r.refusal,
            deployment=r.gateway.deployment,
            thinking_blocks=tuple(r.thinking_blocks),
            citations=tuple(r.citations),
        )


class _TextSoFar:
    """The answer's text as it grows: pieces appended in O(1), joined only when read."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._ends: list[int] = []
        self._joined = ""
        self._joined_count = 0

    def append(self, piece: str) -> int:
        self._pieces.append(piece)
        self._ends.append((self._ends[-1] if self._ends else 0) + len(piece))
        return len(self._pieces)

    @property
    def count(self) -> int:
        return len(self._pieces)

    def upto(self, count: int) -> str:
        """The text of the first `count` pieces."""
        if count == 0:
            return ""
        if self._joined_count < len(self._pieces):
            self._joined += "".join(self._pieces[self._joined_count :])
            self._joined_count = len(self._pieces)
        end = self._ends[count - 1]
        return self._joined if end == len(self._joined) else self._joined[:end]


@dataclass(frozen=True)
class _Event:
    raw: pb.StreamResponse
    _text: _TextSoFar = field(repr=False, compare=False)
    _upto: int = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        """The answer's text up to and including this event (joined when read, not per event)."""
        return self._text.upto(self._upto)


# Each kind carries its own payload; the others' are None (or "" for delta) on it, so code that
# reads `event.tool_call` or `event.finish` on any event keeps working, and a check of `kind`
# narrows the type for mypy.


@dataclass(frozen=True)
class TextDeltaEvent(_Event):
    """New answer text."""

    delta: str
    kind: Literal["text_delta"] = "text_delta"
    tool_call: ClassVar[None] = None
    finish: ClassVar[None] = None


@dataclass(frozen=True)
class ReasoningDeltaEvent(_Event):
    """New reasoning text."""

    delta: str
    kind: Literal["reasoning_delta"] = "reasoning_delta"
    tool_call: ClassVar[None] = None
    finish: ClassVar[None] = None


@dataclass(frozen=True)
class ToolCallEvent(_Event):
    """A complete tool call."""

    tool_call: pb.ToolCall
    kind: Literal["tool_call"] = "tool_call"
    delta: ClassVar[str] = ""
    finish: ClassVar[None] = None


@dataclass(frozen=True)
class TextEndEvent(_Event):
    """The end of the answer's text."""

    kind: Literal["text_end"] = "text_end"
    delta: ClassVar[str] = ""
    tool_call: ClassVar[None] = None
    finish: ClassVar[None] = None


@dataclass(frozen=True)
class FinishEvent(_Event):
    """The end of a successful stream: usage, finish reason, cost, gateway facts."""

    finish: pb.Finish
    kind: Literal["finish"] = "finish"
    delta: ClassVar[str] = ""
    tool_call: ClassVar[None] = None


StreamEvent = TextDeltaEvent | ReasoningDeltaEvent | ToolCallEvent | TextEndEvent | FinishEvent
"""One streamed event; `kind` tells which (`if event.kind == "finish": event.finish.usage`)."""


def _event(r: pb.StreamResponse, text: _TextSoFar) -> StreamEvent | None:
    kind = r.WhichOneof("event")
    if kind == "text_delta":
        return TextDeltaEvent(r, text, text.append(r.text_delta.text), r.text_delta.text)
    if kind == "reasoning_delta":
        return ReasoningDeltaEvent(r, text, text.count, r.reasoning_delta.text)
    if kind == "tool_call":
        return ToolCallEvent(r, text, text.count, r.tool_call)
    if kind == "text_end":
        return TextEndEvent(r, text, text.count)
    if kind == "finish":
        return FinishEvent(r, text, text.count, r.finish)
    return None  # the error event: the status that follows carries the same error


def assistant_from_events(events: Iterable[StreamEvent]) -> pb.Message:
    """A streamed answer as the assistant turn of the next request: its text, tool calls and the
    finish's thinking blocks (collect the events as they arrive, then pass them here)."""
    text: list[str] = []
    calls: list[pb.ToolCall] = []
    blocks: list[pb.ThinkingBlock] = []
    for event in events:
        if event.kind == "text_delta":
            text.append(event.delta)
        elif event.kind == "tool_call":
            calls.append(event.tool_call)
        elif event.kind == "finish":
            blocks.extend(event.finish.thinking_blocks)
    return assistant("".join(text), calls, blocks)


class Stream:
    """A streamed answer: iterate it for events; `with` closes the call (and the upstream) on exit."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._text = _TextSoFar()

    @property
    def text(self) -> str:
        """The answer's text received so far."""
        return self._text.upto(self._text.count)

    def __iter__(self) -> Iterator[StreamEvent]:
        try:
            with _mapped_errors():
                for r in self._call:
                    event = _event(r, self._text)
                    if event is not None:
                        yield event
        finally:
            self.cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """End the call now; the server closes the upstream request."""
        self._call.cancel()


class AsyncStream:
    """A streamed answer for asyncio: `async for` its events; `async with` closes the call on exit.

    Breaking out of `async for` alone leaves the call open until `cancel()` or the end of the
    `async with` block: an async iterator is not closed when a loop leaves it.
    """

    def __init__(self, call: Any) -> None:
        self._call = call
        self._text = _TextSoFar()
        self._responses: AsyncIterator[pb.StreamResponse] | None = None

    @property
    def text(self) -> str:
        """The answer's text received so far."""
        return self._text.upto(self._text.count)

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._responses is None:
            self._responses = self._call.__aiter__()
        while True:
            try:
                with _mapped_errors():
                    r = await self._responses.__anext__()
            except BaseException:
                self.cancel()
                raise
            event = _event(r, self._text)
            if event is not None:
                return event

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """End the call now; the server closes the upstream request."""
        self._call.cancel()


@dataclass(frozen=True)
class TokenCount:
    """CountTokens' answer: the input tokens, and whether LiteLLM's tokenizer or the estimate made it."""

    input_tokens: int
    method: Literal["litellm", "estimate"]


# --- errors --------------------------------------------------------------------------------------


class LLMServiceError(Exception):
    """A failed call: gRPC code, ErrorInfo reason and metadata, RetryInfo delay, field and quota violations."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay_s: float | None = None,
        field_violations: list[tuple[str, str]] | None = None,
        quota_violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.retry_delay_s = retry_delay_s
        self.field_violations = field_violations or []
        self.quota_violations = quota_violations or []  # (subject, description) of each quota exceeded


class InvalidArgument(LLMServiceError):
    """INVALID_ARGUMENT: fix the request (field_violations names the field)."""


class NotFound(LLMServiceError):
    """NOT_FOUND: no such route; ListModels lists them."""


class FailedPrecondition(LLMServiceError):
    """FAILED_PRECONDITION: the route cannot serve now (no key, key rejected, no credit)."""


class ResourceExhausted(LLMServiceError):
    """RESOURCE_EXHAUSTED: rate-limited or over a limit; retry_delay_s says when to try again."""


class Unavailable(LLMServiceError):
    """UNAVAILABLE: the provider failed after the server's retries; may succeed later."""


class DeadlineExceeded(LLMServiceError):
    """DEADLINE_EXCEEDED: the call's timeout passed."""


class Unauthenticated(LLMServiceError):
    """UNAUTHENTICATED: the caller's credentials are missing or wrong."""


class PermissionDenied(LLMServiceError):
    """PERMISSION_DENIED: the caller may not use this route."""


_BY_CODE: dict[grpc.StatusCode, type[LLMServiceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Turn a failed gRPC call into its LLMServiceError (the one place the client does it)."""
    try:
        yield
    except grpc.RpcError as err:
        raise error_from_rpc(err) from None


def error_from_rpc(err: grpc.RpcError | grpc.aio.AioRpcError) -> LLMServiceError:
    """An LLMServiceError from a failed call, reading the rich status details from the trailers."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    raw = next((value for key, value in err.trailing_metadata() or () if key == STATUS_DETAILS_KEY), None)
    kind = _BY_CODE.get(code, LLMServiceError)
    if raw is None:
        return kind(code, message)
    d = parse_details(raw)
    return kind(code, message, d.reason, d.metadata, d.retry_delay_s, d.field_violations, d.quota_violations)


# --- requests ------------------------------------------------------------------------------------


class CallOptions(TypedDict, total=False):
    """The keyword arguments every call takes (each is a field of the request; unset means the default).

    system: a system prompt (besides any system messages).
    system_dynamic_suffix: the part of the system prompt that changes every call, kept out of the prompt cache.
    tools: the tools the model may call (`pb.Tool`, schema as JSON text).
    tool_choice: "auto", "none", "required", the name of the one tool to call, or a `pb.ToolChoice`.
    max_tokens, temperature, top_p, stop_sequences, seed: the sampling controls.
    json_mode: ask for a JSON object. response_format: a JSON Schema (a dict, or `pb.ResponseFormat`).
    max_retries: the server's retries for this call (capped by the server).
    reasoning: an effort ("none", "minimal", "low", "medium", "high") or a `pb.Reasoning` with a
        thinking budget (`pb.Reasoning(budget_tokens=2048)`); unset: the route's default.
    metadata: caller key/values for attribution in the server's logs (never labels).
    timeout: the gRPC deadline in seconds (default 120).
    """

    system: str
    system_dynamic_suffix: str
    tools: Sequence[pb.Tool]
    tool_choice: str | pb.ToolChoice
    max_tokens: int
    temperature: float
    top_p: float
    stop_sequences: Sequence[str]
    seed: int
    json_mode: bool
    response_format: dict[str, Any] | pb.ResponseFormat
    max_retries: int
    metadata: dict[str, str]
    reasoning: str | pb.Reasoning
    timeout: float


_MODES = {"auto": pb.TOOL_CHOICE_MODE_AUTO, "none": pb.TOOL_CHOICE_MODE_NONE, "required": pb.TOOL_CHOICE_MODE_REQUIRED}


def _tool_choice(choice: str | pb.ToolChoice) -> pb.ToolChoice:
    if isinstance(choice, pb.ToolChoice):
        return choice
    mode = _MODES.get(choice)
    return pb.ToolChoice(mode=mode) if mode is not None else pb.ToolChoice(tool_name=choice)


def _response_format(fmt: dict[str, Any] | pb.ResponseFormat) -> pb.ResponseFormat:
    return fmt if isinstance(fmt, pb.ResponseFormat) else pb.ResponseFormat(json_schema=json.dumps(fmt))


def _reasoning(value: str | pb.Reasoning) -> pb.Reasoning:
    if isinstance(value, pb.Reasoning):
        return value
    try:
        return pb.Reasoning(effort=pb.ReasoningEffort.Value(f"REASONING_EFFORT_{value.upper()}"))
    except ValueError:
        raise ValueError(f"unknown reasoning effort {value!r}: none, minimal, low, medium or high") from None


def _fields(model: str, messages: Sequence[pb.Message], options: CallOptions, allowed: frozenset[str]) -> dict[str, Any]:
    """The request's fields from a call's options; options the request does not have are refused."""
    unknown = set(options) - allowed - {"timeout"}
    if unknown:
        raise TypeError(f"unexpected option(s) for this call: {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {"model": model, "messages": list(messages)}
    for name, value in options.items():
        if name == "timeout" or value is None:
            continue
        if name == "tool_choice":
            value = _tool_choice(value)  # type: ignore[arg-type]
        elif name == "response_format":
            value = _response_format(value)  # type: ignore[arg-type]
        elif name == "reasoning":
            value = _reasoning(value)  # type: ignore[arg-type]
        elif name in ("tools", "messages", "stop_sequences"):
            value = list(value)  # type: ignore[call-overload]
        fields[name] = value
    return fields


_ANSWER_OPTIONS = frozenset(CallOptions.__annotations__)
_COUNT_OPTIONS = frozenset({"system", "tools"})


class _Base:
    """What the blocking and asyncio clients share: the channel's options and the requests."""

    def __init__(
        self,
        target: str,
        tls: bool | grpc.ChannelCredentials,
        token: str | None,
        options: list[tuple[str, Any]] | None,
    ) -> None:
        self._target = target
        self._creds = _credentials(tls, token)
        self._options = options if options is not None else channel_options()

    @staticmethod
    def _complete_request(model: str, messages: Sequence[pb.Message], options: CallOptions) -> pb.CompleteRequest:
        return pb.CompleteRequest(**_fields(model, messages, options, _ANSWER_OPTIONS))

    @staticmethod
    def _stream_request(model: str, messages: Sequence[pb.Message], options: CallOptions) -> pb.StreamRequest:
        return pb.StreamRequest(**_fields(model, messages, options, _ANSWER_OPTIONS))

    @staticmethod
    def _count_request(model: str, messages: Sequence[pb.Message], options: CallOptions) -> pb.CountTokensRequest:
        return pb.CountTokensRequest(**_fields(model, messages, options, _COUNT_OPTIONS))

    @staticmethod
    def _token_count(r: pb.CountTokensResponse) -> TokenCount:
        return TokenCount(r.input_tokens, "litellm" if r.method == pb.TOKEN_COUNT_METHOD_LITELLM else "estimate")


class LLMClient(_Base):
    """A blocking client. Use as a context manager, or call close()."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool | grpc.ChannelCredentials = False,
        token: str | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        super().__init__(target, tls, token, options)
        creds, opts = self._creds, self._options
        self._channel = grpc.secure_channel(target, creds, opts) if creds else grpc.insecure_channel(target, opts)
        self.stub = pb_grpc.LLMServiceStub(self._channel)

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def models(self, timeout: float = 10.0) -> list[pb.Model]:
        """The routes the server offers (those the caller's token may use)."""
        with _mapped_errors():
            return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout).models)

    def complete(self, model: str, messages: Sequence[pb.Message], **options: Unpack[CallOptions]) -> Completion:
        """One complete answer on a route. Options: see CallOptions."""
        req = self._complete_request(model, messages, options)
        with _mapped_errors():
            return Completion.from_proto(self.stub.Complete(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S)))

    def stream(self, model: str, messages: Sequence[pb.Message], **options: Unpack[CallOptions]) -> Stream:
        """A streamed answer: iterate it for events (`with` it to close the call early). Options: see CallOptions."""
        req = self._stream_request(model, messages, options)
        return Stream(self.stub.Stream(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S)))

    def count_tokens(self, model: str, messages: Sequence[pb.Message], **options: Unpack[CallOptions]) -> TokenCount:
        """The input tokens a request would use on a route (only system and tools apply)."""
        req = self._count_request(model, messages, options)
        with _mapped_errors():
            return self._token_count(self.stub.CountTokens(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S)))

    def embed(self, model: str, inputs: Sequence[str | pb.EmbedInput], **options: Unpack[EmbedOptions]) -> Embeddings:
        """The vectors of texts (or `pb.EmbedInput`s) on an embedding route, in order. Options: see EmbedOptions."""
        req = embed_request(model, inputs, options)
        with _mapped_errors():
            answer = self.stub.Embed(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S))
        return Embeddings.from_proto(answer, options.get("as_lists", False))


class AsyncLLMClient(_Base):
    """An asyncio client with the same methods. Use as an async context manager, or await close()."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool | grpc.ChannelCredentials = False,
        token: str | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        super().__init__(target, tls, token, options)
        creds, opts = self._creds, self._options
        self._channel = grpc.aio.secure_channel(target, creds, opts) if creds else grpc.aio.insecure_channel(target, opts)
        self.stub = pb_grpc.LLMServiceStub(self._channel)

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def models(self, timeout: float = 10.0) -> list[pb.Model]:
        """The routes the server offers (those the caller's token may use)."""
        with _mapped_errors():
            return list((await self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout)).models)

    async def complete(self, model: str, messages: Sequence[pb.Message], **options: Unpack[CallOptions]) -> Completion:
        """One complete answer on a route. Options: see CallOptions."""
        req = self._complete_request(model, messages, options)
        with _mapped_errors():
            return Completion.from_proto(await self.stub.Complete(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S)))

    def stream(self, model: str, messages: Sequence[pb.Message], **options: Unpack[CallOptions]) -> AsyncStream:
        """A streamed answer: `async with client.stream(...) as s: async for event in s`. Options: see CallOptions."""
        req = self._stream_request(model, messages, options)
        return AsyncStream(self.stub.Stream(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S)))

    async def count_tokens(self, model: str, messages: Sequence[pb.Message], **options: Unpack[CallOptions]) -> TokenCount:
        """The input tokens a request would use on a route (only system and tools apply)."""
        req = self._count_request(model, messages, options)
        with _mapped_errors():
            return self._token_count(await self.stub.CountTokens(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S)))

    async def embed(self, model: str, inputs: Sequence[str | pb.EmbedInput], **options: Unpack[EmbedOptions]) -> Embeddings:
        """The vectors of texts (or `pb.EmbedInput`s) on an embedding route, in order. Options: see EmbedOptions."""
        req = embed_request(model, inputs, options)
        with _mapped_errors():
            answer = await self.stub.Embed(req, timeout=options.get("timeout", DEFAULT_TIMEOUT_S))
        return Embeddings.from_proto(answer, options.get("as_lists", False))
