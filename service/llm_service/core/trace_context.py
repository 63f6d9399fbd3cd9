"""The trace context an upstream attempt forwards, for the transports to add to its HTTP request.

Tracing (outside the core) sets it when an attempt starts on a route with `forward_traceparent`,
and clears it when the attempt ends; without tracing it stays empty and costs one lookup.
"""

from __future__ import annotations

from contextvars import ContextVar

UPSTREAM_TRACE_HEADERS: ContextVar[dict[str, str] | None] = ContextVar("upstream_trace_headers", default=None)


def with_trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """headers, plus the current attempt's traceparent (and tracestate) when it forwards them."""
    forwarded = UPSTREAM_TRACE_HEADERS.get()
    return headers if forwarded is None else {**headers, **forwarded}
