"""Servers for tests: in a thread of the test process, or as a process of their own.

Every server's routes point at the fake upstream, so LiteLLM and the direct HTTP path run
for real; nothing here mocks them. A server runs on one of two paths:

- `fast-path`: each route takes the direct HTTP path where its wire format has one
  (the configuration as written);
- `litellm-path`: every route goes through LiteLLM's transport (`transport: litellm`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest
import yaml

from fake_upstream import FakeUpstream
from llm_client import LLMClient, channel_options
from llm_service.config import Config, parse_config
from llm_service.server import RunningServer, start
from llm_service.tracing import TracingSettings
from tests.support.paths import ROOT

SENTINEL_KEY = "sk-test-SENTINEL-provider-key-0123456789"  # the provider key every test route holds
OAUTH_SENTINEL_KEY = "sk-ant-oat01-SENTINEL-subscription-token-0123456789"  # the subscription route's token

ServerPath = Literal["fast-path", "litellm-path"]
PATHS: tuple[ServerPath, ...] = ("fast-path", "litellm-path")

on_both_paths = pytest.mark.parametrize("path", PATHS)
"""Run a test once per path; its `path` argument (and its id) is `fast-path` or `litellm-path`."""


def service_config(fake_url: str, **overrides: Any) -> Config:
    """A configuration whose routes all point at the fake upstream, with fast retries.

    Each keyword replaces a top-level section; a dict is merged into the section key by key
    (so `routes={"openai": {...}}` replaces the openai route and keeps the others).
    """
    raw: dict[str, Any] = {
        # Streams keep one message per upstream event whatever the machine's load, so tests can
        # compare events one by one; tests/test_relay.py turns coalescing on.
        "server": {"listen": "127.0.0.1:0", "drain_grace_s": 5, "metrics_listen": "127.0.0.1:0", "stream_coalescing": False},
        "retry": {
            "backoff_base_s": 0.01,
            "max_delay_s": 2.0,
            "empty_stream_delay_s": 0.01,
            "jitter_ratio": 0.0,
            "retry_after_jitter": False,
        },
        # The shared test server sees failures from many tests in a row: no budget or breaker there.
        # tests/faults/test_f05_retry_budget_and_breaker.py tests them with real settings.
        "resilience": {"retry_budget_tokens": 1e9, "breaker_failures": 1_000_000},
        "routes": {
            "openai": {"model": "openai/test-model", "api_base": f"{fake_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
            "anthropic": {"model": "anthropic/claude-test", "api_base": fake_url, "key": {"env": "TEST_PROVIDER_KEY"}},
            "refused": {"model": "openai/test-model", "api_base": "http://127.0.0.1:9/v1"},
            "nokey": {"model": "openai/test-model", "api_base": f"{fake_url}/v1", "key": {"env": "UNSET_KEY_VARIABLE"}},
            # One route per provider family the provider core treats specially (PC01–PC25).
            "bare": {"model": "gpt-4o-mini", "api_base": f"{fake_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
            "gemini": {"model": "gemini/gemini-2.0-flash", "api_base": fake_url, "key": {"env": "TEST_PROVIDER_KEY"}},
            "ollama": {"model": "ollama/llama3", "api_base": fake_url},
            "openrouter": {
                "model": "openrouter/meta-llama/llama-3-8b",
                "api_base": f"{fake_url}/api/v1",
                "key": {"env": "TEST_PROVIDER_KEY"},
            },
            "openrouter-claude": {
                "model": "openrouter/anthropic/claude-sonnet-4",
                "api_base": f"{fake_url}/api/v1",
                "key": {"env": "TEST_PROVIDER_KEY"},
            },
            "kimi": {"model": "kimi/kimi-k2", "api_base": f"{fake_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
            "hive": {"model": "hive/hive-coder", "key": {"env": "TEST_PROVIDER_KEY"}},
            "minimax": {"model": "minimax/MiniMax-M2", "api_base": f"{fake_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}},
            "codex": {
                "model": "openai/gpt-5-codex",
                "api_base": f"{fake_url}/chatgpt.com/backend-api/codex",
                "key": {"env": "TEST_PROVIDER_KEY"},
            },
            "embed": {
                "model": "openai/text-embedding-3-small",
                "api_base": f"{fake_url}/v1",
                "key": {"env": "TEST_PROVIDER_KEY"},
            },
            "claude-subscription": {
                "model": "anthropic/claude-sonnet-4-5",
                "api_base": fake_url,
                "key": {"env": "TEST_OAUTH_KEY"},
            },
        },
        "hive_api_base": f"{fake_url}/v1",
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return parse_config(raw, "<tests>", {"TEST_PROVIDER_KEY": SENTINEL_KEY, "TEST_OAUTH_KEY": OAUTH_SENTINEL_KEY})


def litellm_path(config: Config) -> Config:
    """The configuration with every route forced onto LiteLLM's transport (`transport: litellm`)."""
    return dataclasses.replace(config, routes={k: dataclasses.replace(r, transport="litellm") for k, r in config.routes.items()})


