"""The LLMService gRPC servicer: protobuf in and out, the provider core in between.

It knows nothing about LiteLLM. Each RPC resolves the route, converts and validates
the request, calls the core, and maps any failure through `status` in one place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service import convert
from llm_service.config import Config, Route
from llm_service.core import errors, types
from llm_service.core.provider import Provider
from llm_service.core.retry import Deadline
from llm_service.status import MappedStatus, to_status

log = logging.getLogger("llm_service.rpc")
ROUTE_NAME_SHOWN_MAX_CHARS = 64


class _RpcRecord:
    """What the one log line of an RPC says."""

    def __init__(self, rpc: str, request: Any) -> None:
        self.started = time.monotonic()
        self.fields: dict[str, Any] = {"rpc": rpc, "code": "OK", "route": ""}
        metadata = getattr(request, "metadata", None)
        if metadata:
            self.fields["caller"] = dict(list(metadata.items())[:16])

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

    def failed(self, mapped: MappedStatus, err: errors.LLMError) -> None:
        self.fields.update(code=mapped.code.name, reason=mapped.reason)
        if err.attempts:
            self.fields["attempts"] = err.attempts

    def emit(self) -> None:
        self.fields["latency_ms"] = round((time.monotonic() - self.started) * 1000, 1)
        log.info("rpc", extra=self.fields)


class LLMServicer(pb_grpc.LLMServiceServicer):
    """Serves llm.v1.LLMService."""

    def __init__(self, config: Config, provider: Provider) -> None:
        self.config = config
        self.provider = provider

    def _route(self, name: str) -> Route:
        if not name:
            raise errors.InvalidRequest("model", "is required: name a route from ListModels")
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

    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> pb.CompleteResponse:
        """Answer in one response."""
        rec = _RpcRecord("Complete", request)
        failure: MappedStatus | None = None
        try:
            route = self._route(request.model)
            rec.fields["route"] = route.name
            call = convert.call_from_proto(request, self.config.server.max_metadata_entries)
            completion = await self.provider.complete(route, call, Deadline(context.time_remaining()))
            rec.finished(completion.finish)
            return convert.completion_to_proto(completion)
        except Exception as exc:
            failure, err = self._map(exc, rec.fields["route"])
            rec.failed(failure, err)
        except BaseException:
            rec.fields["code"] = "CANCELLED"
            raise
        finally:
            rec.emit()
        assert failure is not None
        await context.abort(failure.code, failure.message, failure.trailing_metadata)
        raise AssertionError("unreachable")  # pragma: no cover

    async def Stream(self, request: pb.StreamRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        """Answer as a stream of events."""
        rec = _RpcRecord("Stream", request)
        failure: MappedStatus | None = None
        try:
            route = self._route(request.model)
            rec.fields["route"] = route.name
            call = convert.call_from_proto(request, self.config.server.max_metadata_entries)
            events = 0
            async for event in self.provider.stream(route, call, Deadline(context.time_remaining())):
                events += 1
                if isinstance(event, types.Finish):
                    rec.finished(event)
                yield convert.event_to_proto(event)
            rec.fields["events"] = events
        except Exception as exc:
            failure, err = self._map(exc, rec.fields["route"])
            rec.failed(failure, err)
        except BaseException:
            rec.fields["code"] = "CANCELLED"
            raise
        finally:
            rec.emit()
        if failure is not None:
            yield pb.StreamResponse(error=pb.StreamError(code=failure.code.name, reason=failure.reason, message=failure.message))
            await context.abort(failure.code, failure.message, failure.trailing_metadata)

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        """The configured routes."""
        models = [
            pb.Model(name=r.name, provider=r.provider, provider_model=r.model, ready=r.ready, fallbacks=list(r.fallbacks))
            for r in sorted(self.config.routes.values(), key=lambda r: r.name)
        ]
        return pb.ListModelsResponse(models=models)

    async def CountTokens(self, request: pb.CountTokensRequest, context: grpc.aio.ServicerContext) -> pb.CountTokensResponse:
        """The input-token estimate for a request on a route."""
        rec = _RpcRecord("CountTokens", request)
        failure: MappedStatus | None = None
        try:
            route = self._route(request.model)
            rec.fields["route"] = route.name
            count, method = await self.provider.count_tokens(route, convert.count_call_from_proto(request))
            rec.fields["input_tokens"] = count
            kind = pb.TOKEN_COUNT_METHOD_LITELLM if method == "litellm" else pb.TOKEN_COUNT_METHOD_ESTIMATE
            return pb.CountTokensResponse(input_tokens=count, method=kind)
        except Exception as exc:
            failure, err = self._map(exc, rec.fields["route"])
            rec.failed(failure, err)
        finally:
            rec.emit()
        assert failure is not None
        await context.abort(failure.code, failure.message, failure.trailing_metadata)
        raise AssertionError("unreachable")  # pragma: no cover
