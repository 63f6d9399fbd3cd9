"""Client authentication: hashed bearer tokens with route permissions, server TLS and mutual TLS."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fake_upstream import FakeUpstream
from llm_client import LLMClient, LLMServiceError, channel_options
from llm_service.auth import hash_token
from tests.support.messages import user_msg
from tests.support.paths import ROOT
from tests.support.servers import ServerThread, service_config, service_env

TOKEN = "llmtok-SENTINEL-client-token-0123456789abcdef"
RESTRICTED = "llmtok-restricted-caller-token-fedcba9876543210"


def _tokens_file(path: Path, entries: list[tuple[str, str, list[str] | None]]) -> Path:
    tokens = []
    for name, token, routes in entries:
        entry: dict[str, object] = {"name": name, "sha256": hash_token(token)}
        if routes is not None:
            entry["routes"] = routes
        tokens.append(entry)
    path.write_text(yaml.safe_dump({"tokens": tokens}))
    return path


@pytest.fixture
def secured(fake: FakeUpstream, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    tokens = _tokens_file(tmp_path / "tokens.yaml", [("billing", TOKEN, None), ("reports", RESTRICTED, ["openai"])])
    srv = ServerThread(service_config(fake.base_url, auth={"tokens_file": str(tokens)}))
    yield srv, tokens
    srv.stop()


def _client(srv: ServerThread, token: str | None) -> LLMClient:
    return LLMClient(srv.target, token=token, options=channel_options(retries=False))


def test_calls_without_a_valid_token_are_unauthenticated_and_say_nothing_more(secured: tuple[ServerThread, Path]) -> None:
    srv, _ = secured
    answers = []
    for token in (None, "wrong-token", TOKEN[:-1]):
        with _client(srv, token) as c, pytest.raises(LLMServiceError) as info:
            c.complete("openai", [user_msg()], timeout=10)
        answers.append((info.value.code, info.value.message, info.value.reason))
    assert answers == [(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid credentials", "")] * 3


def test_a_valid_token_is_admitted_and_attributed_in_the_log(
    secured: tuple[ServerThread, Path], fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    srv, _ = secured
    with caplog.at_level(logging.INFO), _client(srv, TOKEN) as c:
        assert c.complete("openai", [user_msg()], timeout=10).text
    [line] = [r for r in caplog.records if r.getMessage() == "rpc" and getattr(r, "rpc", "") == "Complete"]
    assert line.caller_name == "billing"  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text


def test_route_permissions_hide_other_routes(secured: tuple[ServerThread, Path], fake: FakeUpstream) -> None:
    srv, _ = secured
    with _client(srv, RESTRICTED) as c:
        assert [m.name for m in c.models()] == ["openai"]
        assert c.complete("openai", [user_msg()], timeout=10).text
        for route in ("anthropic", "no-such-route"):  # the same answer whether or not the route exists
            with pytest.raises(LLMServiceError) as info:
                c.complete(route, [user_msg()], timeout=10)
            assert (info.value.code, info.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROUTE_NOT_PERMITTED")
            assert route not in info.value.message
    assert len(fake.requests()) == 1


def test_health_is_open_and_reflection_is_not_by_default(secured: tuple[ServerThread, Path]) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    srv, _ = secured
    with grpc.insecure_channel(srv.target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tokens_are_re_read_when_the_file_changes(secured: tuple[ServerThread, Path]) -> None:
    srv, tokens = secured
    rotated = "llmtok-rotated-0000111122223333"
    _tokens_file(tokens, [("billing", rotated, None)])
    os.utime(tokens, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    time.sleep(1.1)  # the file is checked at most once a second
    with _client(srv, rotated) as c:
        assert c.models()
    with _client(srv, TOKEN) as c, pytest.raises(LLMServiceError) as info:
        c.models()
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_hash_token_command_prints_what_the_tokens_file_stores() -> None:
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "llm_service", "--hash-token"],
        input=TOKEN + "\n",
        capture_output=True,
        text=True,
        env=service_env(),
    )
    assert run.stdout.strip() == hash_token(TOKEN) and TOKEN not in run.stdout


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=test-ca")  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}-app"
        )
        extra = ["-extfile", "server.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *extra)  # fmt: skip
    return d


def _tls_server(fake: FakeUpstream, pki: Path, mutual: bool) -> ServerThread:
    tls = {"cert_file": str(pki / "server.pem"), "key_file": str(pki / "server.key")}
    if mutual:
        tls["client_ca_file"] = str(pki / "ca.pem")
    return ServerThread(service_config(fake.base_url, tls=tls))


def test_server_tls(fake: FakeUpstream, pki: Path) -> None:
    srv = _tls_server(fake, pki, mutual=False)
    try:
        creds = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        with LLMClient(f"localhost:{srv.port}", tls=creds, options=channel_options(retries=False)) as c:
            assert c.complete("openai", [user_msg()], timeout=10).text
        with LLMClient(f"localhost:{srv.port}", options=channel_options(retries=False)) as c, pytest.raises(LLMServiceError):
            c.models(timeout=3)  # plain text to a TLS port fails
    finally:
        srv.stop()


def test_mutual_tls_identifies_the_caller_by_certificate(fake: FakeUpstream, pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = _tls_server(fake, pki, mutual=True)
    try:
        ca = (pki / "ca.pem").read_bytes()
        with_cert = grpc.ssl_channel_credentials(ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes())
        with caplog.at_level(logging.INFO), LLMClient(f"localhost:{srv.port}", tls=with_cert) as c:
            assert c.complete("openai", [user_msg()], timeout=10).text
        [line] = [r for r in caplog.records if r.getMessage() == "rpc" and getattr(r, "rpc", "") == "Complete"]
        assert line.caller_name == "client-app"  # type: ignore[attr-defined]
        without_cert = grpc.ssl_channel_credentials(ca)
        with LLMClient(f"localhost:{srv.port}", tls=without_cert, options=channel_options(retries=False)) as c:
            with pytest.raises(LLMServiceError) as info:
                c.models(timeout=5)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE, "the handshake refuses a client without a certificate"
    finally:
        srv.stop()


def test_bad_tls_configuration_is_refused_at_start_up(fake: FakeUpstream, tmp_path: Path) -> None:
    from llm_service.config import ConfigError

    with pytest.raises(ConfigError, match="cert_file and key_file together"):
        service_config(fake.base_url, tls={"cert_file": str(tmp_path / "c.pem")})
    assert ROOT.exists()
