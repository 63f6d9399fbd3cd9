"""The service's own exception family. Provider errors are translated into it in one
place (`core.classify`); one module (`llm_service.status`) maps it to gRPC."""

from __future__ import annotations

from collections.abc import Mapping


class LLMError(Exception):
    """Base of the family. message is safe to show a caller: no keys, no prompts.

    What the upstream said beyond the message rides along for the engine, never for the
    caller: `upstream_headers` (its retry-after headers, lower-cased) and
    `native_tools_rejected` (OpenRouter has no endpoint taking tool definitions for the model),
    `backpressure` (the error says "backpressure": come back soon).
    """

    reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        upstream_status: int | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.upstream_status = upstream_status
        self.attempts = attempts
        self.upstream_headers: Mapping[str, str] = {}
        self.native_tools_rejected = False
        self.backpressure = False  # the upstream said "backpressure" (Hive's proxy): retry soon


class InvalidRequest(LLMError):
    """The caller's request is malformed; field names the offending field path."""

    reason = "INVALID_REQUEST"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


class RouteNotFound(LLMError):
    """No route of that name is configured."""

    reason = "ROUTE_NOT_FOUND"


class RouteNotPermitted(LLMError):
    """The authenticated caller may not use this route."""

    reason = "ROUTE_NOT_PERMITTED"


class RouteNotReady(LLMError):
    """The route has no provider key configured on the server."""

    reason = "ROUTE_KEY_MISSING"


class ContextWindowExceeded(LLMError):
    """The conversation does not fit the model's context window."""

    reason = "CONTEXT_WINDOW_EXCEEDED"


class ContentPolicyViolation(LLMError):
    """The provider refused the request by its content policy."""

    reason = "CONTENT_POLICY_VIOLATION"


class UpstreamBadRequest(LLMError):
    """The provider rejected the request as invalid."""

    reason = "UPSTREAM_BAD_REQUEST"


class UpstreamAuthFailed(LLMError):
    """The provider rejected the server's key (not the caller's credentials)."""

    reason = "UPSTREAM_AUTH_FAILED"


class UpstreamPermissionDenied(UpstreamAuthFailed):
    """The provider refused the server's key access to this model."""

    reason = "UPSTREAM_PERMISSION_DENIED"


class InsufficientCredits(LLMError):
    """The provider account has no credit left (HTTP 402)."""

    reason = "UPSTREAM_INSUFFICIENT_CREDITS"


class UpstreamNotFound(LLMError):
    """The provider does not know the route's model or endpoint."""

    reason = "UPSTREAM_MODEL_NOT_FOUND"


class RateLimited(LLMError):
    """The provider kept rate-limiting; retry_after_s is the delay it asked for."""

    reason = "UPSTREAM_RATE_LIMITED"


class Overloaded(LLMError):
    """This server is at its concurrency limit; the call was not started."""

    reason = "SERVER_OVERLOADED"


class QuotaExceeded(LLMError):
    """The caller is over one of its quotas (limit names it, scope "*" or the route it counts);
    the call was not started. retry_after_s says when the limit frees up."""

    reason = "QUOTA_EXCEEDED"

    def __init__(self, message: str, *, limit: str, scope: str, quota: float, subject: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.limit = limit
        self.scope = scope
        self.quota = quota
        self.subject = subject


class QuotaBackendUnavailable(LLMError):
    """The shared quota counters cannot be reached and the service is configured to fail closed."""

    reason = "QUOTA_BACKEND_UNAVAILABLE"


class ShuttingDown(LLMError):
    """This server is draining before it exits; the call was not started. Another replica can serve it."""

    reason = "SERVER_SHUTTING_DOWN"


class UpstreamUnavailable(LLMError):
    """The provider failed (5xx, connection error, timeout) and retries did not help."""

    reason = "UPSTREAM_UNAVAILABLE"


class UpstreamBadResponse(LLMError):
    """The provider answered with something that is not its wire format."""

    reason = "UPSTREAM_BAD_RESPONSE"


TRUNCATED_MESSAGE = (
    "the upstream's stream ended without its finish reason: the answer was cut short, or the body was not an event stream"
)


def truncated(upstream_status: int = 200) -> UpstreamBadResponse:
    """A stream that ended without the provider's finish reason: a cut (or no stream at all), not a whole answer."""
    return UpstreamBadResponse(TRUNCATED_MESSAGE, upstream_status=upstream_status)


class CircuitOpen(UpstreamUnavailable):
    """The route's circuit breaker is open after consecutive failures: failing fast."""

    reason = "UPSTREAM_CIRCUIT_OPEN"


class RouteTimeout(UpstreamUnavailable):
    """A call with no deadline of its own ran past its route's timeout_s: the upstream took too long."""


class FirstTokenTimeout(UpstreamUnavailable):
    """The upstream sent nothing within the route's first_token_timeout_s; another deployment may."""

    reason = "UPSTREAM_FIRST_TOKEN_TIMEOUT"


class UpstreamStalled(UpstreamUnavailable):
    """The provider went silent mid-answer for longer than the route's idle timeout."""

    reason = "UPSTREAM_STALLED"


class ToolArgumentsInvalid(LLMError):
    """The model's arguments for a tool call are not a JSON object and could not be repaired."""

    reason = "TOOL_ARGUMENTS_INVALID"

    def __init__(self, tool_name: str) -> None:
        super().__init__(f"the model's arguments for tool '{tool_name}' are not valid JSON and could not be repaired")
        self.tool_name = tool_name


class DeadlineExceeded(LLMError):
    """The caller's deadline passed before the upstream answered."""

    reason = "DEADLINE_EXCEEDED"
