"""grpc.health.v1.Health, with watches that end when the server starts to drain.

gRPC's client-side health checking keeps a Watch stream open for as long as the channel
lives. grpcio's reference servicer leaves those streams open through a drain, so one watching
client held shutdown for the whole drain grace. Here a drain sends every watcher NOT_SERVING
and then ends its stream with OK: the client learns the state, and nothing waits for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status = int  # a health_pb2.HealthCheckResponse.ServingStatus value


class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """Check and Watch over a status per service name ("" is the whole server)."""

    def __init__(self) -> None:
        self._status: dict[str, Status] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._changed = asyncio.Condition()
        self._draining = False

    async def set(self, service: str, status: Status) -> None:
        """Set a service's status; watchers see it at once (not after a drain began)."""
        if self._draining:
            return
        async with self._changed:
            self._status[service] = status
            self._changed.notify_all()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good: watchers are told, then their streams end."""
        async with self._changed:
            self._draining = True
            for service in self._status:
                self._status[service] = health_pb2.HealthCheckResponse.NOT_SERVING
            self._changed.notify_all()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service[:100]}'")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: Status | None = None
        while True:
            async with self._changed:
                status = self._status.get(request.service, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
                draining = self._draining
                if status == last and not draining:
                    await self._changed.wait()
                    continue
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if draining:
                return
