"""The error table (README): each row through a real server and the fake upstream."""

from __future__ import annotations

import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError, pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import SENTINEL_KEY, ServerThread, service_config


def _complete_error(client: LLMClient, route: str = "openai", **kwargs: object) -> LLMServiceError:
    with pytest.raises(LLMServiceError) as info:
        client.complete(route, [user_msg()], timeout=10, **kwargs)  # type: ignore[arg-type]
    assert SENTINEL_KEY not in str(info.value) and SENTINEL_KEY not in repr(info.value.metadata)
    return info.value


def _stream_error(client: LLMClient, route: str = "openai", **kwargs: object) -> LLMServiceError:
    with pytest.raises(LLMServiceError) as info:
        list(client.stream(route, [user_msg()], timeout=10, **kwargs))  # type: ignore[arg-type]
    return info.value


def test_unknown_route_is_not_found(client: LLMClient, fake: FakeUpstream) -> None:
    err = _complete_error(client, route="no-such-route")
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND")
    assert "ListModels" in err.message
    assert fake.requests() == []


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [pb.Message(role=pb.ROLE_UNSPECIFIED, parts=[pb.ContentPart(text="x")])]}, "messages[0].role"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"model": ""}, "model"),
        ({"tools": [pb.Tool(name="t", parameters_json="{not json")]}, "tools[0].parameters_json"),
        ({"tools": [pb.Tool(name="t", parameters_json='{"type": "array"}')]}, "tools[0].parameters_json"),
        ({"tools": [pb.Tool(name="bad name!")]}, "tools[0].name"),
        (
            {"messages": [pb.Message(role=pb.ROLE_TOOL, tool_call_id="nope", parts=[pb.ContentPart(text="x")])]},
            "messages[0].tool_call_id",
        ),
        ({"temperature": 3.0}, "temperature"),
        ({"response_format": pb.ResponseFormat(json_schema="[1, 2]")}, "response_format.json_schema"),
    ],
)
def test_invalid_requests_name_the_field(
    stub: pb_grpc.LLMServiceStub, fake: FakeUpstream, request_kwargs: dict[str, object], field: str
) -> None:
    from llm_client import error_from_rpc

    fields: dict[str, object] = {"model": "openai", "messages": [user_msg()], **request_kwargs}
    with pytest.raises(grpc.RpcError) as info:
        stub.Complete(pb.CompleteRequest(**fields), timeout=10)  # type: ignore[arg-type]
    err = error_from_rpc(info.value)
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason == "INVALID_REQUEST"
    assert err.field_violations and err.field_violations[0][0] == field
    assert fake.requests() == [], "nothing invalid is sent upstream"


def test_rate_limit_exhausted_is_resource_exhausted_with_retry_info(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(status=429, headers={"retry-after": "7"}))
    err = _complete_error(client, max_retries=0)
    assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
    assert err.retry_delay_s == pytest.approx(2.0), "the upstream's 7 s clamped to the configured max_delay_s"
    assert len(fake.requests()) == 1


