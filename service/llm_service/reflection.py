"""Server reflection under both of its names: `grpc.reflection.v1` and `grpc.reflection.v1alpha`.

grpcio-reflection serves v1alpha only, while `buf curl` and newer grpcurl releases ask for v1
first. v1 is v1alpha with the package renamed (the same messages, fields and numbers), so one
servicer answers both, and v1's descriptor (derived from v1alpha's) is added to the pool so a
client can also describe the v1 service itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import _async as reflection_aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

V1ALPHA = "grpc.reflection.v1alpha"
V1 = "grpc.reflection.v1"
V1_SERVICE = f"{V1}.ServerReflection"
V1ALPHA_SERVICE = f"{V1ALPHA}.ServerReflection"
REFLECTION_SERVICES = frozenset({V1_SERVICE, V1ALPHA_SERVICE})


def _add_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", V1
    old, new = f".{V1ALPHA}.", f".{V1}."
    for message in proto.message_type:
        for f in message.field:
            if f.HasField("type_name"):
                f.type_name = f.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.Add(proto)


def serve_reflection(server: grpc.aio.Server, services: Iterable[str]) -> None:
    """Serve reflection for these services (and for reflection itself) under v1 and v1alpha."""
    _add_v1_descriptor()
    servicer = reflection_aio.ReflectionServicer((*services, V1_SERVICE, V1ALPHA_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))
