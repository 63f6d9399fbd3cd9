"""What the Kubernetes manifests promise, checked on the built overlays (make lint builds and validates them)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from llm_service.config import load_config
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def _build(overlay: str) -> dict[str, dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "make test installs Debian's kubernetes-client (kubectl with kustomize)"
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "kubernetes/overlays" / overlay)], check=True, capture_output=True, text=True
    )
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
    assert ports == {53, 443}


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
