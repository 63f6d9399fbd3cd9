"""The fixtures: the fake upstream, and a real gRPC server on loopback with a stub and a client for it.

Fixtures only; the helpers they are built from live in `tests/support/`, and tests import
those from there.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from fake_upstream import FakeUpstream
from llm_client import LLMClient, channel_options
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.servers import PATHS, ServerPath, ServerThread, on_path, service_config


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    """The fake upstream for the whole session."""
    upstream = FakeUpstream().start_in_thread()
    yield upstream
    upstream.stop_thread()


@pytest.fixture(autouse=True)
def _fresh_fake(request: pytest.FixtureRequest) -> None:
    """Each test starts with no queued scripts and no recorded requests."""
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


@pytest.fixture(scope="session", params=PATHS)
def server(fake: FakeUpstream, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    """A real server on loopback whose routes point at the fake upstream.

    Every test using it runs twice, its id saying the path: `fast-path` (the direct HTTP path
    where a route's wire format has one) and `litellm-path` (every route on LiteLLM's full path).
    """
    path: ServerPath = request.param
    srv = ServerThread(on_path(service_config(fake.base_url), path))
    yield srv
    srv.stop()


@pytest.fixture
def stub(server: ServerThread) -> Iterator[pb_grpc.LLMServiceStub]:
    """A raw generated stub on a plain channel (no client-side retries)."""
    channel = grpc.insecure_channel(server.target)
    yield pb_grpc.LLMServiceStub(channel)
    channel.close()


@pytest.fixture
def client(server: ServerThread) -> Iterator[LLMClient]:
    """The Python client, with channel retries off so attempt counts are exact."""
    with LLMClient(server.target, options=channel_options(retries=False)) as c:
        yield c