def test_context_window_exceeded(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(
        Script(
            status=400,
            error={
                "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens",
                "code": "context_length_exceeded",
            },
        )
    )
    err = _complete_error(client)
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_WINDOW_EXCEEDED")
    assert len(fake.requests()) == 1, "never retried"


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_rejected_provider_key_is_failed_precondition(client: LLMClient, fake: FakeUpstream, route: str) -> None:
    fake.script(Script(status=401, error={"message": f"Incorrect API key provided: {SENTINEL_KEY}"}))
    err = _complete_error(client, route=route)
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED")
    assert len(fake.requests()) == 1, "never retried"


def test_route_without_key_is_failed_precondition_naming_the_variable(client: LLMClient, fake: FakeUpstream) -> None:
    err = _complete_error(client, route="nokey")
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ROUTE_KEY_MISSING")
    assert "UNSET_KEY_VARIABLE" in err.message
    assert fake.requests() == []


@pytest.mark.parametrize("status", [500, 502, 503])
def test_upstream_5xx_is_unavailable(client: LLMClient, fake: FakeUpstream, status: int) -> None:
    fake.script(Script(status=status))
    err = _complete_error(client, max_retries=0)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")
    assert err.metadata["upstream_status"] == str(status)


def test_connection_refused_is_unavailable(client: LLMClient) -> None:
    err = _complete_error(client, route="refused", max_retries=0)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


def test_stream_failure_is_an_error_event_then_the_status(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    fake.script(Script(status=401))
    call = stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=10)
    events = []
    with pytest.raises(grpc.RpcError) as info:
        for event in call:
            events.append(event)
    assert [e.WhichOneof("event") for e in events] == ["error"]
    assert events[0].error.code == "FAILED_PRECONDITION" and events[0].error.reason == "UPSTREAM_AUTH_FAILED"
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_deadline_is_deadline_exceeded_and_the_upstream_request_is_closed(client: LLMClient, fake: FakeUpstream) -> None:
    fake.script(Script(first_byte_delay_s=30))
    started = time.monotonic()
    with pytest.raises(LLMServiceError) as info:
        client.complete("openai", [user_msg()], timeout=1.0)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0
    [req] = fake.wait_for(lambda rs: rs and rs[0].ended_at is not None, timeout_s=3)
    assert req.outcome == "aborted"
    assert req.ended_at is not None and req.ended_at - started < 1.5


def test_deadline_bounds_the_upstream_timeout(stub: pb_grpc.LLMServiceStub, fake: FakeUpstream) -> None:
    stub.Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=3)
    assert len(fake.requests()) == 1  # the request went through with the deadline as its timeout


def test_unexpected_failure_is_internal_with_a_generic_message(fake: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    from llm_service.core.provider import Provider

    class BrokenProvider(Provider):
        async def complete(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise RuntimeError("secret internal detail")

    import llm_service.server as server_module

    original = server_module.Provider
    server_module.Provider = BrokenProvider  # type: ignore[misc]
    try:
        srv = ServerThread(service_config(fake.base_url))
    finally:
        server_module.Provider = original  # type: ignore[misc]
    try:
        with LLMClient(srv.target) as client:
            err = _complete_error(client)
        assert (err.code, err.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
        assert "secret internal detail" not in err.message
        assert "secret internal detail" in caplog.text, "the traceback goes to the log"
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("script", "code", "reason"),
    [
        (
            Script(status=400, error={"message": "content policy violation", "code": "content_policy_violation"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "CONTENT_POLICY_VIOLATION",
        ),
        (
            Script(status=400, error={"message": "unsupported parameter"}),
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_BAD_REQUEST",
        ),
        (
            Script(status=402, error={"message": "Insufficient credits"}),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPSTREAM_INSUFFICIENT_CREDITS",
        ),
        (Script(status=403), grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_PERMISSION_DENIED"),
        (
            Script(status=404, error={"message": "model not found"}),
            grpc.StatusCode.FAILED_PRECONDITION,
            "UPSTREAM_MODEL_NOT_FOUND",
        ),
        (Script(body_raw="<html>not json</html>"), grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE"),
    ],
)
def test_other_upstream_failures_map_to_their_rows(
    client: LLMClient, fake: FakeUpstream, script: Script, code: grpc.StatusCode, reason: str
) -> None:
    fake.script(script)
    err = _complete_error(client, max_retries=0)
    assert (err.code, err.reason) == (code, reason)
    assert len(fake.requests()) == 1


def test_unrepairable_tool_arguments_name_the_tool(client: LLMClient, fake: FakeUpstream) -> None:
    from fake_upstream import ToolCallSpec

    fake.script(Script(text="", tool_calls=(ToolCallSpec("lookup", "not json at all", "call_1"),)))
    err = _stream_error(client)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAVAILABLE, "TOOL_ARGUMENTS_INVALID")
    assert err.metadata["tool_name"] == "lookup" and "'lookup'" in err.message


def test_every_error_class_has_its_own_status_row() -> None:
    """A new LLMError subclass missing from status._CODES would silently become INTERNAL."""
    import grpc

    from llm_service.core import errors
    from llm_service.status import code_for

    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    classes = subclasses(errors.LLMError)
    assert len(classes) >= 15
    for cls in classes:
        err = cls.__new__(cls)
        Exception.__init__(err, "x")
        assert code_for(err) is not grpc.StatusCode.INTERNAL, f"{cls.__name__} has no row in status._CODES"
        assert cls.reason != errors.LLMError.reason, f"{cls.__name__} has no ErrorInfo reason of its own"
