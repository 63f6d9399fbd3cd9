"""What runs around every RPC, in order: metrics, authentication, admission (load shedding).

Each is a `Guard` with a `start` (which may reject the call by aborting it) and an
`end` that learns the final gRPC code; one wrapper applies the guards to every kind
of handler, whether it yields its messages or writes them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from llm_service.core import errors
from llm_service.memory import IdleTrimmer
from llm_service.metrics import Metrics
from llm_service.status import MappedStatus, caller_ended_code, to_status

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


class Guard:
    """Hooks around one RPC. start() returns a token handed to end(), or aborts the call."""

    def applies(self, service: str) -> bool:
        return True

    async def start(self, service: str, method: str, kind: str, context: grpc.aio.ServicerContext) -> Any:
        return None

    def sent(self, token: Any) -> None:
        """One message of a server stream was sent."""
        return None

    def end(self, token: Any, code: str) -> None:
        return None


Started = list[tuple[Guard, Any]]

# Requests larger than this are parsed in a worker thread, not on the event loop, so one large
# request cannot hold up every other call's chunks while it is decoded.
PARSE_OFF_LOOP_BYTES = 256 * 1024
# The wire size of the request the RPC serves when it was large enough to be parsed off the loop,
# else 0: how the servicer knows to keep the rest of its work off the loop too, without measuring
# the message again (upb's ByteSize encodes it anew: 8-50 ms for 15 MiB, on the loop).
LARGE_REQUEST_BYTES: ContextVar[int] = ContextVar("large_request_bytes", default=0)


class _Unparsed:
    """A request's bytes not decoded yet: too large for the loop, or not decodable at all."""

    __slots__ = ("data", "error")

    def __init__(self, data: bytes, error: bool = False) -> None:
        self.data = data
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that never raises into grpc (which would answer UNKNOWN naming
    protobuf's DecodeError) and leaves large requests for a thread."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        if len(data) > PARSE_OFF_LOOP_BYTES:
            return _Unparsed(data)
        try:
            return deserializer(data)
        except Exception:
            return _Unparsed(data, error=True)

    return parse


class RequestBudget:
    """The bytes of large requests (those parsed off the loop) a process holds at once.

    A request's decoded form, its provider JSON and LiteLLM's copies take several times its
    wire size; without a bound, a few concurrent 15 MiB requests took over a gigabyte. Beyond
    the budget a large request is refused at once with RESOURCE_EXHAUSTED and RetryInfo.
    """

    def __init__(self, limit_bytes: int, retry_after_s: float) -> None:
        self.limit_bytes = limit_bytes
        self.retry_after_s = retry_after_s
        self.held = 0

    def refusal(self) -> MappedStatus:
        mib = self.limit_bytes / (1024 * 1024)
        err = errors.Overloaded(
            f"the server is holding its budget of {mib:g} MiB of large requests in flight "
            "(limits.max_inflight_request_bytes); retry shortly or send a smaller request",
            retry_after_s=self.retry_after_s,
        )
        return to_status(err)


async def _parsed(
    request: Any, deserializer: Callable[[bytes], Any], context: grpc.aio.ServicerContext, budget: RequestBudget | None
) -> tuple[Any, int]:
    """The request message and the budget bytes it holds (to give back when the call ends): decoded
    in a thread when it was left unparsed; a plain INVALID_ARGUMENT when its bytes are not the
    message the method takes; RESOURCE_EXHAUSTED when the process holds too many large requests."""
    if not isinstance(request, _Unparsed):
        return request, 0
    if not request.error:
        size = len(request.data)
        if budget is not None:
            if budget.held and budget.held + size > budget.limit_bytes:  # one alone is always let through
                await abort(context, budget.refusal())
            budget.held += size
        try:
            message = await asyncio.to_thread(deserializer, request.data)
            LARGE_REQUEST_BYTES.set(size)  # in the RPC's own task: its handler sees it
            return message, size if budget is not None else 0
        except Exception:
            if budget is not None:
                budget.held -= size
    err = errors.InvalidRequest("request", "the request bytes are not a valid message of this method's request type")
    await abort(context, to_status(err))
    raise AssertionError("unreachable")  # pragma: no cover


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs the guards around every RPC of the services each applies to, in the order given.

    One wrapper for all guards: a streamed message passes one extra layer, not one per guard.
    A guard that rejects a call in start() ends the guards started before it with the call's code.
    """

    def __init__(self, *guards: Guard, budget: RequestBudget | None = None) -> None:
        self.guards = guards
        self.budget = budget

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = str(handler_call_details.method).lstrip("/").partition("/")
        guards = tuple(g for g in self.guards if g.applies(service))
        if not guards:
            return handler
        serde = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
        unary_request = {**serde, "request_deserializer": _lenient(handler.request_deserializer)}
        parse = handler.request_deserializer
        if handler.unary_unary is not None:
            wrapped = self._coroutine(guards, handler.unary_unary, service, method, "unary", parse)
            return grpc.unary_unary_rpc_method_handler(wrapped, **unary_request)
        if handler.unary_stream is not None:
            wrapped = self._streaming(guards, handler.unary_stream, service, method, "server_stream", parse)
            return grpc.unary_stream_rpc_method_handler(wrapped, **unary_request)
        if handler.stream_stream is not None:  # reflection
            wrapped = self._streaming(guards, handler.stream_stream, service, method, "bidi_stream")
            return grpc.stream_stream_rpc_method_handler(wrapped, **serde)
        if handler.stream_unary is not None:
            wrapped = self._coroutine(guards, handler.stream_unary, service, method, "client_stream")
            return grpc.stream_unary_rpc_method_handler(wrapped, **serde)
        return handler

    def _streaming(
        self, guards: tuple[Guard, ...], behavior: Behavior, service: str, method: str, kind: str, parse: Any = None
    ) -> Behavior:
        # An async generator yields its messages; a coroutine writes them with context.write().
        if inspect.isasyncgenfunction(behavior):
            return self._generator(guards, behavior, service, method, kind, parse)
        return self._coroutine(guards, behavior, service, method, kind, parse)

    @staticmethod
    async def _start(
        guards: tuple[Guard, ...], service: str, method: str, kind: str, context: grpc.aio.ServicerContext
    ) -> Started:
        started: Started = []
        try:
            for guard in guards:
                started.append((guard, await guard.start(service, method, kind, context)))
        except BaseException:
            _end(started, context, "UNKNOWN")
            raise
        return started

    def _coroutine(
        self, guards: tuple[Guard, ...], behavior: Behavior, service: str, method: str, kind: str, parse: Any = None
    ) -> Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = await self._start(guards, service, method, kind, context)
            ended = "UNKNOWN"
            held = 0
            try:
                if parse is not None:
                    request, held = await _parsed(request, parse, context, self.budget)
                response = await behavior(request, context)
                ended = "OK"
                return response
            except (asyncio.CancelledError, GeneratorExit):
                ended = caller_ended_code(context)
                raise
            finally:
                if held and self.budget is not None:
                    self.budget.held -= held
                _end(started, context, ended)

        return wrapped

    def _generator(
        self, guards: tuple[Guard, ...], behavior: Behavior, service: str, method: str, kind: str, parse: Any = None
    ) -> Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = await self._start(guards, service, method, kind, context)
            ended = "UNKNOWN"
            held = 0
            try:
                if parse is not None:
                    request, held = await _parsed(request, parse, context, self.budget)
                async for message in behavior(request, context):
                    for guard, token in started:
                        guard.sent(token)
                    yield message
                ended = "OK"
            except (asyncio.CancelledError, GeneratorExit):
                ended = caller_ended_code(context)
                raise
            finally:
                if held and self.budget is not None:
                    self.budget.held -= held
                _end(started, context, ended)

        return wrapped


def _end(started: Started, context: grpc.aio.ServicerContext, ended: str) -> None:
    """End the started guards, innermost first, with the call's final gRPC code name.

    `ended` is what the wrapper saw: OK, the caller's end (CANCELLED or DEADLINE_EXCEEDED), or
    UNKNOWN for an exception; a status the handler set with abort() wins over it.
    """
    code = ended if ended in ("CANCELLED", "DEADLINE_EXCEEDED") else _code_name(context.code(), ended)
    for guard, token in reversed(started):
        guard.end(token, code)


def _code_name(code: Any, default: str) -> str:
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), default)
    return default


async def abort(context: grpc.aio.ServicerContext, status: MappedStatus) -> None:
    """End the call with a mapped status (raises)."""
    await context.abort(status.code, status.message, status.trailing_metadata)


# --- the guards ------------------------------------------------------------------------------------


class MetricsGuard(Guard):
    """grpc_server_started/handled/handling_seconds, under the usual names and labels."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    async def start(self, service: str, method: str, kind: str, context: grpc.aio.ServicerContext) -> Any:
        self.m.grpc_started.labels(kind, service, method).inc()
        # The per-message counter is looked up once per call, not once per message.
        return (kind, service, method, time.perf_counter(), self.m.grpc_sent.labels(kind, service, method))

    def sent(self, token: Any) -> None:
        token[4].inc()

    def end(self, token: Any, code: str) -> None:
        kind, service, method, started, _ = token
        self.m.grpc_handled.labels(kind, service, method, code).inc()
        self.m.grpc_seconds.labels(kind, service, method).observe(time.perf_counter() - started)


class AdmissionGuard(Guard):
    """Load shedding: beyond max_concurrent RPCs of the service, a call is rejected at once.

    Queuing would only turn overload into timeouts; an immediate RESOURCE_EXHAUSTED with
    RetryInfo lets the caller (or its load balancer) go elsewhere. Health is not limited.
    """

    def __init__(self, service: str, max_concurrent: int, retry_after_s: float, metrics: Metrics) -> None:
        self.service = service
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.active = 0
        self.draining = False
        self.trimmer = IdleTrimmer()  # gives memory back once the calls have stopped
        self._shed = shed_status(max_concurrent, retry_after_s)  # the same for every shed call: built once

    def applies(self, service: str) -> bool:
        return service == self.service

    async def start(self, service: str, method: str, kind: str, context: grpc.aio.ServicerContext) -> Any:
        if self.draining:
            # UNAVAILABLE: a client's channel retries it, on another replica.
            await abort(context, to_status(errors.ShuttingDown("the server is shutting down; retry on another replica")))
        if self.active >= self.max_concurrent:
            self.metrics.shed.labels(method).inc()
            await abort(context, self._shed)
        self.active += 1
        self.trimmer.begin()
        return None

    def end(self, token: Any, code: str) -> None:
        self.active -= 1
        self.trimmer.end()


def shed_status(limit: int, retry_after_s: float) -> MappedStatus:
    """RESOURCE_EXHAUSTED naming the limit, with RetryInfo and gRFC A6 pushback."""
    err = errors.Overloaded(
        f"the server is at its limit of {limit} concurrent calls (limits.max_concurrent_rpcs); retry shortly",
        retry_after_s=retry_after_s,
    )
    return to_status(err)
