"""OpenTelemetry tracing: a server span per RPC, and under it a GenAI client span per upstream attempt.

Configured by the standard OTEL_* environment variables (`TracingSettings.from_environ`) and off
unless they name an exporter or an OTLP endpoint. Off, nothing here is imported beyond this
module: no SDK object exists, the servicer skips its one check, and the engine's hooks are the
metrics' alone.

On, each RPC gets a SERVER span with the gRPC semantic conventions' attributes, continuing the
caller's trace from its `traceparent`/`tracestate`/`baggage` metadata (W3C Trace Context and
Baggage) or starting a new one. Each upstream attempt is a CLIENT span under it, named and
attributed per the GenAI semantic conventions (`chat {model}`, `gen_ai.*`), with the route, the
deployment and the HTTP status. Retry waits, fallbacks and breaker refusals are events on the
server span; the first streamed chunk is an event on its attempt, its delay an attribute. A span
ends however its call or attempt ends, its status set. Prompts and answers are recorded only on
routes with `trace_content`; keys and tokens never (no header or metadata value is recorded).
Spans leave through a BatchSpanProcessor to OTLP over gRPC or HTTP, flushed when the server
drains. The exporter reads its own remaining OTEL_EXPORTER_OTLP_* settings (headers,
certificates, timeout, compression) and the processor its OTEL_BSP_* settings, as the SDK does.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import grpc

from llm_service import __version__
from llm_service.core import errors
from llm_service.core.retry import RetryReason
from llm_service.core.settings import Route
from llm_service.core.trace_context import UPSTREAM_TRACE_HEADERS

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from llm_service.core.assembly import StreamAssembler
    from llm_service.core.embedding import EmbedAnswer
    from llm_service.core.observer import AttemptedPlan
    from llm_service.core.plan import Plan

RPC_SERVICE = "llm.v1.LLMService"
REQUEST_PARAMETERS = ("max_tokens", "temperature", "top_p")  # recorded as gen_ai.request.<name>
PROPAGATED_METADATA = frozenset({"traceparent", "tracestate", "baggage"})
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_ENDPOINTS = {"grpc": "http://localhost:4317", "http/protobuf": "http://localhost:4318/v1/traces"}
# The gRPC semantic conventions: a server span's status is an error only for these codes.
SERVER_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
# LiteLLM's provider prefixes that the GenAI conventions name otherwise (the rest keep their own name).
GEN_AI_PROVIDER_NAMES = {
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}


class TracingError(ValueError):
    """An OTEL_* variable holds a value tracing cannot run with; the message names it."""


@dataclass(frozen=True)
class TracingSettings:
    """What the OTEL_* environment asks of tracing."""

    exporter: str  # "otlp" or "console"
    protocol: str  # OTLP's transport: "grpc" or "http/protobuf"
    endpoint: str
    sampler: str
    sampler_ratio: float
    service_name: str
    batch_delay_ms: int | None = None  # OTEL_BSP_SCHEDULE_DELAY; None: the SDK's (5 s)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TracingSettings | None:
        """The settings, or None (tracing off) when the SDK is disabled, the exporter is "none", or
        neither an exporter nor an OTLP endpoint is named. Raises TracingError on a bad value."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return None
        named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if named == "none" or not (named or endpoint or base):
            return None
        exporter = named or "otlp"
        if exporter not in ("otlp", "console"):
            raise TracingError(f"OTEL_TRACES_EXPORTER: expected otlp, console or none, got {named!r}")
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        ).strip()
        if protocol not in PROTOCOLS:
            raise TracingError(f"OTEL_EXPORTER_OTLP_PROTOCOL: expected grpc or http/protobuf, got {protocol!r}")
        if not endpoint and base:  # the base endpoint: OTLP/HTTP adds the signal's path to it
            endpoint = base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"
        sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
        if sampler not in SAMPLERS:
            raise TracingError(f"OTEL_TRACES_SAMPLER: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
        ratio = 1.0
        if "traceidratio" in sampler and environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip():
            try:
                ratio = float(environ["OTEL_TRACES_SAMPLER_ARG"])
            except ValueError:
                ratio = -1.0
            if not 0.0 <= ratio <= 1.0:
                got = environ["OTEL_TRACES_SAMPLER_ARG"]
                raise TracingError(f"OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, got {got!r}")
        delay = environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip()
        if delay and not delay.isdigit():
            raise TracingError(f"OTEL_BSP_SCHEDULE_DELAY: expected milliseconds, got {delay!r}")
        return cls(
            batch_delay_ms=int(delay) if delay else None,
            exporter=exporter,
            protocol=protocol,
            endpoint=endpoint or DEFAULT_ENDPOINTS[protocol],
            sampler=sampler,
            sampler_ratio=ratio,
            service_name=environ.get("OTEL_SERVICE_NAME", "").strip() or "llm-service",
        )


class AttemptTrace:
    """One upstream attempt's span."""

    __slots__ = ("forwards", "span", "started_ns")

    def __init__(self, span: Span, started_ns: int, forwards: bool) -> None:
        self.span = span
        self.started_ns = started_ns
        self.forwards = forwards  # it set the trace context its request carries upstream


class RpcTrace:
    """One RPC's server span, and the attempt spans open under it (one at a time for a chat call;
    an Embed call's batches are attempted side by side, each in a task of its own).

    A call the sampler left out has a span that records nothing (it still carries the trace's ids,
    for the log line and for a traceparent forwarded upstream), and no attempt spans unless its
    route forwards the trace context: a call not sampled costs next to nothing."""

    __slots__ = ("context", "open", "recording", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.recording = span.is_recording()  # sampled: its attributes, events and attempts are recorded
        self.context: Context | None = None  # the span's own context, its attempts' parent (made at the first)
        self.open: set[AttemptTrace] = set()

    def ids(self) -> tuple[str, str, bool]:
        """The trace id and span id in hex, and whether the trace is sampled."""
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), ctx.trace_flags.sampled


_CURRENT: ContextVar[RpcTrace | None] = ContextVar("llm_service_rpc_trace", default=None)
_ATTEMPT: ContextVar[AttemptTrace | None] = ContextVar("llm_service_attempt_trace", default=None)  # this task's


class Tracing:
    """The tracer provider and its exporter; the servicer's span frame and the engine's observer."""

    def __init__(self, settings: TracingSettings) -> None:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.settings = settings
        resource = Resource.create(
            {
                "service.name": settings.service_name,
                "service.version": __version__,
                "service.instance.id": str(uuid.uuid4()),  # one per process: each worker exports its own spans
                "process.pid": os.getpid(),
            }
        )
        self.provider: TracerProvider = TracerProvider(resource=resource, sampler=_sampler(settings))
        self.provider.add_span_processor(BatchSpanProcessor(_exporter(settings), schedule_delay_millis=settings.batch_delay_ms))
        self._tracer = self.provider.get_tracer("llm_service", __version__)
        self._extract = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]).extract
        self._inject = TraceContextTextMapPropagator().inject  # upstream gets the trace context, never the baggage
        self._in_context = set_span_in_context
        self._server, self._client = SpanKind.SERVER, SpanKind.CLIENT
        self._error = functools.partial(Status, StatusCode.ERROR)
        self.server_address: tuple[str, int] = ("", 0)

    # --- the servicer's frame --------------------------------------------------------------------

    def rpc_started(self, rpc: str, context: Any) -> RpcTrace:
        """Open the RPC's server span, a child of the caller's context when its metadata carries one."""
        carrier = {k: v for k, v in context.invocation_metadata() or () if k in PROPAGATED_METADATA and isinstance(v, str)}
        # Started without attributes: the samplers OTEL_TRACES_SAMPLER names decide on the trace id
        # and the parent alone, so a call left out builds none.
        parent = self._extract(carrier) if carrier else None
        span = self._tracer.start_span(f"{RPC_SERVICE}/{rpc}", context=parent, kind=self._server)
        trace = RpcTrace(span)
        if trace.recording:
            attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": RPC_SERVICE, "rpc.method": rpc}
            host, port = self.server_address
            if host:
                attributes.update({"server.address": host, "server.port": port})
            attributes.update(_peer(context.peer()))
            span.set_attributes(attributes)
        _CURRENT.set(trace)
        return trace

    def rpc_ended(self, trace: RpcTrace, code: str, route: str, reason: str, caller: str) -> None:
        """End the server span with the RPC's status (an attempt still open ends first, cancelled)."""
        if trace.open:
            for attempt in list(trace.open):  # ended by the call's end before their own (a cancelled batch)
                self._end_attempt(attempt, asyncio.CancelledError(), None)
            trace.open.clear()
        span = trace.span
        if trace.recording:
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
            if route:
                span.set_attribute("llm_service.route", route)
            if caller:
                span.set_attribute("llm_service.caller", caller)
            if code in SERVER_ERROR_CODES:
                span.set_attribute("error.type", code)
                span.set_status(self._error(reason or code))
        span.end()
        if _CURRENT.get() is trace:
            _CURRENT.set(None)

    # --- the engine's observer -------------------------------------------------------------------

    def attempt_started(self, plan: AttemptedPlan, attempt: int) -> None:
        """Open the attempt's span under the RPC's; set the trace context it forwards upstream, if any."""
        trace = _CURRENT.get()
        route = plan.route
        if trace is None or not (trace.recording or route.forward_traceparent):
            return  # not traced, or not sampled and nothing to forward: no attempt span
        req = plan.request
        streamed = getattr(plan, "streamed", None)  # None: a batch of embeddings
        operation = "embeddings" if streamed is None else "chat"
        model = req.model.split("/", 1)[1] if "/" in req.model else req.model
        started_ns = time.time_ns()
        if trace.context is None:
            trace.context = self._in_context(trace.span)
        span = self._tracer.start_span(f"{operation} {model}", context=trace.context, kind=self._client, start_time=started_ns)
        current = AttemptTrace(span, started_ns, route.forward_traceparent)
        trace.open.add(current)
        _ATTEMPT.set(current)
        if span.is_recording():
            kwargs = req.kwargs
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": GEN_AI_PROVIDER_NAMES.get(route.provider, route.provider),
                "gen_ai.request.model": model,
                "llm_service.route": route.name,
                "llm_service.attempt": attempt,
                **_upstream_address(route.api_base),
            }
            if streamed is not None:
                attributes["gen_ai.request.stream"] = streamed
            if transport := getattr(getattr(plan, "prepared", None), "transport", ""):
                attributes["llm_service.transport"] = transport
            if route.deployment:
                attributes["llm_service.deployment"] = route.deployment
            for key in REQUEST_PARAMETERS:
                if isinstance(kwargs.get(key), int | float):
                    attributes[f"gen_ai.request.{key}"] = kwargs[key]
            if route.trace_content and "messages" in kwargs:
                attributes.update(_input_content(kwargs["messages"]))
            span.set_attributes(attributes)
        if route.forward_traceparent:
            headers: dict[str, str] = {}
            self._inject(headers, context=self._in_context(span))
            UPSTREAM_TRACE_HEADERS.set(headers)

    def attempt_answered(self, plan: Plan, asm: StreamAssembler) -> None:
        """Record the answer: the model that gave it, its usage and finish reason (and content, opted in)."""
        current = _ATTEMPT.get()
        span = current.span if current is not None else None
        if span is None or not span.is_recording():
            return
        usage = asm.usage
        attributes: dict[str, Any] = {"http.response.status_code": 200}
        if asm.model:
            attributes["gen_ai.response.model"] = asm.model
        if asm.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (asm.finish_reason,)
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_input_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
            if usage.cache_creation_tokens:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_tokens
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        if asm.cost_usd:
            attributes["llm_service.cost_usd"] = asm.cost_usd
        if plan.route.trace_content:
            attributes["gen_ai.output.messages"] = _output_content(asm)
        span.set_attributes(attributes)

    def embed_answered(self, plan: AttemptedPlan, answer: EmbedAnswer) -> None:
        """Record an embedding answer: the model that gave it, its billed tokens, its vectors' size."""
        current = _ATTEMPT.get()
        if current is None or not current.span.is_recording():
            return
        attributes: dict[str, Any] = {"http.response.status_code": 200, "gen_ai.usage.input_tokens": answer.input_tokens}
        if answer.model:
            attributes["gen_ai.response.model"] = answer.model
        if answer.vectors:
            attributes["gen_ai.embeddings.dimension.count"] = len(answer.vectors[0])
        current.span.set_attributes(attributes)

    def attempt_ended(self, plan: AttemptedPlan, failure: BaseException | None, first_chunk_s: float | None) -> None:
        """End the attempt's span, its status from how it ended."""
        current, trace = _ATTEMPT.get(), _CURRENT.get()
        if current is None or trace is None or current not in trace.open:
            return  # not traced, or ended already with its call
        trace.open.discard(current)
        _ATTEMPT.set(None)
        if current.forwards:
            UPSTREAM_TRACE_HEADERS.set(None)
        self._end_attempt(current, failure, first_chunk_s)

    def waiting(self, route: Route, reason: RetryReason, delay_s: float) -> None:
        """A retry wait: an event on the RPC's span."""
        self._event("retry", {"reason": reason.value, "delay_s": delay_s, "route": route.name})

    def fell_back(self, route: Route, to: Route) -> None:
        """A fallback: an event on the RPC's span."""
        self._event("fallback", {"from_route": route.name, "to_route": to.name})

    def breaker_refused(self, route: Route, retry_after_s: float | None) -> None:
        """An open breaker refused an attempt: an event on the RPC's span."""
        attributes: dict[str, Any] = {"route": route.name}
        if route.deployment:
            attributes["deployment"] = route.deployment
        if retry_after_s is not None:
            attributes["retry_after_s"] = retry_after_s
        self._event("breaker_refused", attributes)

    def _event(self, name: str, attributes: dict[str, Any]) -> None:
        trace = _CURRENT.get()
        if trace is not None and trace.recording:
            trace.span.add_event(name, attributes)

    def _end_attempt(self, attempt: AttemptTrace, failure: BaseException | None, first_chunk_s: float | None) -> None:
        span = attempt.span
        if span.is_recording():
            if first_chunk_s is not None:
                span.set_attribute("gen_ai.response.time_to_first_chunk", first_chunk_s)
                at = attempt.started_ns + int(first_chunk_s * 1e9)
                span.add_event("first_token", {"gen_ai.response.time_to_first_chunk": first_chunk_s}, timestamp=at)
            if isinstance(failure, errors.LLMError):
                span.set_attribute("error.type", failure.reason)
                if failure.upstream_status is not None:
                    span.set_attribute("http.response.status_code", failure.upstream_status)
                span.set_status(self._error(failure.reason))
            elif failure is not None:  # the caller cancelled, or its call ended
                span.set_attribute("error.type", "cancelled")
                span.set_status(self._error("the call ended before the attempt did"))
        span.end()

    # --- life ------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Export what is left and stop the exporter (blocking: run it off the event loop)."""
        self.provider.shutdown()


