"""What the engine does after each kind of failure: one table, one row per `LLMError` class.

A row says whether the failure is retried (and under which reason, whose limit and
metric label apply), whether it is taken from the route's retry budget (the upstream did
not answer well), whether it counts towards opening the circuit breaker (the upstream is
down: a rate limit is not an outage, so it does not), and whether a fallback route may do
better when nothing was sent to the caller yet. A class without a row of its own takes its
nearest ancestor's; `tests/test_policy.py` checks that every class has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_service.core import errors
from llm_service.core.retry import RetryReason


@dataclass(frozen=True)
class FailurePolicy:
    """What follows one failed attempt."""

    retry: RetryReason | None  # None: the failure is final for this route
    route_failure: bool  # taken from the route's retry budget
    fall_back: bool  # the next fallback route may be tried
    trips_breaker: bool = True  # a route_failure that also counts towards opening the breaker


_FINAL = FailurePolicy(retry=None, route_failure=False, fall_back=False)
_TRANSIENT = FailurePolicy(retry=RetryReason.TRANSIENT, route_failure=True, fall_back=True)

POLICIES: dict[type[errors.LLMError], FailurePolicy] = {
    errors.LLMError: _FINAL,  # INTERNAL: a failure of no known kind is not retried
    errors.InvalidRequest: _FINAL,
    errors.RouteNotFound: _FINAL,
    errors.RouteNotPermitted: _FINAL,
    errors.RouteNotReady: _FINAL,
    errors.Overloaded: _FINAL,
    errors.ShuttingDown: _FINAL,
    errors.QuotaExceeded: _FINAL,
    errors.QuotaBackendUnavailable: _FINAL,
    errors.ContentPolicyViolation: _FINAL,
    errors.UpstreamBadRequest: _FINAL,
    errors.UpstreamAuthFailed: _FINAL,
    errors.UpstreamPermissionDenied: _FINAL,
    errors.InsufficientCredits: _FINAL,
    errors.UpstreamNotFound: _FINAL,
    errors.ToolArgumentsInvalid: _FINAL,
    errors.DeadlineExceeded: _FINAL,
    # Another model may have the larger window.
    errors.ContextWindowExceeded: FailurePolicy(retry=None, route_failure=False, fall_back=True),
    # The upstream asked for less traffic: it is not down, so the breaker does not open for it.
    errors.RateLimited: FailurePolicy(retry=RetryReason.RATE_LIMIT, route_failure=True, fall_back=True, trips_breaker=False),
    errors.UpstreamUnavailable: _TRANSIENT,
    errors.UpstreamBadResponse: _TRANSIENT,
    errors.UpstreamStalled: _TRANSIENT,
    # A slow first token: the next attempt (another deployment first) or a fallback may be quicker.
    errors.FirstTokenTimeout: FailurePolicy(retry=RetryReason.FIRST_TOKEN, route_failure=True, fall_back=True),
    # The breaker refused the attempt: nothing reached the upstream, so nothing is counted.
    errors.CircuitOpen: FailurePolicy(retry=None, route_failure=False, fall_back=True),
    # The call's own time is spent: no retry, and the fallback loop stops on a spent deadline.
    errors.RouteTimeout: FailurePolicy(retry=None, route_failure=False, fall_back=False),
}


def policy_of(err: errors.LLMError) -> FailurePolicy:
    """The row of err's class, or of its nearest ancestor that has one."""
    for cls in type(err).__mro__:
        row = POLICIES.get(cls)
        if row is not None:
            return row
    raise AssertionError(f"no failure policy for {type(err).__name__}")  # pragma: no cover - LLMError has a row
