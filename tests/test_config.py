"""Configuration: a bad file stops the server with a message naming the file, the key and the expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llm_service.config import DEFAULT_CONFIG_PATH, ConfigError, Secret, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
GOOD_ROUTE = {"model": "openai/gpt-4o-mini", "key": {"env": "K"}}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"routes": {}}, "routes: expected at least one route"),
        ({"routes": {"a": {"api_base": "http://x"}}}, "routes.a.model: expected a LiteLLM model string"),
        ({"routes": {"a": {**GOOD_ROUTE, "timeout_s": "soon"}}}, "routes.a.timeout_s: expected seconds > 0, got 'soon'"),
        ({"routes": {"a": {**GOOD_ROUTE, "api_base": "ftp://x"}}}, "routes.a.api_base: expected an http(s) URL"),
        (
            {"routes": {"a": {**GOOD_ROUTE, "key": {"env": "A", "file": "/f"}}}},
            "routes.a.key: expected exactly one of env or file",
        ),
        ({"routes": {"a": {**GOOD_ROUTE, "colour": "red"}}}, "routes.a.colour: expected one of"),
        ({"routes": {"a": {**GOOD_ROUTE, "fallbacks": ["b"]}}}, "routes.a.fallbacks: expected names of other routes"),
        ({"server": {"listen": "nowhere"}, "routes": {"a": GOOD_ROUTE}}, "server.listen: expected host:port"),
        ({"retry": {"max_delay_s": -1}, "routes": {"a": GOOD_ROUTE}}, "retry.max_delay_s: expected seconds >= 0"),
    ],
)
def test_bad_config_names_file_key_and_expectation(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "routes.yaml", {})
    assert str(info.value).startswith("routes.yaml: ")
    assert expected in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", {})


def test_server_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes:\n  a:\n    model: openai/x\n    timeout_s: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "llm_service", "--config", str(bad)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": f"{ROOT / 'service'}:{ROOT / 'clients/python/src'}"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{bad}: routes.a.timeout_s: expected seconds > 0, got -1.0" in proc.stderr


def test_keys_come_from_environment_or_file_and_never_print(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    cfg = parse_config(
        {"routes": {"env": GOOD_ROUTE, "file": {"model": "openai/x", "key": {"file": str(key_file)}}}},
        "c.yaml",
        {"K": "sk-from-env"},
    )
    assert cfg.routes["env"].key == Secret("sk-from-env")
    file_key = cfg.routes["file"].key
    assert file_key is not None and file_key.reveal() == "sk-from-file"
    assert "sk-from" not in repr(cfg) and "sk-from" not in str(cfg.routes["env"].key)


def test_bundled_config_is_valid_and_has_the_demo_route() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH, {})
    assert cfg.routes["demo"].ready and cfg.fake_upstream
    assert not cfg.routes["gpt-4o-mini"].ready
    assert load_config(DEFAULT_CONFIG_PATH, {"OPENAI_API_KEY": "sk-x"}).routes["gpt-4o-mini"].ready


def test_a_route_names_its_transport_and_the_old_fast_path_key_says_what_it_became() -> None:
    routes = {"r": {"model": "openai/x", "transport": "litellm"}}
    assert parse_config({"routes": routes}, "t.yaml", {}).routes["r"].transport == "litellm"
    assert parse_config({"routes": {"r": {"model": "openai/x"}}}, "t.yaml", {}).routes["r"].transport == "direct"
    with pytest.raises(ConfigError, match=r"routes\.r\.transport: expected \"direct\" or \"litellm\", got 'fast'"):
        parse_config({"routes": {"r": {"model": "openai/x", "transport": "fast"}}}, "t.yaml", {})
    with pytest.raises(ConfigError, match=r"routes\.r\.fast_path: expected transport: direct or transport: litellm"):
        parse_config({"routes": {"r": {"model": "openai/x", "fast_path": False}}}, "t.yaml", {})


def test_a_route_of_several_deployments_is_validated_naming_route_and_deployment() -> None:
    route = {
        "model": "openai/x",
        "deployments": [{"name": "a", "key": {"env": "A"}, "weight": 3}, {"name": "b", "api_base": "https://b.example/v1"}],
    }
    parsed = parse_config({"routes": {"r": route}}, "t.yaml", {"A": "sk-a"}).routes["r"]
    a, b = (parsed.of(d) for d in parsed.deployments)
    assert (a.deployment, a.key is not None and a.key.reveal(), parsed.deployments[0].weight) == ("a", "sk-a", 3)
    assert (b.api_base, b.model) == ("https://b.example/v1", "openai/x"), "what a deployment leaves out is the route's"
    twice = {"model": "openai/x", "deployments": [{"name": "a"}, {"name": "a"}]}
    with pytest.raises(ConfigError, match=r"routes\.r\.deployments\[1\]\.name: expected a name of its own in this route"):
        parse_config({"routes": {"r": twice}}, "t.yaml", {})
    with pytest.raises(ConfigError, match=r"routes\.r\.deployments\[0\]\.weight: expected an integer > 0, got 0"):
        parse_config({"routes": {"r": {"model": "openai/x", "deployments": [{"name": "a", "weight": 0}]}}}, "t.yaml", {})
