"""The benchmark's gRPC ceiling: a bare grpc.aio LLMService relaying canned messages.

No upstream, no provider core: Complete returns one pre-built answer and Stream sends
the same 200 text deltas the upstream would have (pacing them like the paced upstream
when the model ends in `-paced`), then a finish. What the service costs beyond this is
its own work; this is the most a Python gRPC server can do here.

    python -m bench.ceiling --port 8301 [--health]

With --health it also answers grpc.health.v1 Check: the fault suite (f06) times bursts against it
as the floor of what one grpc.aio process answers 50 callers in.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from bench.upstream import CHUNKS, PACE_S
from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc

DELTAS = [pb.StreamResponse(text_delta=pb.TextDelta(text=f"tok{i} ")) for i in range(CHUNKS)]
TAIL = [
    pb.StreamResponse(text_end=pb.TextEnd()),
    pb.StreamResponse(
        finish=pb.Finish(
            finish_reason=pb.FINISH_REASON_STOP,
            provider_finish_reason="stop",
            usage=pb.Usage(input_tokens=12, output_tokens=CHUNKS),
            provider_model="bench-model",
        )
    ),
]
ANSWER = pb.CompleteResponse(
    text="Hello from the benchmark upstream.",
    finish_reason=pb.FINISH_REASON_STOP,
    provider_finish_reason="stop",
    usage=pb.Usage(input_tokens=12, output_tokens=7),
)


class Canned(pb_grpc.LLMServiceServicer):  # type: ignore[misc]  # ListModels, CountTokens: UNIMPLEMENTED
    async def Complete(self, request: pb.CompleteRequest, context: grpc.aio.ServicerContext) -> pb.CompleteResponse:
        return ANSWER

    async def Stream(self, request: pb.StreamRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StreamResponse]:
        paced = request.model.endswith("-paced")
        for message in DELTAS:
            if paced:
                await asyncio.sleep(PACE_S)
            yield message
        for message in TAIL:
            yield message


async def serve(port: int, with_health: bool = False) -> None:
    server = grpc.aio.server()
    pb_grpc.add_LLMServiceServicer_to_server(Canned(), server)
    if with_health:
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--health", action="store_true", help="also serve grpc.health.v1 (SERVING)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.health))


if __name__ == "__main__":
    main()
