"""The one place the service's exceptions become gRPC statuses.

Each error carries google.rpc.ErrorInfo (domain "llm-service", an UPPER_SNAKE_CASE
reason, safe metadata), google.rpc.RetryInfo where waiting helps, and
google.rpc.BadRequest naming the field for invalid requests. Most specific class
first. Anything unknown becomes INTERNAL with a generic message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from llm_service.core import errors

ERROR_DOMAIN = "llm-service"
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Most specific first: subclasses before their bases.
_CODES: tuple[tuple[type[errors.LLMError], grpc.StatusCode], ...] = (
    (errors.InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.RouteNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.RouteNotPermitted, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (errors.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.QuotaBackendUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.RouteNotReady, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ContextWindowExceeded, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ContentPolicyViolation, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UpstreamBadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.UpstreamAuthFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.InsufficientCredits, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.UpstreamNotFound, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UpstreamUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.UpstreamBadResponse, grpc.StatusCode.UNAVAILABLE),
    (errors.ToolArgumentsInvalid, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)

INTERNAL_MESSAGE = "internal error; the server log has the details"


@dataclass(frozen=True)
class MappedStatus:
    """A gRPC status ready to send: code, message, trailing metadata with the details."""

    code: grpc.StatusCode
    message: str
    reason: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def code_for(err: errors.LLMError) -> grpc.StatusCode:
    """The gRPC code for an error of the family."""
    for cls, code in _CODES:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status(err: errors.LLMError, route: str = "") -> MappedStatus:
    """The status for err, with ErrorInfo, RetryInfo and BadRequest details."""
    code = code_for(err)
    if code is grpc.StatusCode.INTERNAL:
        reason, message = "INTERNAL", INTERNAL_MESSAGE
    else:
        reason, message = err.reason, err.message
    metadata: dict[str, str] = {}
    if route:
        metadata["route"] = route
    if err.upstream_status is not None:
        metadata["upstream_status"] = str(err.upstream_status)
    if err.attempts:
        metadata["attempts"] = str(err.attempts)
    if isinstance(err, errors.ToolArgumentsInvalid):
        metadata["tool_name"] = err.tool_name
    if isinstance(err, errors.QuotaExceeded):
        metadata.update(limit=err.limit, scope=err.scope, quota=f"{err.quota:g}")
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))]
    trailers: list[tuple[str, str | bytes]] = []
    if err.retry_after_s is not None and code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        delay = duration(err.retry_after_s)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        # gRFC A6 server pushback: a channel retrying this status waits this long first.
        trailers.append((RETRY_PUSHBACK_KEY, str(delay.seconds * 1000 + delay.nanos // 1_000_000)))
    if isinstance(err, errors.InvalidRequest):
        violation = error_details_pb2.BadRequest.FieldViolation(field=err.field, description=err.description)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if isinstance(err, errors.QuotaExceeded):
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=err.subject, description=err.message, quota_id=err.limit, quota_dimensions={"scope": err.scope}
        )
        if err.quota == int(err.quota):  # quota_value is an integer; a budget in dollars stays in the description
            violation.quota_value = int(err.quota)
        details.append(_pack(error_details_pb2.QuotaFailure(violations=[violation])))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    return MappedStatus(code, message, reason, ((STATUS_DETAILS_KEY, status.SerializeToString()), *trailers))


def duration(seconds: float) -> duration_pb2.Duration:
    """A protobuf Duration of the given seconds (rounded up to the millisecond)."""
    ms = max(0, math.ceil(seconds * 1000))
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


# The server's deadline for a call runs from when it read the call's headers, later than the
# caller's clock started it: when the caller's deadline passes and its gRPC library resets the
# stream, the server still has that lag left (tens of ms on a busy machine). A caller ending a
# call within this much of its deadline is taken to have reached it.
DEADLINE_LAG_S = 0.1


def caller_ended_code(context: Any) -> str:
    """The code a caller saw for a call it ended: its deadline passing, or a cancellation."""
    remaining = context.time_remaining()
    return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= DEADLINE_LAG_S else "CANCELLED"
