"""A real Prometheus scrapes a real server: counters equal the upstream's truth, alert rules and
dashboard queries evaluate without error against live data.

Prometheus comes from Debian's `prometheus` package, which `make test` installs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fake_upstream import FakeUpstream, Script, Usage
from llm_service.tracing import TracingSettings
from tests.support.messages import user_msg
from tests.support.otlp import OtlpGrpcReceiver
from tests.support.paths import ROOT
from tests.support.servers import ServerThread, custom_server, free_port

ALERTS = ROOT / "deploy/prometheus/alerts.yaml"
DASHBOARD = ROOT / "deploy/grafana/llm-service.json"


class Prometheus:
    """A Prometheus server on loopback, scraping one target every second."""

    def __init__(self, target: str, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "Prometheus is not installed: `make test` installs Debian's prometheus package"
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [{"job_name": "llm-service", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
                "--enable-feature=exemplar-storage",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._wait(lambda: self.api("status/buildinfo")["status"] == "success", "Prometheus to start")

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())

    def query(self, expr: str) -> dict[str, Any]:
        """The raw API answer for an instant query (status "success" or "error")."""
        try:
            return dict(self.api("query", query=expr))
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            return dict(json.loads(exc.read()))

    def value(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def _wait(self, ready: Any, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"Prometheus exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    def wait_for_value(self, expr: str, expected: float) -> None:
        self._wait(lambda: self.value(expr) == expected, f"{expr} == {expected} (last: {self.value(expr)})")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def receiver() -> Iterator[OtlpGrpcReceiver]:
    r = OtlpGrpcReceiver()
    yield r
    r.stop()


@pytest.fixture
def monitored(fake: FakeUpstream, tmp_path: Path, receiver: OtlpGrpcReceiver) -> Iterator[tuple[ServerThread, Any, Prometheus]]:
    """The server traces every call (its latency histograms then carry exemplars, which the scrape must take)."""
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "20",
    }
    tracing = TracingSettings.from_environ(environ)
    with custom_server(fake, tracing=tracing) as (srv, client):
        assert srv.running is not None
        prom = Prometheus(f"127.0.0.1:{srv.running.metrics_port}", tmp_path)
        try:
            yield srv, client, prom
        finally:
            prom.stop()


def _exemplar_trace_ids(prom: Prometheus) -> set[str]:
    now = time.time()
    answer = prom.api("query_exemplars", query="llm_request_duration_seconds_bucket", start=str(now - 600), end=str(now + 60))
    return {e["labels"]["trace_id"] for series in answer["data"] for e in series["exemplars"]}


def _alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return [e.replace("$__rate_interval", "1m").replace('"$route"', '".*"') for e in exprs]


def test_prometheus_sees_the_upstreams_tokens_and_retries(
    monitored: tuple[ServerThread, Any, Prometheus], fake: FakeUpstream, receiver: OtlpGrpcReceiver
) -> None:
    _, client, prom = monitored
    prom.wait_for_value('up{job="llm-service"}', 1)  # scraped once before any traffic: counters start at 0
    fake.script(
        Script(status=429),
        Script(text="one", usage=Usage(input=120, output=30, cached=20)),
        Script(status=503),
        Script(text="two", usage=Usage(input=80, output=10)),
        Script(text="three", chunk_delay_s=0.01, usage=Usage(input=5, output=3)),
        Script(status=401),
    )
    client.complete("openai", [user_msg()], timeout=30)
    client.complete("openai", [user_msg()], timeout=30)
    list(client.stream("openai", [user_msg()], timeout=30))
    with pytest.raises(Exception):  # noqa: B017 - any failure will do: this call feeds the auth-failure alert
        client.complete("openai", [user_msg()], timeout=30)

    reported = [r.extra["usage"] for r in fake.requests() if "usage" in r.extra]
    retried = sum(1 for r in fake.requests() if r.extra["status"] in (429, 503))
    prom.wait_for_value('sum(llm_tokens_total{kind="input"})', sum(u["input"] for u in reported))
    prom.wait_for_value('sum(llm_tokens_total{kind="output"})', sum(u["output"] for u in reported))
    prom.wait_for_value('sum(llm_tokens_total{kind="cached_input"})', sum(u["cached"] for u in reported))
    prom.wait_for_value("sum(llm_retries_total)", retried)
    prom.wait_for_value('sum(llm_retries_total{reason="rate_limit"})', 1)
    prom.wait_for_value('sum(grpc_server_handled_total{grpc_method="Complete", grpc_code="FAILED_PRECONDITION"})', 1)

    # Every alert and every dashboard query evaluates without error against the live data.
    for name, expr in _alert_exprs().items():
        answer = prom.query(expr)
        assert answer["status"] == "success", (name, answer)
    for expr in _dashboard_exprs():
        answer = prom.query(expr)
        assert answer["status"] == "success", (expr, answer)
    # The rule files loaded, and the rules evaluated without error on the live data.
    prom._wait(
        lambda: (
            all(r["health"] == "ok" for g in prom.api("rules")["data"]["groups"] for r in g["rules"])
            and len([r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]) == len(_alert_exprs())
        ),
        "the alert rules to be evaluated",
    )
    # The latency histogram's exemplars reached Prometheus, each naming the trace of one of these calls.
    prom._wait(lambda: bool(_exemplar_trace_ids(prom)), "exemplars on llm_request_duration_seconds")
    linked = _exemplar_trace_ids(prom)
    receiver.wait_for(lambda spans: linked <= {s.trace_id for s in spans if s.name.startswith("llm.v1.LLMService/")})
    # The auth failure makes its alert pending (it fires after its `for`).
    prom._wait(
        lambda: any(a["labels"]["alertname"] == "LLMServiceUpstreamAuthFailures" for a in prom.api("alerts")["data"]["alerts"]),
        "LLMServiceUpstreamAuthFailures to be pending",
    )
