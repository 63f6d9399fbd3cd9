"""What the Kubernetes manifests promise, checked on the built overlays (make lint builds and validates them)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from llm_service.config import load_config
from llm_service.tracing import TracingSettings
from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"


def _build(overlay: str) -> dict[str, dict[str, Any]]:
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    assert kubectl, "make test needs kubectl with kustomize v5 (the Makefile installs one when none is on PATH)"
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes/overlays" / overlay)], check=True, capture_output=True, text=True
    )
    assert "deprecated" not in out.stderr.lower(), out.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out.stdout) if d}


@pytest.fixture(scope="module", params=["dev", "prod"])
def built(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    return _build(request.param)


def _deployment(built: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return built["Deployment/llm-service"]


def test_deployment_is_restricted_probed_and_drains_longer_than_the_server(built: dict[str, dict[str, Any]]) -> None:
    dep = _deployment(built)
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container["securityContext"]
    assert (
        sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051, probe
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    config = yaml.safe_load((DEPLOY / "kubernetes/base/config.yaml").read_text())
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config["server"]["drain_grace_s"]
    assert config["server"]["max_connection_age_grace_s"] > max(r.get("timeout_s", 600) for r in config["routes"].values())
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert "subPath" not in mounts["secrets"], "keys mounted as a directory, so Secret updates reach the files"
    assert not any("valueFrom" in e for e in container.get("env", [])), "no keys in environment variables"


def test_services_name_the_grpc_port_and_a_headless_one_exists(built: dict[str, dict[str, Any]]) -> None:
    svc, headless = built["Service/llm-service"], built["Service/llm-service-headless"]
    grpc_port = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["appProtocol"] == "grpc" and svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert headless["spec"]["clusterIP"] == "None"
    monitor = built["ServiceMonitor/llm-service"]
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}


def test_network_policy_never_allows_the_metadata_address_or_private_ranges(built: dict[str, dict[str, Any]]) -> None:
    policy = built["NetworkPolicy/llm-service"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    blocks = [to["ipBlock"] for rule in policy["egress"] for to in rule.get("to", []) if "ipBlock" in to]
    for block in blocks:
        assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block["except"])
    ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    # DNS, HTTPS, OTLP (to the collector only: see the tracing test), Redis and Sentinel (to redis pods only)
    assert ports == {53, 443, 4317, 4318, 6379, 26379}


def test_the_prometheus_rule_carries_the_alert_rules(built: dict[str, dict[str, Any]]) -> None:
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yaml").read_text())
    assert built["PrometheusRule/llm-service"]["spec"] == alerts


def test_only_dev_ships_the_example_secret_and_it_holds_placeholders() -> None:
    dev, prod = _build("dev"), _build("prod")
    assert "Secret/llm-service-secrets" not in prod
    secret = dev["Secret/llm-service-secrets"]["stringData"]
    assert all(v.startswith("REPLACE-") for k, v in secret.items() if k.endswith("-key"))
    assert set(k for k in secret if k.endswith("-key")) == {
        p.rsplit("/", 1)[1]
        for p in (
            r["key"]["file"] for r in yaml.safe_load((DEPLOY / "kubernetes/base/config.yaml").read_text())["routes"].values()
        )
    }


def test_the_routes_config_loads() -> None:
    config = load_config(DEPLOY / "kubernetes/base/config.yaml", {})
    assert config.security.tokens_file and all(r.key_source and r.key_source.file for r in config.routes.values())


# --- NetworkPolicy, evaluated -------------------------------------------------------------------
# The rendered policies are interpreted with Kubernetes' rules (a pod selected by any policy of a
# direction is isolated in it; traffic passes when some rule's peer and port both match), so the
# test sees what a policy-enforcing CNI would do, not what the YAML looks like.


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace, its labels, the pod's labels) or, with only `ip`, an address outside the cluster."""

    namespace: str = ""
    namespace_labels: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not other.ip:
            return False
        addr = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if not other.namespace:
        return False
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns_sel is None and other.namespace != policy_ns:
        return False
    return _selects(ns_sel, other.namespace_labels) and _selects(pod_sel, other.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    return not ports or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def allowed(
    built: dict[str, dict[str, Any]], pod: Endpoint, other: Endpoint, direction: str, port: int, protocol: str = "TCP"
) -> bool:
    """Whether `pod` may receive from (Ingress) or send to (Egress) `other` on port/protocol."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolated = False
    for name, doc in built.items():
        if not name.startswith("NetworkPolicy/"):
            continue
        ns, spec = doc["metadata"]["namespace"], doc["spec"]
        if ns != pod.namespace or not _selects(spec.get("podSelector") or {}, pod.labels):
            continue
        if direction not in spec.get("policyTypes", ["Ingress"]):
            continue
        isolated = True
        for rule in spec.get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(p, ns, other) for p in peers)) and _port_matches(
                rule.get("ports"), port, protocol
            ):
                return True
    return not isolated


def _service_pod(built: dict[str, dict[str, Any]]) -> Endpoint:
    dep = built["Deployment/llm-service"]
    ns = dep["metadata"]["namespace"]
    return Endpoint(ns, {"kubernetes.io/metadata.name": ns}, dep["spec"]["template"]["metadata"]["labels"])


def _pod(namespace: str, ns_labels: dict[str, str] | None = None, **labels: str) -> Endpoint:
    return Endpoint(namespace, {"kubernetes.io/metadata.name": namespace, **(ns_labels or {})}, dict(labels))


KUBE_DNS = _pod("kube-system", **{"k8s-app": "kube-dns"})
PROMETHEUS = _pod("monitoring", **{"app.kubernetes.io/name": "prometheus"})
CLIENT = _pod("team-a", {"llm-service.io/client": "true"}, app="checkout")


def test_network_policy_lets_through_what_the_service_needs(built: dict[str, dict[str, Any]]) -> None:
    pod = _service_pod(built)
    assert allowed(built, pod, CLIENT, "Ingress", 50051), "a client namespace reaches gRPC"
    assert allowed(built, pod, PROMETHEUS, "Ingress", 9464), "Prometheus in monitoring scrapes /metrics"
    assert allowed(built, pod, KUBE_DNS, "Egress", 53, "UDP"), "DNS over UDP to kube-dns"
    assert allowed(built, pod, KUBE_DNS, "Egress", 53, "TCP"), "DNS over TCP to kube-dns"
    assert allowed(built, pod, Endpoint(ip="104.18.6.192"), "Egress", 443), "HTTPS to a provider"


COLLECTOR = _pod("monitoring", **{"app.kubernetes.io/name": "opentelemetry-collector"})


def test_tracing_is_ready_for_the_collector_and_off_until_an_overlay_turns_it_on(built: dict[str, dict[str, Any]]) -> None:
    [container] = _deployment(built)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert TracingSettings.from_environ(env) is None
    on = TracingSettings.from_environ({**env, "OTEL_SDK_DISABLED": "false"})
    assert on is not None and (on.protocol, on.endpoint) == ("grpc", "http://otel-collector.monitoring.svc.cluster.local:4317")
    pod = _service_pod(built)
    assert allowed(built, pod, COLLECTOR, "Egress", 4317) and allowed(built, pod, COLLECTOR, "Egress", 4318)
    assert not allowed(built, pod, _pod("monitoring", app="other"), "Egress", 4317), "OTLP only to the collector"


def test_the_quota_counters_redis_in_the_namespace_is_reachable_and_nothing_else_on_its_ports(
    built: dict[str, dict[str, Any]],
) -> None:
    pod = _service_pod(built)
    redis = _pod(pod.namespace, **{"app.kubernetes.io/name": "redis"})
    assert allowed(built, pod, redis, "Egress", 6379) and allowed(built, pod, redis, "Egress", 26379), "Redis and Sentinel"
    assert not allowed(built, pod, _pod(pod.namespace, app="other"), "Egress", 6379), "Redis ports to another pod"
    assert not allowed(built, pod, _pod("elsewhere", **{"app.kubernetes.io/name": "redis"}), "Egress", 6379), "another namespace"
    assert not allowed(built, pod, Endpoint(ip="104.18.6.192"), "Egress", 6379), "Redis on the internet"


def test_network_policy_refuses_what_the_service_must_not_see(built: dict[str, dict[str, Any]]) -> None:
    pod = _service_pod(built)
    assert not allowed(built, pod, _pod("team-b", app="checkout"), "Ingress", 50051), "namespace without the client label"
    assert not allowed(built, pod, CLIENT, "Ingress", 9464), "a client scraping metrics"
    assert not allowed(built, pod, _pod("other", **{"app.kubernetes.io/name": "prometheus"}), "Ingress", 9464)
    assert not allowed(built, pod, _pod("kube-system", app="other"), "Egress", 53, "UDP"), "DNS to a pod that is not kube-dns"
    for ip, port in (("169.254.169.254", 80), ("169.254.169.254", 443), ("10.0.0.5", 443), ("192.168.1.1", 443)):
        assert not allowed(built, pod, Endpoint(ip=ip), "Egress", port), f"{ip}:{port}"
    assert not allowed(built, pod, Endpoint(ip="104.18.6.192"), "Egress", 80), "plain HTTP out"


def test_the_policy_evaluator_sees_a_peer_selector_rewritten_by_labels(built: dict[str, dict[str, Any]]) -> None:
    """The failure commonLabels caused: the kube-dns peer demanding the service's own labels."""
    broken = {k: v for k, v in built.items()}
    policy = yaml.safe_load(yaml.safe_dump(built["NetworkPolicy/llm-service"]))
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            if "podSelector" in peer:
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "llm-service"
    broken["NetworkPolicy/llm-service"] = policy
    assert not allowed(broken, _service_pod(broken), KUBE_DNS, "Egress", 53, "UDP")
