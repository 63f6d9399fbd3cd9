"""Prometheus metrics: requests, streams, retries, tokens, cost, errors, and the standard gRPC server series.

Label values are bounded: `route` and `provider` come from the configuration only
(an unknown route is rejected before any route-labelled series is touched), `rpc`
and `grpc_method` from the service definition, `reason` and `kind` from fixed sets,
`caller` from the callers the configuration names (any other is `_unlisted`).
No user, token or request ids ever become labels.

With PROMETHEUS_MULTIPROC_DIR set (several worker processes), values live in that
folder and /metrics serves the sum over all workers (prometheus_client multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

from llm_service import __version__
from llm_service.config import Route
from llm_service.core import types
from llm_service.core.resilience import BreakerState
from llm_service.core.retry import RetryReason
from llm_service.quotas.tab import TAB

# The `*_created` series (a timestamp per labelled child) are read by no dashboard or alert and
# were a third of the exposed samples.
disable_created_metrics()  # type: ignore[no-untyped-call]

# LLM calls last from tens of milliseconds (a cached token count) to minutes (a long stream).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
ATTEMPT_BUCKETS = (1, 2, 3, 5, 10)
GRPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
AUTH_FAILURE_REASONS = ("UPSTREAM_AUTH_FAILED", "UPSTREAM_PERMISSION_DENIED")
TOKEN_KINDS = ("input", "output", "cached_input", "cache_creation", "reasoning")
EVENT_TYPES = {
    types.TextDelta: "text_delta",
    types.ReasoningDelta: "reasoning_delta",
    types.ToolCall: "tool_call",
    types.TextEnd: "text_end",
    types.Finish: "finish",
}


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The service's metrics, in a registry of their own (several servers may share a process in tests)."""

    def __init__(self, litellm_version: str) -> None:
        # In multiprocess mode values go to files; the registry is only where the objects are made.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llm_requests", "RPCs by outcome.", ["rpc", "route", "provider", "code"], registry=r)
        self.duration = Histogram(
            "llm_request_duration_seconds", "RPC duration.", ["rpc", "route", "provider"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.inflight = Gauge("llm_inflight_requests", "RPCs in progress.", ["rpc"], multiprocess_mode="livesum", registry=r)
        self.ttft = Histogram(
            "llm_time_to_first_token_seconds",
            "Time from a Stream call to its first content event.",
            ["route", "provider"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.stream_events = Counter("llm_stream_events", "Stream events sent, by type.", ["route", "type"], registry=r)
        self.retries = Counter("llm_retries", "Upstream retries, by reason.", ["route", "provider", "reason"], registry=r)
        self.attempts = Histogram(
            "llm_upstream_attempts", "Upstream attempts per call.", ["route"], buckets=ATTEMPT_BUCKETS, registry=r
        )
        self.tokens = Counter("llm_tokens", "Tokens, as the providers reported them.", ["route", "provider", "kind"], registry=r)
        self.cost = Counter("llm_cost_usd", "Cost in USD, where LiteLLM can price the model.", ["route", "provider"], registry=r)
        self.errors = Counter("llm_errors", "Failed calls, by ErrorInfo reason.", ["route", "reason"], registry=r)
        self.fallbacks = Counter("llm_fallbacks", "Calls moved to a fallback route.", ["route", "to"], registry=r)
        self.breaker = Gauge(
            "llm_circuit_breaker_state",
            '0 closed, 1 open, 2 half-open; per deployment on a route with several (deployment "" otherwise).',
            ["route", "deployment"],
            multiprocess_mode="max",
            registry=r,
        )
        self.deployment_up = Gauge(
            "llm_deployment_up",
            "1 while a deployment of a route may be called, 0 while it rests (rate-limited) or is out (key refused).",
            ["route", "deployment"],
            multiprocess_mode="min",
            registry=r,
        )
        self.deployment_out = Counter(
            "llm_deployment_out", "Deployments taken out of use, by why.", ["route", "deployment", "reason"], registry=r
        )
        self.deployment_seconds = Histogram(
            "llm_deployment_upstream_seconds",
            "Upstream attempts on each deployment, and how long each waited on it.",
            ["route", "deployment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shed = Counter("llm_shed_requests", "Calls rejected at once by load shedding.", ["rpc"], registry=r)
        self.grpc_started = Counter(
            "grpc_server_started", "RPCs started.", ["grpc_type", "grpc_service", "grpc_method"], registry=r
        )
        self.grpc_handled = Counter(
            "grpc_server_handled", "RPCs completed.", ["grpc_type", "grpc_service", "grpc_method", "grpc_code"], registry=r
        )
        self.grpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "RPC handling time.",
            ["grpc_type", "grpc_service", "grpc_method"],
            buckets=GRPC_BUCKETS,
            registry=r,
        )
        self.grpc_sent = Counter(
            "grpc_server_msg_sent", "Stream messages sent.", ["grpc_type", "grpc_service", "grpc_method"], registry=r
        )
        build = Gauge(
            "llm_service_build_info", "Build information.", ["version", "litellm_version"], multiprocess_mode="max", registry=r
        )
        build.labels(__version__, litellm_version).set(1)
        # Attribution by caller: `caller` is a name the configuration lists, or _anonymous / _unlisted.
        self.caller_requests = Counter(
            "llm_caller_requests", "Complete, Stream and Embed calls by caller and code.", ["caller", "code"], registry=r
        )
        self.caller_tokens = Counter("llm_caller_tokens", "Tokens billed, by caller.", ["caller", "kind"], registry=r)
        self.caller_cost = Counter("llm_caller_cost_usd", "Cost in USD billed, by caller.", ["caller"], registry=r)
        self.quota_rejections = Counter(
            "llm_quota_rejections", "Calls refused by a quota, by caller and limit.", ["caller", "limit"], registry=r
        )
        self.quota_backend_up = Gauge(
            "llm_quota_backend_up",
            "1 while the shared quota counters (Redis) answer, 0 while they do not.",
            multiprocess_mode="min",
            registry=r,
        )
        self.caller_spent = Gauge(
            "llm_caller_spent_usd",
            "A caller's spend this day or month, as the shared counters last said.",
            ["caller", "period"],
            multiprocess_mode="max",
            registry=r,
        )
        self.caller_budget = Gauge(
            "llm_caller_budget_usd",
            "A caller's budget for the day or month.",
            ["caller", "period"],
            multiprocess_mode="max",
            registry=r,
        )
        self._http: WSGIServer | None = None
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """metric.labels(*labels), made once per metric and label values: labels() checks, converts
        and takes a lock on every call, and a call touches a dozen series that never change."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def prime(self, routes: Iterable[Route]) -> None:
        """Create the series alerts watch at 0, so that their first increase is seen.

        Prometheus cannot see a counter's first increment when the series appears
        already at 1 (rate() and increase() need a previous sample): the first auth
        failure on a route would go unnoticed until the second.
        """
        for route in routes:
            for reason in AUTH_FAILURE_REASONS:
                self.errors.labels(route.name, reason)
            for retry in RetryReason:
                self.retries.labels(route.name, route.provider, retry.value)
            for rpc in ("Complete", "Stream"):
                self.requests.labels(rpc, route.name, route.provider, "OK")
            for deployment in route.deployments or (None,):
                self.breaker.labels(route.name, deployment.name if deployment else "").set(0)
            for deployment in route.deployments:
                self.deployment_up.labels(route.name, deployment.name).set(1)
                for why in ("rate_limit", "key_refused"):
                    self.deployment_out.labels(route.name, deployment.name, why)

    # --- recording -----------------------------------------------------------------------------

    def retried(self, route: Route, reason: RetryReason) -> None:
        """One upstream retry (the provider core's on_retry hook)."""
        self.retries.labels(route.name, route.provider, reason.value).inc()

    def fell_back(self, route: Route, to: Route) -> None:
        """A call moved from route to its fallback."""
        self.fallbacks.labels(route.name, to.name).inc()

    def deployment_changed(self, route: Route, deployment: str, up: bool, reason: str) -> None:
        """A deployment went out of use or came back."""
        self.deployment_up.labels(route.name, deployment).set(1 if up else 0)
        if reason:
            self.deployment_out.labels(route.name, deployment, reason).inc()

    def deployment_attempted(self, route: Route, deployment: str, upstream_s: float) -> None:
        """One upstream attempt on a deployment."""
        self.child(self.deployment_seconds, route.name, deployment).observe(upstream_s)

    def breaker_changed(self, route: Route, state: BreakerState) -> None:
        """A route's circuit breaker changed state."""
        self.breaker.labels(route.name, route.deployment).set(state.value)

    def finished(self, rpc: str, route: Route | None, code: str, seconds: float, exemplar: dict[str, str] | None = None) -> None:
        """An RPC ended with this gRPC code name. route is None when the caller named no known route.
        exemplar: the trace it belongs to (OpenMetrics exposition only; none in multiprocess mode)."""
        if route is None:
            return
        self.child(self.requests, rpc, route.name, route.provider, code).inc()
        self.child(self.duration, rpc, route.name, route.provider).observe(seconds, exemplar)

    def used(self, route: Route, usage: types.Usage, cost_usd: float) -> None:
        """Tokens and cost of one answered upstream attempt (the provider core's on_usage hook)."""
        values = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
            usage.cache_creation_tokens,
            usage.reasoning_tokens,
        )
        for kind, value in zip(TOKEN_KINDS, values, strict=True):
            if value:
                self.child(self.tokens, route.name, route.provider, kind).inc(value)
        if cost_usd > 0:
            self.child(self.cost, route.name, route.provider).inc(cost_usd)
        tab = TAB.get()
        if tab is not None:  # the call's own account, and its caller's series
            tab.billed(usage, cost_usd)
            for kind, value in zip(TOKEN_KINDS, values, strict=True):
                if value:
                    self.caller_tokens.labels(tab.label, kind).inc(value)
            if cost_usd > 0:
                self.caller_cost.labels(tab.label).inc(cost_usd)

    def caller_finished(self, caller: str, code: str) -> None:
        """A Complete, Stream or Embed call of this caller (its label) ended with this gRPC code name."""
        self.child(self.caller_requests, caller, code).inc()

    def quota_refused(self, caller: str, limit: str) -> None:
        """A call refused by one of its caller's limits."""
        self.quota_rejections.labels(caller, limit).inc()

    def quota_backend(self, up: bool) -> None:
        """Whether the shared quota counters answer."""
        self.quota_backend_up.set(1 if up else 0)

    def caller_spend(self, caller: str, period: str, spent_usd: float, budget_usd: float) -> None:
        """A caller's spend in a budget's period, and the budget."""
        self.caller_spent.labels(caller, period).set(spent_usd)
        self.caller_budget.labels(caller, period).set(budget_usd)

    def answered(self, route: Route, finish: types.Finish) -> None:
        """Attempts of a successful call."""
        self.child(self.attempts, route.name).observe(finish.gateway.attempts)

    def embedded(self, route: Route, attempts: int) -> None:
        """Attempts of a successful Embed call (its tokens and cost came as each request was billed)."""
        self.attempts.labels(route.name).observe(attempts)

    def failed(self, route: Route | None, reason: str, attempts: int) -> None:
        """A failed call, by ErrorInfo reason."""
        if route is None:
            return
        self.errors.labels(route.name, reason).inc()
        if attempts:
            self.attempts.labels(route.name).observe(attempts)

    def streamed(self, route: Route, event: types.Event) -> None:
        """One stream event sent."""
        self.child(self.stream_events, route.name, EVENT_TYPES[type(event)]).inc()

    def first_token(self, route: Route, seconds: float, exemplar: dict[str, str] | None = None) -> None:
        """Time to the first content event of a stream (exemplar: as for `finished`)."""
        self.child(self.ttft, route.name, route.provider).observe(seconds, exemplar)

    # --- exposition ----------------------------------------------------------------------------

    def exposition_registry(self) -> CollectorRegistry:
        """What /metrics serves: this registry, or the sum over all workers in multiprocess mode."""
        return summed_registry() if _multiprocess() else self.registry

    def serve(self, listen: str) -> int:
        """Serve /metrics over HTTP on host:port (port 0: any); returns the port."""
        self._http = serve_http(listen, self.exposition_registry())
        return int(self._http.server_port)

    def close(self) -> None:
        """Stop serving /metrics."""
        if self._http is not None:
            stop_http(self._http)
            self._http = None


def summed_registry(path: str | None = None) -> CollectorRegistry:
    """A registry reading the sum over every process that writes to the multiprocess folder (default: the env's)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


class CannotListen(OSError):
    """An address cannot be bound: in use (without SO_REUSEPORT), not local, or not permitted."""


def serve_http(listen: str, registry: CollectorRegistry) -> WSGIServer:
    """Serve registry as /metrics over HTTP on host:port (port 0: any), in a thread."""
    host, port = listen.rsplit(":", 1)
    try:
        server, _ = start_http_server(int(port), host.strip("[]"), registry=registry)
    except OSError as exc:
        why = exc.strerror or "the port is in use or the address is not local"
        raise CannotListen(f"cannot serve metrics on {listen} (server.metrics_listen): {why.lower()}") from None
    return server


def stop_http(server: WSGIServer) -> None:
    """Stop a server serve_http started."""
    server.shutdown()
    server.server_close()
