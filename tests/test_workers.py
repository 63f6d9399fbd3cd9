"""Several worker processes on one port (`server.workers`, `--workers`): the supervisor in workers.py.

Real processes: `python -m llm_service` with two workers, each a whole server bound with
SO_REUSEPORT; the calls come over separate TCP connections, which the kernel spreads over
the workers; /metrics (served by the supervisor) sums them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fake_upstream import FakeUpstream, Script, Usage
from llm_client import LLMClient, channel_options
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import ServerProcess, free_port, service_env

WORKERS = 2


def _config(fake: FakeUpstream, model: str = "openai/test-model") -> dict[str, Any]:
    route = {"model": model, "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}
    return {"routes": {"chat": route}, "server": {"workers": WORKERS, "drain_grace_s": 10}}


def _config_file(tmp_path: Path, fake: FakeUpstream, **server: Any) -> Path:
    path = tmp_path / f"config-{time.monotonic_ns()}.yaml"
    config = _config(fake)
    config["server"] = {"metrics_listen": "", **server}
    path.write_text(yaml.safe_dump(config))
    return path


def _run(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """The service to its end, for settings it refuses."""
    argv = [sys.executable, "-m", "llm_service", "--config", str(config), *flags]
    return subprocess.run(argv, env=service_env(), capture_output=True, text=True, timeout=120)


def _until(done: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _serving(server: ServerProcess) -> dict[int, int]:
    """Worker index -> pid of its latest start."""
    return {line["worker"]: line["pid"] for line in server.logged("serving")}


def _all_serving(server: ServerProcess) -> None:
    _until(lambda: len(_serving(server)) == WORKERS, "every worker to serve")


def _own_connection_client(target: str) -> LLMClient:
    """A client on a TCP connection of its own (gRPC otherwise shares one subchannel per target in a process)."""
    return LLMClient(target, options=[*channel_options(retries=False), ("grpc.use_local_subchannel_pool", 1)])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def supervised(fake: FakeUpstream, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(_config(fake), tmp_path)
    try:
        _all_serving(server)
        yield server
    finally:
        server.stop()


def test_workers_share_the_port_and_metrics_sum_over_them(supervised: ServerProcess, fake: FakeUpstream) -> None:
    calls = 40
    fake.script(*[Script(text=f"answer {i}", usage=Usage(input=3, output=2)) for i in range(calls)])
    for _ in range(calls):
        with _own_connection_client(supervised.target) as client:
            assert client.complete("chat", [user_msg()], timeout=30).text.startswith("answer")
    answered = Counter(line["worker"] for line in supervised.logged("rpc") if line.get("code") == "OK")
    pids = _serving(supervised)
    assert sorted(answered) == list(range(WORKERS)), f"calls per worker: {answered}"  # both took calls
    assert len(set(pids.values())) == WORKERS and supervised.pid not in pids.values()
    samples = scrape(supervised.metrics_port)  # the supervisor's /metrics: the sum over the workers
    assert total(samples, "llm_requests_total", rpc="Complete", code="OK") == calls
    assert total(samples, "llm_tokens_total", kind="input") == 3 * calls
    assert total(samples, "llm_tokens_total", kind="output") == 2 * calls
    assert total(samples, "llm_inflight_requests") == 0
    assert total(samples, "llm_service_build_info") == 1


def test_a_worker_that_dies_is_replaced_and_its_counts_are_kept(supervised: ServerProcess, fake: FakeUpstream) -> None:
    def complete_on_new_connections(n: int) -> None:
        for _ in range(n):
            with _own_connection_client(supervised.target) as client:
                client.complete("chat", [user_msg()], timeout=30)

    complete_on_new_connections(10)
    victim = _serving(supervised)[0]
    os.kill(victim, signal.SIGKILL)
    _until(lambda: _serving(supervised)[0] != victim, "worker 0 to be replaced")
    complete_on_new_connections(10)
    exited = supervised.logged("worker exited")
    assert [(e["worker"], e["pid"], e["exit_code"]) for e in exited] == [(0, victim, -signal.SIGKILL)]
    samples = scrape(supervised.metrics_port)
    assert total(samples, "llm_requests_total", rpc="Complete", code="OK") == 20  # the dead worker's calls still count
    assert total(samples, "llm_inflight_requests") == 0


def test_sigterm_drains_every_worker_before_the_supervisor_exits(fake: FakeUpstream, tmp_path: Path) -> None:
    server = ServerProcess(_config(fake, "openai/m:slow"), tmp_path)  # each stream takes about 2 s
    _all_serving(server)
    workers = list(_serving(server).values())
    results: list[str] = []

    def stream() -> None:
        with _own_connection_client(server.target) as client:
            events = list(client.stream("chat", [user_msg()], timeout=60))
            results.append(events[-1].kind)

    threads = [threading.Thread(target=stream) for _ in range(6)]
    for t in threads:
        t.start()
    _until(lambda: len(fake.requests()) >= 6, "every stream to reach the upstream")
    output = server.stop()  # SIGTERM to the supervisor, which passes it on
    for t in threads:
        t.join(30)
    assert results == ["finish"] * 6, output[-2000:]
    assert server.proc.returncode == 0
    assert not any(_alive(pid) for pid in workers)
    assert len(server.logged("stopped")) == WORKERS + 1  # each worker drained, then the supervisor


def test_workers_do_not_outlive_a_killed_supervisor(supervised: ServerProcess) -> None:
    workers = list(_serving(supervised).values())
    supervised.proc.kill()  # SIGKILL: no chance to stop them itself
    supervised.proc.wait(10)
    _until(lambda: not any(_alive(pid) for pid in workers), "the workers to exit (SIGTERM from the kernel)", timeout_s=30)


def test_a_restarted_supervisor_starts_its_counts_afresh_in_a_kept_metrics_folder(fake: FakeUpstream, tmp_path: Path) -> None:
    """A container restart keeps the pod's emptyDir: the supervisor empties it, or old counts would be summed in."""
    folder = tmp_path / "kept" / "prometheus"  # not there yet: made at start
    config = _config(fake)
    del config["server"]["workers"]  # from the environment this time
    for calls in (5, 2):
        server = ServerProcess(config, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(folder), LLM_SERVICE_WORKERS=str(WORKERS))
        try:
            _all_serving(server)
            for _ in range(calls):
                with _own_connection_client(server.target) as client:
                    client.complete("chat", [user_msg()], timeout=30)
            assert total(scrape(server.metrics_port), "llm_requests_total", rpc="Complete", code="OK") == calls
        finally:
            server.stop()
        assert any(folder.glob("*.db"))  # a folder it was given is left in place


