"""Every upstream HTTP status from 400 to 599 maps by its class, on both paths and both RPCs:
never INTERNAL, never OK, always with `upstream_status`."""

from __future__ import annotations

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError
from tests.support.messages import user_msg
from tests.support.servers import ServerThread

EXPECTED = {
    401: (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED"),
    402: (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_INSUFFICIENT_CREDITS"),
    403: (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_PERMISSION_DENIED"),
    404: (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_MODEL_NOT_FOUND"),
    410: (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_MODEL_NOT_FOUND"),
    408: (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    429: (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
}


def expected(status: int) -> tuple[grpc.StatusCode, str]:
    if status in EXPECTED:
        return EXPECTED[status]
    if status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_BAD_REQUEST"
    return grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_every_upstream_status_maps_by_its_class(client: LLMClient, server: ServerThread, fake: FakeUpstream, route: str) -> None:
    wrong: list[str] = []
    for status in range(400, 600):
        for rpc in ("complete", "stream"):
            fake.script(Script(status=status, error={"message": f"upstream says {status}"}, times=5))
            try:
                if rpc == "complete":
                    got = client.complete(route, [user_msg()], max_retries=0, timeout=30)
                    wrong.append(f"{status} {rpc}: OK {got.text!r}")
                else:
                    events = list(client.stream(route, [user_msg()], max_retries=0, timeout=30))
                    wrong.append(f"{status} {rpc}: OK {[e.kind for e in events]}")
                continue
            except LLMServiceError as err:
                code, reason = expected(status)
                if (err.code, err.reason) != (code, reason) or err.metadata.get("upstream_status") != str(status):
                    wrong.append(f"{status} {rpc}: {err.code.name} {err.reason} {err.metadata.get('upstream_status')}")
            fake.reset()
    assert not wrong, "\n".join(wrong)