def start(settings: TracingSettings | None) -> Tracing | None:
    """Tracing as the settings ask, or None when they are None (off: the SDK is not imported)."""
    return None if settings is None else Tracing(settings)


def _sampler(settings: TracingSettings) -> Any:
    from opentelemetry.sdk.trace import sampling

    name = settings.sampler
    root = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), sampling.TraceIdRatioBased(settings.sampler_ratio)
    )
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _exporter(settings: TracingSettings) -> Any:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=settings.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=settings.endpoint)


def _peer(peer: str) -> dict[str, Any]:
    """network.peer.* from grpc's peer string: ipv4:1.2.3.4:5, ipv6:%5B::1%5D:5 or unix:/path."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return {"network.transport": "unix"} if kind == "unix" else {}
    host, _, port = unquote(address).rpartition(":")
    out: dict[str, Any] = {"network.transport": "tcp", "network.type": kind, "network.peer.address": host.strip("[]")}
    if port.isdigit():
        out["network.peer.port"] = int(port)
    return out


@functools.lru_cache(maxsize=256)
def _upstream_address(api_base: str) -> dict[str, Any]:
    """server.address/server.port of an upstream endpoint (none when the route leaves it to LiteLLM)."""
    if not api_base:
        return {}
    parts = urlsplit(api_base)
    if not parts.hostname:
        return {}
    return {"server.address": parts.hostname, "server.port": parts.port or (443 if parts.scheme == "https" else 80)}


def _input_content(messages: list[dict[str, Any]]) -> dict[str, str]:
    """The opt-in gen_ai.system_instructions and gen_ai.input.messages, as the GenAI conventions shape them."""
    system: list[dict[str, Any]] = []
    chat: list[dict[str, Any]] = []
    for m in messages:
        parts = _parts(m.get("content"))
        if m.get("role") == "system":
            system.extend(parts)
            continue
        if m.get("role") == "tool":
            parts = [{"type": "tool_call_response", "id": m.get("tool_call_id", ""), "response": m.get("content")}]
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            parts.append(
                {"type": "tool_call", "id": call.get("id", ""), "name": fn.get("name", ""), "arguments": fn.get("arguments")}
            )
        chat.append({"role": m.get("role", ""), "parts": parts})
    out = {"gen_ai.input.messages": json.dumps(chat, ensure_ascii=False, default=str)}
    if system:
        out["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False, default=str)
    return out


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content or ():
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "text", "content": part.get("text", "")})
        elif isinstance(part, dict):
            parts.append({"type": str(part.get("type", ""))})  # images and documents: their kind, not their bytes
    return parts


def _output_content(asm: StreamAssembler) -> str:
    parts: list[dict[str, Any]] = [{"type": "text", "content": asm.text}] if asm.text else []
    try:
        calls = asm.tool_calls()
    except errors.LLMError:  # arguments past repair: the call fails with its own error
        calls = []
    parts.extend({"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments_json} for c in calls)
    message = {"role": "assistant", "parts": parts, "finish_reason": asm.final_finish_reason()}
    return json.dumps([message], ensure_ascii=False)
