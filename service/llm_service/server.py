"""Building and running the gRPC server: LLMService, health, reflection, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from llm_service.auth import AuthGuard, TokenStore, read_pem
from llm_service.config import Config
from llm_service.core import litellm_setup
from llm_service.core.observer import Observers
from llm_service.core.provider import Provider
from llm_service.health import Health
from llm_service.interceptors import AdmissionGuard, GuardInterceptor, MetricsGuard, RequestBudget
from llm_service.memory import freeze_startup_heap
from llm_service.metrics import CannotListen, Metrics
from llm_service.reflection import REFLECTION_SERVICES, serve_reflection
from llm_service.servicer import LLMServicer
from llm_service.tracing import Tracing, TracingSettings
from llm_service.tracing import start as start_tracing

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LLMService"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass
class RunningServer:
    """A started server and what it needs to drain."""

    server: grpc.aio.Server
    health: Health
    port: int
    config: Config
    metrics: Metrics
    admission: AdmissionGuard
    provider: Provider
    servicer: LLMServicer
    metrics_port: int = 0
    tracing: Tracing | None = None

    async def drain(self, grace_s: float | None = None) -> None:
        """Fail health, refuse new RPCs, let in-flight ones finish within the grace period."""
        grace = self.config.server.drain_grace_s if grace_s is None else grace_s
        log.info("draining", extra={"grace_s": grace})
        self.admission.draining = True  # new calls are refused at once; in-flight ones go on
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        # Shortly before grpc would cut the streams still open with a bare status, end them
        # ourselves: an error event first, then UNAVAILABLE, as every failed stream ends.
        margin = min(1.0, grace * 0.2)
        done, _ = await asyncio.wait({stopping}, timeout=max(0.0, grace - margin))
        if not done:
            ended = self.servicer.end_streams()
            log.warning("drain grace ran out: ending open streams", extra={"streams": ended})
        await stopping
        self.admission.trimmer.cancel()
        await self.provider.aclose()
        await self.servicer.quotas.aclose()
        await asyncio.to_thread(self.metrics.close)
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # the spans still batched are exported first
        log.info("stopped")


def _auth_guard(config: Config) -> AuthGuard:
    sec = config.security
    tokens = TokenStore(sec.tokens_file) if sec.tokens_file else None
    open_services = set(sec.open_services)
    if open_services & REFLECTION_SERVICES:  # one service under two names: opening either opens both
        open_services |= REFLECTION_SERVICES
    return AuthGuard(tokens, mutual_tls=bool(sec.tls_client_ca_file), open_services=frozenset(open_services))


def _add_port(server: grpc.aio.Server, address: str, config: Config) -> int:
    """Listen with TLS (mutual when a client CA is configured) or in plain text."""
    sec = config.security
    if not sec.tls_cert_file:
        return int(server.add_insecure_port(address))
    credentials = grpc.ssl_server_credentials(
        [(read_pem(sec.tls_key_file), read_pem(sec.tls_cert_file))],
        root_certificates=read_pem(sec.tls_client_ca_file) if sec.tls_client_ca_file else None,
        require_client_auth=bool(sec.tls_client_ca_file),
    )
    return int(server.add_secure_port(address, credentials))


async def start(
    config: Config, listen: str | None = None, reuse_port: bool = False, tracing: TracingSettings | None = None
) -> RunningServer:
    """Start serving on listen (default: the configured address); returns once listening.

    reuse_port: bind with SO_REUSEPORT, as the supervisor's workers do to share one port
    (otherwise off, so a second server on a port already in use fails instead of sharing it).
    tracing: what the OTEL_* environment asks (None: no tracing); each process exports its own spans.
    """
    report = litellm_setup.install()
    metrics = Metrics(report.litellm_version)
    metrics.prime(config.routes.values())
    admission = AdmissionGuard(SERVICE_NAME, config.limits.max_concurrent_rpcs, config.limits.shed_retry_after_s, metrics)
    server = grpc.aio.server(
        interceptors=[
            GuardInterceptor(
                MetricsGuard(metrics),
                *([_auth_guard(config)] if config.security.authenticates else []),
                admission,
                budget=RequestBudget(config.limits.max_inflight_request_bytes, config.limits.shed_retry_after_s),
            ),
        ],
        options=[
            ("grpc.max_receive_message_length", config.limits.max_request_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_connection_age_ms", int(config.server.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.server.max_connection_age_grace_s * 1000)),
            # Accept the clients' keepalive pings (every 30 s in llm_client) instead of answering too_many_pings.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.so_reuseport", int(reuse_port)),
        ],
    )
    tracer = start_tracing(tracing)
    provider = Provider(config.core(), observer=Observers(metrics, *([tracer] if tracer is not None else [])))
    servicer = LLMServicer(config, provider, metrics, tracer)
    pb_grpc.add_LLMServiceServicer_to_server(servicer, server)
    health = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    serve_reflection(server, (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
    address = listen or config.server.listen
    try:
        port = _add_port(server, address, config)
    except RuntimeError:  # grpc's "Failed to bind"
        port = 0
    if port == 0:
        if tracer is not None:
            tracer.shutdown()
        raise CannotListen(f"cannot listen on {address}: the port is in use or the address is not local")
    if tracer is not None:
        tracer.server_address = (address.rsplit(":", 1)[0].strip("[]"), port)
    try:
        metrics_port = metrics.serve(config.server.metrics_listen) if config.server.metrics_listen else 0
    except CannotListen:
        await server.stop(None)  # bound but not started: give the port back before exiting
        if tracer is not None:
            tracer.shutdown()
        raise
    await server.start()
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={
            "address": address.rsplit(":", 1)[0] + f":{port}",
            "routes": sorted(config.routes),
            "litellm_version": report.litellm_version,
            "metrics_port": metrics_port,
            "pid": os.getpid(),
        },
    )
    return RunningServer(server, health, port, config, metrics, admission, provider, servicer, metrics_port, tracer)


async def serve_until_signalled(
    config: Config, listen: str | None = None, reuse_port: bool = False, tracing: TracingSettings | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fake = None
    if config.fake_upstream:
        from fake_upstream import FakeUpstream

        host, port = config.fake_upstream.rsplit(":", 1)
        fake = FakeUpstream(host, int(port))
        await fake.start()
        log.info("fake upstream started", extra={"address": fake.base_url})
    running = await start(config, listen, reuse_port, tracing)
    freeze_startup_heap()
    await stop.wait()
    await running.drain()
    if fake is not None:
        await fake.stop()
