"""Graceful shutdown in a real subprocess: SIGTERM drains in-flight streams, then exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import free_port, service_env

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_lets_an_in_flight_stream_finish_then_exits_zero(fake: FakeUpstream, tmp_path: Path) -> None:
    port = free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "drain_grace_s": 10, "metrics_listen": "127.0.0.1:0"},
        "routes": {"slow": {"model": "openai/slow", "api_base": f"{fake.base_url}/v1"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = service_env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_service", "--config", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.LLMServiceStub(channel)
        fake.script(Script(text=" ".join(f"w{i}" for i in range(20)), chunk_delay_s=0.1))
        call = stub.Stream(pb.StreamRequest(model="slow", messages=[user_msg()]), timeout=30)
        first = next(call)
        assert first.WhichOneof("event") == "text_delta"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        with pytest.raises(grpc.RpcError):
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Complete(pb.CompleteRequest(model="slow", messages=[user_msg()]), timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        rest = list(call)
        kinds = [e.WhichOneof("event") for e in rest]
        assert kinds[-1] == "finish" and kinds.count("text_delta") == 19
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert '"msg": "draining"' in out and '"msg": "stopped"' in out


def test_health_watch_sees_not_serving_when_draining(fake: FakeUpstream) -> None:
    from tests.support.servers import ServerThread, service_config

    srv = ServerThread(service_config(fake.base_url))
    channel = grpc.insecure_channel(srv.target)
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="llm.v1.LLMService"), timeout=10)
    statuses = [next(watch).status]
    stopper = threading.Thread(target=srv.stop)
    stopper.start()
    try:
        statuses.append(next(watch).status)
    except grpc.RpcError:
        pass
    stopper.join(10)
    assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses[1:] or len(statuses) == 1


def test_an_open_health_watch_does_not_hold_the_drain(fake: FakeUpstream, tmp_path: Path) -> None:
    """gRPC client-side health checking keeps a Watch open: a drain tells it NOT_SERVING and ends it."""
    port = free_port()
    config = {
        "server": {"listen": f"127.0.0.1:{port}", "drain_grace_s": 60, "metrics_listen": ""},
        "routes": {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "llm_service", "--config", str(path)], env=service_env(), text=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=120)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        rest = [r.status for r in watch]  # the stream ends (OK) instead of staying open
        assert rest == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert proc.wait(timeout=20) == 0, "exited long before the 60 s drain grace"
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