def test_a_port_already_taken_ends_the_supervisor_instead_of_restarting_forever(fake: FakeUpstream, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may share it
        taken.listen()
        port = taken.getsockname()[1]
        out = _run(_config_file(tmp_path, fake, listen=f"127.0.0.1:{port}", workers=2))
    assert out.returncode == 1
    assert "a worker cannot listen on the port; giving up" in out.stderr
    assert out.stderr.count('"msg": "worker exited"') == 1, "no worker is started again in its place"


@pytest.mark.parametrize(
    ("server", "flags", "message"),
    [
        ({"workers": 0}, [], "server.workers: expected an integer from 1 to 64"),
        ({"workers": 2, "listen": "127.0.0.1:0"}, [], "listen needs a fixed port, not 127.0.0.1:0"),
        ({}, ["--workers", "65"], "--workers must be from 1 to 64, not 65"),
    ],
)
def test_bad_worker_settings_are_refused_at_start(
    fake: FakeUpstream, tmp_path: Path, server: dict[str, Any], flags: list[str], message: str
) -> None:
    out = _run(_config_file(tmp_path, fake, **server), *flags)
    assert out.returncode == 2
    assert message in out.stderr


def test_one_worker_binds_exclusively(fake: FakeUpstream, tmp_path: Path) -> None:
    """The default single process does not share its port: a second server on it fails instead of splitting traffic."""
    config = _config(fake)
    config["server"]["workers"] = 1
    first = ServerProcess(config, tmp_path)
    try:
        out = _run(_config_file(tmp_path, fake, listen=first.target))
        assert out.returncode != 0
        assert f"cannot listen on {first.target}" in out.stderr
        with _own_connection_client(first.target) as client:
            assert client.models()  # the first server still answers
    finally:
        first.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_taken_metrics_port_is_one_line_not_a_traceback(fake: FakeUpstream, tmp_path: Path, workers: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = f"127.0.0.1:{taken.getsockname()[1]}"
        out = _run(_config_file(tmp_path, fake, listen=f"127.0.0.1:{free_port()}", metrics_listen=metrics, workers=workers))
    assert out.returncode == 1
    assert f"llm_service: cannot serve metrics on {metrics} (server.metrics_listen): address already in use" in out.stderr
    assert "Traceback" not in out.stderr
