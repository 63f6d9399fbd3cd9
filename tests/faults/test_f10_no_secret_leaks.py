"""Fault 10: a sentinel provider key and a sentinel client token, with forced upstream errors,
appear nowhere: not in logs (the whole process output), errors, metrics or debug dumps."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
import yaml

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError, channel_options
from llm_service.auth import hash_token
from tests.support.messages import user_msg
from tests.support.servers import OAUTH_SENTINEL_KEY, SENTINEL_KEY, ServerProcess

CLIENT_TOKEN = "llmtok-SENTINEL-client-token-abcdef0123456789"
WRONG_TOKEN = "llmtok-SENTINEL-wrong-token-9876543210fedcba"
ECHOING = f"Incorrect API key provided: {SENTINEL_KEY}. You can find your API key at https://example.invalid"


def test_f10_no_key_or_token_anywhere(fake: FakeUpstream, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"name": "app", "sha256": hash_token(CLIENT_TOKEN)}]}))
    dumps = tmp_path / "dumps"
    config = {
        "routes": {
            "openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
            "anthropic": {"model": "anthropic/claude-test", "api_base": fake.base_url, "key": {"env": "TEST_PROVIDER_KEY"}},
            "subscription": {"model": "anthropic/claude-sonnet-4-5", "api_base": fake.base_url, "key": {"env": "OAUTH_KEY"}},
        },
        "auth": {"tokens_file": str(tokens)},
        "debug_dumps": {"dir": str(dumps)},
        "retry": {"backoff_base_s": 0.01, "max_delay_s": 0.05},
        "server": {"log_level": "DEBUG"},
    }
    server = ServerProcess(config, tmp_path, OAUTH_KEY=OAUTH_SENTINEL_KEY, LITELLM_LOG="DEBUG")
    seen: list[str] = []
    try:
        fake.script(
            Script(status=401, error={"message": ECHOING, "code": "invalid_api_key"}),
            Script(status=400, error={"message": ECHOING}),
            Script(status=429, error={"message": ECHOING}, times=3),
            Script(status=500, error={"message": ECHOING}, times=4),
            Script(status=401, error={"message": ECHOING}),
            Script(text="", times=4),
            Script(text="partial answer then gone", disconnect_after_chunks=3),
            Script(body_raw=f"<html>{SENTINEL_KEY}</html>"),
        )
        with LLMClient(server.target, token=CLIENT_TOKEN, options=channel_options(retries=False)) as client:
            calls = [("openai", "complete")] * 3 + [("anthropic", "stream"), ("subscription", "complete")]
            calls += [("openai", "complete"), ("openai", "stream"), ("openai", "complete")]
            for route, rpc in calls:
                try:
                    if rpc == "complete":
                        client.complete(route, [user_msg(f"hello {route}")], max_retries=2, timeout=30)
                    else:
                        list(client.stream(route, [user_msg(f"hello {route}")], max_retries=3, timeout=30))
                except LLMServiceError as err:
                    seen.append(f"{err} {err.message} {err.metadata} {err.field_violations}")
        with LLMClient(server.target, token=WRONG_TOKEN, options=channel_options(retries=False)) as intruder:
            with pytest.raises(LLMServiceError) as info:
                intruder.models()
            seen.append(f"{info.value} {info.value.message}")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    finally:
        output = server.stop()

    assert len(fake.requests()) >= 15, "the forced errors reached the upstream"
    assert any("UPSTREAM_AUTH_FAILED" in s for s in seen)
    assert any("Incorrect API key provided: ***" in s for s in seen), "the upstream's words were passed on, masked"
    places = {"process output": output, "errors": "\n".join(seen), "metrics": metrics}
    places.update({f"dump {p.name}": p.read_text() for p in dumps.glob("*.json")})
    assert any(name.startswith("dump") for name in places), "dumps were written"
    for name, text in places.items():
        for secret in (SENTINEL_KEY, OAUTH_SENTINEL_KEY, CLIENT_TOKEN, WRONG_TOKEN, hash_token(CLIENT_TOKEN)):
            assert secret not in text, f"{secret[:16]}… leaked into {name}"


HEADER_SECRET = "hdr-SENTINEL-upstream-auth-5f1e2d3c4b5a6978"


def test_f10_a_secret_in_a_routes_headers_is_masked_like_its_key(fake: FakeUpstream, tmp_path: Path) -> None:
    """An upstream that echoes the request's headers in its error body shows callers and logs ***."""
    headers = {"x-upstream-auth": HEADER_SECRET, "x-team": "search"}
    config = {
        "routes": {
            "openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "headers": headers},
            "anthropic": {"model": "anthropic/claude-test", "api_base": fake.base_url, "headers": headers},
        },
        "retry": {"backoff_base_s": 0.01, "max_delay_s": 0.05},
        "server": {"log_level": "DEBUG"},
    }
    echo = f"request headers: x-upstream-auth={HEADER_SECRET}; rejected"
    server = ServerProcess(config, tmp_path)
    seen: list[str] = []
    try:
        with LLMClient(server.target, options=channel_options(retries=False)) as client:
            for route in ("openai", "anthropic"):
                for status in (400, 401, 403, 404, 422, 429, 500, 503):
                    for rpc in ("complete", "stream"):
                        fake.script(Script(status=status, error={"message": echo}, times=10))
                        try:
                            if rpc == "complete":
                                client.complete(route, [user_msg()], max_retries=0, timeout=30)
                            else:
                                list(client.stream(route, [user_msg()], max_retries=0, timeout=30))
                        except LLMServiceError as err:
                            seen.append(f"{err} {err.message} {err.metadata}")
    finally:
        output = server.stop()
    assert len(seen) == 32
    assert sum("request headers: x-upstream-auth=***" in s for s in seen) >= 16, "the upstream's words were kept, masked"
    assert all(fake_request.headers.get("x-upstream-auth") == HEADER_SECRET for fake_request in fake.requests())
    for name, text in {"errors": "\n".join(seen), "process output": output}.items():
        assert HEADER_SECRET not in text, f"the header secret leaked into {name}"