def on_path(config: Config, path: ServerPath) -> Config:
    """The configuration a server on this path runs: as written on `fast-path`, all LiteLLM on `litellm-path`."""
    return config if path == "fast-path" else litellm_path(config)


class ServerThread:
    """A real grpc.aio server running on its own event loop in a daemon thread."""

    def __init__(self, config: Config, tracing: TracingSettings | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.running: RunningServer | None = None
        ready = threading.Event()
        errors: list[BaseException] = []

        async def boot() -> None:
            try:
                self.running = await start(config, "127.0.0.1:0", tracing=tracing)
            except BaseException as exc:  # reported to the test thread
                errors.append(exc)
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.create_task(boot())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name="grpc-server")
        self.thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        assert self.running is not None
        self.port: int = self.running.port
        self.target: str = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop at once and end the thread."""
        assert self.running is not None
        asyncio.run_coroutine_threadsafe(self.running.drain(0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextmanager
def custom_server(
    fake: FakeUpstream, *, path: ServerPath = "fast-path", tracing: TracingSettings | None = None, **overrides: Any
) -> Iterator[tuple[ServerThread, LLMClient]]:
    """A server of its own with `service_config` overrides, on this path, and a client for it.

    The client has channel retries off, so attempt counts are exact. tracing: as the OTEL_* environment asks.
    """
    srv = ServerThread(on_path(service_config(fake.base_url, **overrides), path), tracing)
    try:
        with LLMClient(srv.target, options=channel_options(retries=False)) as c:
            yield srv, c
    finally:
        srv.stop()


def service_env(**extra: str) -> dict[str, str]:
    """The environment a server subprocess needs: this one, with the source tree on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'clients/python/src'}", **extra}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The server as its own process (python -m llm_service), on a free port, for signals and memory.

    Everything it prints is collected by a reader thread (a full pipe would block the server).
    """

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        command: list[str] | None = None,
        **env: str,
    ) -> None:
        self.port = port or free_port()
        self.target = f"{host}:{self.port}"
        server = {"listen": self.target, "metrics_listen": "127.0.0.1:0", **config.get("server", {})}
        config = {k: v for k, v in config.items() if k != "server"}
        path = workdir / f"server-{host}-{self.port}-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump({"server": server, **config}))
        self.lines: list[str] = []
        self.metrics_port = 0
        if command is None:  # the source tree
            command, environ = [sys.executable, "-m", "llm_service"], service_env(TEST_PROVIDER_KEY=SENTINEL_KEY, **env)
        else:  # an installed server, found without PYTHONPATH
            environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TEST_PROVIDER_KEY": SENTINEL_KEY, **env}
        self.proc = subprocess.Popen(
            [*command, "--config", str(path)],
            env=environ,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        channel = grpc.insecure_channel(self.target)
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        except grpc.FutureTimeoutError:
            self.proc.kill()
            self._reader.join(10)
            raise AssertionError(f"server did not start: {self.output[-2000:]}") from None
        finally:
            channel.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if '"msg": "serving"' in line or '"msg": "supervising"' in line:  # with workers, the supervisor serves /metrics
                self.metrics_port = int(json.loads(line).get("metrics_port", 0)) or self.metrics_port

    def logged(self, msg: str) -> list[dict[str, Any]]:
        """The JSON log lines with this message, so far."""
        return [json.loads(line) for line in list(self.lines) if f'"msg": "{msg}"' in line]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        """SIGTERM, wait, and return everything the process printed (stdout and stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self._reader.join(10)
        return self.output


def started_side_by_side(start: Callable[[Any], ServerProcess], items: Iterable[Any]) -> list[ServerProcess]:
    """Replicas started side by side (each spends seconds importing LiteLLM), in the items' order;
    if one fails to start, the others are stopped before the failure is raised."""
    with ThreadPoolExecutor() as pool:
        futures = [pool.submit(start, item) for item in items]
    failed = [e for f in futures if (e := f.exception()) is not None]
    if failed:
        for f in futures:
            if f.exception() is None:
                f.result().stop()
        raise failed[0]
    return [f.result() for f in futures]
