"""Provider keys from files (Kubernetes Secrets mounted as files), re-read when they change."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest

from fake_upstream import FakeUpstream
from llm_client import LLMServiceError
from tests.support.messages import user_msg
from tests.support.servers import custom_server


def _write(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    bump = time.time_ns() + 2_000_000_000  # a distinct mtime even on coarse file systems
    os.utime(path, ns=(bump, bump))


def test_a_key_file_is_re_read_when_it_changes(fake: FakeUpstream, tmp_path: Path) -> None:
    key_file = tmp_path / "openai-key"
    _write(key_file, "sk-first-key")
    routes = {"filed": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"file": str(key_file)}}}
    with custom_server(fake, routes=routes) as (_, client):
        client.complete("filed", [user_msg()], timeout=30)
        _write(key_file, "sk-rotated-key")
        time.sleep(1.1)  # checked at most once a second
        client.complete("filed", [user_msg()], timeout=30)
    assert [r.headers["Authorization"] for r in fake.requests()] == ["Bearer sk-first-key", "Bearer sk-rotated-key"]


def test_a_route_becomes_ready_when_its_key_file_appears(fake: FakeUpstream, tmp_path: Path) -> None:
    key_file = tmp_path / "late-key"
    routes = {"late": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"file": str(key_file)}}}
    with custom_server(fake, routes=routes) as (_, client):
        assert not next(m for m in client.models() if m.name == "late").ready
        with pytest.raises(LLMServiceError) as info:
            client.complete("late", [user_msg()], timeout=30)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and str(key_file) in info.value.message
        _write(key_file, "sk-arrived")
        time.sleep(1.1)
        assert next(m for m in client.models() if m.name == "late").ready
        assert client.complete("late", [user_msg()], timeout=30).text
    assert fake.requests()[-1].headers["Authorization"] == "Bearer sk-arrived"
