"""The client: channels set up for production, typed results and events, one error type."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_client._rpc_status import parse_details

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


def system(text: str) -> pb.Message:
    """A system message with text."""
    return pb.Message(role=pb.ROLE_SYSTEM, parts=[pb.ContentPart(text=text)])


def assistant(text: str = "", tool_calls: Sequence[pb.ToolCall] = ()) -> pb.Message:
    """An assistant message: earlier answer text and the tool calls it made."""
    parts = [pb.ContentPart(text=text)] if text else []
    return pb.Message(role=pb.ROLE_ASSISTANT, parts=parts, tool_calls=list(tool_calls))


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
        )


@dataclass(frozen=True)
class StreamEvent:
    """One streamed event. kind is the oneof name; text is the accumulated answer so far."""

    kind: str
    delta: str
    text: str
    raw: pb.StreamResponse
    tool_call: pb.ToolCall | None = None
    finish: pb.Finish | None = None


@dataclass
class _Accumulator:
    text: list[str] = field(default_factory=list)

    def wrap(self, r: pb.StreamResponse) -> StreamEvent:
        kind = r.WhichOneof("event") or ""
        delta = ""
        if kind == "text_delta":
            delta = r.text_delta.text
            self.text.append(delta)
        elif kind == "reasoning_delta":
            delta = r.reasoning_delta.text
        return StreamEvent(
            kind=kind,
            delta=delta,
            text="".join(self.text),
            raw=r,
            tool_call=r.tool_call if kind == "tool_call" else None,
            finish=r.finish if kind == "finish" else None,
        )


# --- errors --------------------------------------------------------------------------------------


class LLMServiceError(Exception):
    """A failed call: gRPC code, ErrorInfo reason and metadata, RetryInfo delay, field violations."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay_s: float | None = None,
        field_violations: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.retry_delay_s = retry_delay_s
        self.field_violations = field_violations or []


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


def error_from_rpc(err: grpc.RpcError | grpc.aio.AioRpcError) -> LLMServiceError:
    """An LLMServiceError from a failed call, reading the rich status details from the trailers."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    raw = next((value for key, value in err.trailing_metadata() or () if key == STATUS_DETAILS_KEY), None)
    kind = _BY_CODE.get(code, LLMServiceError)
    if raw is None:
        return kind(code, message)
    d = parse_details(raw)
    return kind(code, message, d.reason, d.metadata, d.retry_delay_s, d.field_violations)


# --- requests ------------------------------------------------------------------------------------


def _request_fields(
    model: str,
    messages: Sequence[pb.Message],
    system: str,
    tools: Sequence[pb.Tool],
    max_tokens: int | None,
    temperature: float | None,
    json_mode: bool,
    max_retries: int | None,
    metadata: dict[str, str] | None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "system": system,
        "tools": list(tools),
        "json_mode": json_mode,
        "metadata": metadata or {},
    }
    for name, value in (("max_tokens", max_tokens), ("temperature", temperature), ("max_retries", max_retries)):
        if value is not None:
            fields[name] = value
    return fields


class LLMClient:
    """A blocking client. Use as a context manager, or call close()."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool | grpc.ChannelCredentials = False,
        token: str | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        creds = _credentials(tls, token)
        opts = options if options is not None else channel_options()
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
        """The routes the server offers."""
        try:
            return list(self.stub.ListModels(pb.ListModelsRequest(), timeout=timeout).models)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def complete(
        self,
        model: str,
        messages: Sequence[pb.Message],
        *,
        system: str = "",
        tools: Sequence[pb.Tool] = (),
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_mode: bool = False,
        max_retries: int | None = None,
        metadata: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Completion:
        """One complete answer; timeout sets the gRPC deadline."""
        req = pb.CompleteRequest(
            **_request_fields(model, messages, system, tools, max_tokens, temperature, json_mode, max_retries, metadata)
        )
        try:
            return Completion.from_proto(self.stub.Complete(req, timeout=timeout))
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def stream(
        self,
        model: str,
        messages: Sequence[pb.Message],
        *,
        system: str = "",
        tools: Sequence[pb.Tool] = (),
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_mode: bool = False,
        max_retries: int | None = None,
        metadata: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Iterator[StreamEvent]:
        """Streamed events; each carries the accumulated text. Raises LLMServiceError on failure."""
        req = pb.StreamRequest(
            **_request_fields(model, messages, system, tools, max_tokens, temperature, json_mode, max_retries, metadata)
        )
        acc = _Accumulator()
        call = self.stub.Stream(req, timeout=timeout)
        try:
            for r in call:
                if r.WhichOneof("event") == "error":
                    continue  # the status that follows carries the same error
                yield acc.wrap(r)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        finally:
            call.cancel()


class AsyncLLMClient:
    """An asyncio client. Use as an async context manager, or await close()."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tls: bool | grpc.ChannelCredentials = False,
        token: str | None = None,
        options: list[tuple[str, Any]] | None = None,
    ) -> None:
        creds = _credentials(tls, token)
        opts = options if options is not None else channel_options()
        self._channel = grpc.aio.secure_channel(target, creds, opts) if creds else grpc.aio.insecure_channel(target, opts)
        self.stub = pb_grpc.LLMServiceStub(self._channel)

    async def __aenter__(self) -> AsyncLLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def complete(
        self,
        model: str,
        messages: Sequence[pb.Message],
        *,
        system: str = "",
        tools: Sequence[pb.Tool] = (),
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_mode: bool = False,
        max_retries: int | None = None,
        metadata: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> Completion:
        """One complete answer; timeout sets the gRPC deadline."""
        req = pb.CompleteRequest(
            **_request_fields(model, messages, system, tools, max_tokens, temperature, json_mode, max_retries, metadata)
        )
        try:
            return Completion.from_proto(await self.stub.Complete(req, timeout=timeout))
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None

    async def stream(
        self,
        model: str,
        messages: Sequence[pb.Message],
        *,
        system: str = "",
        tools: Sequence[pb.Tool] = (),
        max_tokens: int | None = None,
        temperature: float | None = None,
        json_mode: bool = False,
        max_retries: int | None = None,
        metadata: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> AsyncIterator[StreamEvent]:
        """Streamed events; each carries the accumulated text. Raises LLMServiceError on failure."""
        req = pb.StreamRequest(
            **_request_fields(model, messages, system, tools, max_tokens, temperature, json_mode, max_retries, metadata)
        )
        acc = _Accumulator()
        call = self.stub.Stream(req, timeout=timeout)
        try:
            async for r in call:
                if r.WhichOneof("event") == "error":
                    continue
                yield acc.wrap(r)
        except grpc.aio.AioRpcError as err:
            raise error_from_rpc(err) from None
        finally:
            call.cancel()
