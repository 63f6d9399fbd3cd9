"""Reading google.rpc.Status and its details (ErrorInfo, RetryInfo, BadRequest, QuotaFailure) without googleapis-common-protos.

The client depends on grpcio and protobuf only. The few google.rpc messages it reads
are declared here with the same field numbers, in a private package and a private
descriptor pool, so they never clash with googleapis-common-protos when a program
imports both. Wire-compatible twins decode the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2
from google.protobuf.message_factory import GetMessageClass

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "llm_client.rpc"


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> _F:
    f = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)  # type: ignore[arg-type]
    if type_name:  # set only for message fields: an empty type_name still counts as set
        f.type_name = type_name
    return f


def _strings(first: str, second: str) -> list[_F]:
    return [_field(first, 1, _F.TYPE_STRING), _field(second, 2, _F.TYPE_STRING)]


def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for dependency in (any_pb2, duration_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    f = descriptor_pb2.FileDescriptorProto(
        name="llm_client/rpc_status.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    f.message_type.add(name="Status", field=[
        _field("code", 1, _F.TYPE_INT32),
        _field("message", 2, _F.TYPE_STRING),
        _field("details", 3, _F.TYPE_MESSAGE, ".google.protobuf.Any", repeated=True),
    ])  # fmt: skip
    info = f.message_type.add(name="ErrorInfo", field=[
        _field("reason", 1, _F.TYPE_STRING),
        _field("domain", 2, _F.TYPE_STRING),
        _field("metadata", 3, _F.TYPE_MESSAGE, f".{_PACKAGE}.ErrorInfo.MetadataEntry", repeated=True),
    ])  # fmt: skip
    entry = info.nested_type.add(
        name="MetadataEntry", field=[_field("key", 1, _F.TYPE_STRING), _field("value", 2, _F.TYPE_STRING)]
    )
    entry.options.map_entry = True
    f.message_type.add(name="RetryInfo", field=[_field("retry_delay", 1, _F.TYPE_MESSAGE, ".google.protobuf.Duration")])
    bad = f.message_type.add(name="BadRequest", field=[
        _field("field_violations", 1, _F.TYPE_MESSAGE, f".{_PACKAGE}.BadRequest.FieldViolation", repeated=True),
    ])  # fmt: skip
    bad.nested_type.add(
        name="FieldViolation", field=[_field("field", 1, _F.TYPE_STRING), _field("description", 2, _F.TYPE_STRING)]
    )
    quota = f.message_type.add(name="QuotaFailure", field=[
        _field("violations", 1, _F.TYPE_MESSAGE, f".{_PACKAGE}.QuotaFailure.Violation", repeated=True),
    ])  # fmt: skip
    quota.nested_type.add(name="Violation", field=_strings("subject", "description"))
    pool.Add(f)
    return pool


_POOL = _pool()
Status: Any = GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.Status"))
ErrorInfo: Any = GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.ErrorInfo"))
RetryInfo: Any = GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.RetryInfo"))
BadRequest: Any = GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.BadRequest"))
QuotaFailure: Any = GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.QuotaFailure"))


@dataclass
class Details:
    """What a rich error status says beyond its code and message."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay_s: float | None = None
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    quota_violations: list[tuple[str, str]] = field(default_factory=list)  # (subject, description)


def parse_details(status_bytes: bytes) -> Details:
    """The ErrorInfo, RetryInfo, BadRequest and QuotaFailure in a serialized google.rpc.Status; unknown details are skipped."""
    status = Status.FromString(status_bytes)
    out = Details()
    for detail in status.details:
        kind = detail.type_url.rsplit("/", 1)[-1]
        if kind == "google.rpc.ErrorInfo":
            info = ErrorInfo.FromString(detail.value)
            out.reason, out.metadata = info.reason, dict(info.metadata)
        elif kind == "google.rpc.RetryInfo":
            delay = RetryInfo.FromString(detail.value).retry_delay
            out.retry_delay_s = delay.seconds + delay.nanos / 1e9
        elif kind == "google.rpc.BadRequest":
            out.field_violations = [(v.field, v.description) for v in BadRequest.FromString(detail.value).field_violations]
        elif kind == "google.rpc.QuotaFailure":
            out.quota_violations = [(v.subject, v.description) for v in QuotaFailure.FromString(detail.value).violations]
    return out
