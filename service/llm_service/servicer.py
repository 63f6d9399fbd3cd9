"""The LLMService gRPC servicer: protobuf in and out, the provider core in between.

It knows nothing about LiteLLM. Each RPC resolves the route, converts and validates
the request, calls the core, and maps any failure through `status` in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service import convert, logs
from llm_service.auth import CALLER
from llm_service.config import Config, LimitsConfig, Route
from llm_service.core import errors, types
from llm_service.core.embedding import EmbedCall, Embedding
from llm_service.core.off_loop import when_large
from llm_service.core.provider import Provider
from llm_service.core.retry import Deadline
from llm_service.interceptors import LARGE_REQUEST_BYTES
from llm_service.metrics import Metrics
from llm_service.quotas.gate import QuotaGate
from llm_service.quotas.tab import Tab
from llm_service.relay import Relay
from llm_service.status import MappedStatus, caller_ended_code, to_status
from llm_service.tracing import Tracing

log = logging.getLogger("llm_service.rpc")
T = TypeVar("T", types.CallRequest, EmbedCall)  # what a request converts to; both say whether it was large
ROUTE_NAME_SHOWN_MAX_CHARS = 64
OFF_LOOP_FLOATS = 64 * 1024  # an Embed answer of more vector components than this is encoded off the loop


class _RpcRecord:
    """What an RPC reports when it ends: its one log line and its metrics."""

    def __init__(self, rpc: str, request: Any, metrics: Metrics) -> None:
        self.started = time.monotonic()
        self.rpc = rpc
        self.metrics = metrics
        self.route: Route | None = None
        self.failure: MappedStatus | None = None
        self.tab: Tab | None = None  # the call's quota account, once admission has looked at it
        self.fields: dict[str, Any] = {"rpc": rpc, "code": "OK", "route": ""}
        self.exemplar: dict[str, str] | None = None  # the trace a latency sample links to, when it is sampled
        caller = CALLER.get()
        if caller is not None:
            self.fields["caller_name"] = caller.name
        metadata = getattr(request, "metadata", None)
        if metadata:
            self.fields["caller"] = dict(list(metadata.items())[:16])
        metrics.child(metrics.inflight, rpc).inc()

    def routed(self, route: Route) -> None:
        """The call names a configured route: from here on, route-labelled metrics may be touched."""
        self.route = route
        self.fields["route"] = route.name

    def traced(self, trace_id: str, span_id: str, sampled: bool) -> None:
        """The RPC has a span: its log line names it, and its latency samples link to a sampled trace."""
        self.fields.update(trace_id=trace_id, span_id=span_id)
        logs.TRACE_IDS.set({"trace_id": trace_id, "span_id": span_id})
        self.exemplar = {"trace_id": trace_id} if sampled else None

    def finished(self, finish: types.Finish | None) -> None:
        if finish is not None:
            u = finish.usage
            self.fields.update(
                attempts=finish.gateway.attempts,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cached_input_tokens=u.cached_input_tokens,
                finish_reason=finish.finish_reason,
                cost_usd=finish.cost_usd,
                upstream_ms=round(finish.gateway.upstream_s * 1000, 1),
            )
            if self.route is not None:
                self.metrics.answered(self.route, finish)

    def embedded(self, embedding: Embedding, inputs: int) -> None:
        """An Embed call answered: its log fields and its attempts."""
        self.fields.update(
            attempts=embedding.gateway.attempts,
            inputs=inputs,
            input_tokens=embedding.usage.input_tokens,
            cost_usd=embedding.cost_usd,
            upstream_ms=round(embedding.gateway.upstream_s * 1000, 1),
        )
        if self.route is not None:
            self.metrics.embedded(self.route, embedding.gateway.attempts)

    def failed(self, mapped: MappedStatus, err: errors.LLMError) -> None:
        self.fields.update(code=mapped.code.name, reason=mapped.reason)
        if err.attempts:
            self.fields["attempts"] = err.attempts
        self.metrics.failed(self.route, mapped.reason, err.attempts)

    def emit(self) -> None:
        seconds = time.monotonic() - self.started
        self.metrics.child(self.metrics.inflight, self.rpc).dec()
        self.metrics.finished(self.rpc, self.route, self.fields["code"], seconds, self.exemplar)
        if self.tab is not None:
            self.metrics.caller_finished(self.tab.label, self.fields["code"])
        self.fields["latency_ms"] = round(seconds * 1000, 1)
        log.info("rpc", extra=self.fields)


def _grace_ran_out() -> errors.LLMError:
    return errors.ShuttingDown("the server is shutting down and its drain grace ran out; retry on another replica")


class _OpenStream:
    __slots__ = ("awaiting_provider",)

    def __init__(self) -> None:
        self.awaiting_provider = False


class LLMServicer(pb_grpc.LLMServiceServicer):
    """Serves llm.v1.LLMService."""

    def __init__(self, config: Config, provider: Provider, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.config = config
        self.provider = provider
        self.metrics = metrics
        self.tracing = tracing
        self._streams: dict[asyncio.Task[Any], _OpenStream] = {}  # the open Stream calls
        self._ending_streams = False
        self.quotas = QuotaGate(config.quotas, metrics)

    def end_streams(self) -> int:
        """At the end of a drain's grace: end every open stream with an error event and UNAVAILABLE
        (SERVER_SHUTTING_DOWN) rather than letting grpc cut it with a bare status. Returns how many.

        A stream waiting on the provider is cancelled there; one that is writing an event is not
        (a cancel inside grpc's write would close the stream without its error event): it sees
        the flag as soon as the write returns."""
        self._ending_streams = True
        for task, stream in self._streams.items():
            if stream.awaiting_provider:
                task.cancel()
        return len(self._streams)

    async def _call(self, request: pb.CompleteRequest | pb.StreamRequest) -> types.CallRequest:
        """The request as the core takes it (a large one planned off the loop by the core too)."""
        return await self._converted(convert.call_from_proto, request)

    async def _converted(self, to_core: Callable[[Any, int, LimitsConfig], T], request: Any) -> T:
        """The request converted by to_core, marked large when it was (decoded off the loop by the
        interceptor): a large one is converted in a worker thread, and the core keeps the rest of
        its work off the loop too."""
        large = bool(LARGE_REQUEST_BYTES.get())
        call = await when_large(large, to_core, request, self.config.server.max_metadata_entries, self.config.limits)
        return dataclasses.replace(call, large=True) if large else call

    def _routed(self, rec: _RpcRecord, name: str, kind: str = "chat") -> Route:
        """The route the call names, checked for this caller and for the RPC's kind of model; from
        here on the record names it."""
        route = self._route(name)
        rec.routed(route)
        route_kind = self.provider.kind(route)
        if route_kind != kind:
            what, rpcs = ("an embedding", "Embed") if route_kind == "embedding" else ("a chat", "Complete, Stream or CountTokens")
            raise errors.InvalidRequest("model", f"route '{route.name}' is {what} route: call {rpcs} on it")
        return route

    async def _admit(
        self, rec: _RpcRecord, route: Route, call: types.CallRequest | EmbedCall, context: grpc.aio.ServicerContext
    ) -> None:
        """Admission by the caller's quotas, before anything goes upstream (raises QuotaExceeded);
        what it reserves is settled by `_settle` when the call ends."""
        remaining = context.time_remaining()
        lease_s = route.timeout_s if remaining is None else min(remaining, route.timeout_s)
        rec.tab = self.quotas.open_tab(CALLER.get(), route, call, rec.rpc == "Stream", lease_s)
        await self.quotas.admit(rec.tab)

    async def _settle(self, rec: _RpcRecord) -> None:
        """The call's reservation replaced by what the upstream billed (answered, failed or cancelled)."""
        await self.quotas.settle(rec.tab)

    def _route(self, name: str) -> Route:
        if not name:
            raise errors.InvalidRequest("model", "is required: name a route from ListModels")
        caller = CALLER.get()
        if caller is not None and not caller.may_use(name):
            # Checked before existence: a restricted caller learns nothing about other routes.
            raise errors.RouteNotPermitted("this caller may not use that route; ListModels lists the ones it may")
        route = self.config.route(name)
        if route is None:
            shown = name if len(name) <= ROUTE_NAME_SHOWN_MAX_CHARS else name[:ROUTE_NAME_SHOWN_MAX_CHARS] + "…"
            raise errors.RouteNotFound(f"no route named '{shown}'; ListModels lists the routes")
        return route

    @staticmethod
    def _map(err: BaseException, route: str) -> tuple[MappedStatus, errors.LLMError]:
        if not isinstance(err, errors.LLMError):
            log.error("unexpected failure", exc_info=err, extra={"route": route})
            err = errors.LLMError("internal error")
        return to_status(err, route), err

    @contextlib.contextmanager
    def _rpc(self, rpc: str, request: Any, context: grpc.aio.ServicerContext) -> Iterator[_RpcRecord]:
        """Every RPC's frame: its record, its failure mapped once (the body's exception is kept on
        the record as `failure` and not raised: the RPC ends with it), its one log line and metrics."""
        rec = _RpcRecord(rpc, request, self.metrics)
        tracing = self.tracing
        trace = tracing.rpc_started(rpc, context) if tracing is not None else None
        if trace is not None:
            rec.traced(*trace.ids())
        try:
            yield rec
        except Exception as exc:
            rec.failure, err = self._map(exc, rec.fields["route"])
            rec.failed(rec.failure, err)
        except BaseException:  # cancelled by the caller, or its deadline
            rec.fields["code"] = caller_ended_code(context)
            raise
        finally:
            if tracing is not None and trace is not None:
                f = rec.fields
                tracing.rpc_ended(trace, f["code"], f["route"], f.get("reason", ""), f.get("caller_name", ""))
            rec.emit()

    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> pb.CompleteResponse:
        """Answer in one response."""
        with self._rpc("Complete", request, context) as rec:
            route = self._routed(rec, request.model)
            call = await self._call(request)
            await self._admit(rec, route, call, context)
            try:
                completion = await self.provider.complete(route, call, Deadline(context.time_remaining()))
            finally:
                await self._settle(rec)
            rec.finished(completion.finish)
            return convert.completion_to_proto(completion)
        return await _abort(context, rec)

    async def Stream(self, request: pb.StreamRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        """Answer as a stream of events."""
        task = asyncio.current_task()
        open_stream = _OpenStream()
        if task is not None:
            self._streams[task] = open_stream
        try:
            with self._rpc("Stream", request, context) as rec:
                route = self._routed(rec, request.model)
                call = await self._call(request)
                await self._admit(rec, route, call, context)
                stream = self.provider.stream(route, call, Deadline(context.time_remaining()))
                upstream = Relay(stream, coalesce=self.config.server.stream_coalescing)
                events = 0
                try:
                    while True:
                        open_stream.awaiting_provider = True
                        try:
                            batch = await upstream.next_batch()
                        except StopAsyncIteration:
                            break
                        except asyncio.CancelledError:
                            if not (self._ending_streams and task is not None and task.uncancel() == 0):
                                raise
                            raise _grace_ran_out() from None  # end_streams cancelled the wait on the provider
                        finally:
                            open_stream.awaiting_provider = False
                        for event in batch:
                            if events == 0 and not isinstance(event, types.Finish):
                                self.metrics.first_token(route, time.monotonic() - rec.started, rec.exemplar)
                            events += 1
                            self.metrics.streamed(route, event)
                            if isinstance(event, types.Finish):
                                rec.finished(event)
                            yield convert.event_to_proto(event)
                            if self._ending_streams:  # the drain's grace ran out while this stream was writing
                                raise _grace_ran_out()
                finally:
                    await upstream.aclose()
                rec.fields["events"] = events
        finally:
            if task is not None:
                self._streams.pop(task, None)
            await self._settle(rec)
        if rec.failure is not None:
            if rec.route is not None:
                self.metrics.stream_events.labels(rec.route.name, "error").inc()
            failure = rec.failure
            yield pb.StreamResponse(error=pb.StreamError(code=failure.code.name, reason=failure.reason, message=failure.message))
            await _abort(context, rec)

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        """The configured routes."""
        caller = CALLER.get()
        models = [
            pb.Model(
                name=r.name,
                provider=r.provider,
                provider_model=r.model,
                ready=r.ready,
                fallbacks=list(r.fallbacks),
                kind=_MODEL_KINDS[self.provider.kind(r)],
            )
            for r in sorted(self.config.routes.values(), key=lambda r: r.name)
            if caller is None or caller.may_use(r.name)
        ]
        return pb.ListModelsResponse(models=models)

    async def CountTokens(self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext) -> pb.CountTokensResponse:
        """The input-token estimate for a request on a route."""
        with self._rpc("CountTokens", request, context) as rec:
            route = self._routed(rec, request.model)
            call = await self._converted(_count_call, request)
            count, method = await self.provider.count_tokens(route, call)
            rec.fields["input_tokens"] = count
            kind = pb.TOKEN_COUNT_METHOD_LITELLM if method == "litellm" else pb.TOKEN_COUNT_METHOD_ESTIMATE
            return pb.CountTokensResponse(input_tokens=count, method=kind)
        return await _abort(context, rec)

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        """The vectors of a batch of inputs, in order, on an embedding route."""
        with self._rpc("Embed", request, context) as rec:
            route = self._routed(rec, request.model, kind="embedding")
            call = await self._converted(convert.embed_call_from_proto, request)
            await self._admit(rec, route, call, context)
            try:
                embedding = await self.provider.embed(route, call, Deadline(context.time_remaining()))
            finally:
                await self._settle(rec)
            rec.embedded(embedding, len(call.inputs))
            if sum(len(v) for v in embedding.vectors) > OFF_LOOP_FLOATS:
                return await asyncio.to_thread(convert.embedding_to_proto, embedding)
            return convert.embedding_to_proto(embedding)
        return await _abort(context, rec)


_MODEL_KINDS = {"chat": pb.MODEL_KIND_CHAT, "embedding": pb.MODEL_KIND_EMBEDDING}


def _count_call(request: pb.CountTokensRequest, max_metadata_entries: int, limits: LimitsConfig) -> types.CallRequest:
    """CountTokens' request converted as `_converted` converts the others (it carries no metadata)."""
    return convert.count_call_from_proto(request, limits)


async def _abort(context: grpc.aio.ServicerContext, rec: _RpcRecord) -> Any:
    """End the RPC with the failure its frame mapped."""
    assert rec.failure is not None
    await context.abort(rec.failure.code, rec.failure.message, rec.failure.trailing_metadata)
    raise AssertionError("unreachable")  # pragma: no cover
