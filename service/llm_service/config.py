"""Configuration: one YAML file read once at start-up into frozen, validated objects.

A bad file stops the server with a ConfigError naming the file, the key and what
was expected. The environment is read here and only here (key variables and
CLAUDE_CODE_ENTRYPOINT), from a mapping passed in, so tests give a clean one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_service.core import provider_tools
from llm_service.core.errors import InvalidRequest
from llm_service.core.reasoning import reasoning_kwargs
from llm_service.core.request import resolve_model
from llm_service.core.settings import (
    COUNT,
    POSITIVE_INT,
    POSITIVE_SECONDS,
    PROVIDER_TOOL_NAMES,
    SECONDS,
    Check,
    ClaudeCodeConfig,
    CoreSettings,
    Deployment,
    FileSecret,
    KeySource,
    Price,
    ProviderTool,
    ReasoningDefaults,
    ResilienceConfig,
    RetryConfig,
    Route,
    Secret,
    setting,
)
from llm_service.core.types import CallRequest
from llm_service.quotas.limits import Limits, QuotaRules, QuotasConfig

__all__ = [
    "ClaudeCodeConfig",
    "Config",
    "ConfigError",
    "FileSecret",
    "KeySource",
    "LimitsConfig",
    "QuotasConfig",
    "ResilienceConfig",
    "RetryConfig",
    "Route",
    "Secret",
    "SecurityConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
    "quota_rules",
]

ROUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


MAX_WORKERS = 64


class ConfigError(Exception):
    """The configuration file is invalid; the message names file, key and expectation."""


def _host_port(v: str) -> bool:
    return bool(re.fullmatch(r"\[?[A-Za-z0-9.:_-]+\]?:\d{1,5}", v))


HOST_PORT = Check("host:port", _host_port)
BYTES = Check("bytes > 0", lambda v: v > 0)


@dataclass(frozen=True)
class ServerConfig:
    """The gRPC server's own settings."""

    listen: str = setting("127.0.0.1:50051", HOST_PORT)
    drain_grace_s: float = setting(30.0, SECONDS)
    max_retries_cap: int = setting(10, COUNT)
    log_level: str = setting("INFO", Check("DEBUG, INFO, WARNING or ERROR", lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR")))
    max_metadata_entries: int = setting(16, COUNT)
    # Prometheus /metrics; "" turns it off
    metrics_listen: str = setting("127.0.0.1:9464", Check('host:port, or "" for no metrics', lambda v: v == "" or _host_port(v)))
    # gRFC A9: connections are closed after this age (clients reconnect and re-resolve, so new
    # replicas get traffic after a scale-up), with a grace longer than the longest stream.
    max_connection_age_s: float = setting(300.0, POSITIVE_SECONDS)
    max_connection_age_grace_s: float = setting(660.0, POSITIVE_SECONDS)
    # Worker processes sharing the port (SO_REUSEPORT); above 1, a supervisor runs them (workers.py).
    workers: int = setting(1, Check(f"an integer from 1 to {MAX_WORKERS}", lambda v: 1 <= v <= MAX_WORKERS))
    # A stream whose writes fall behind the provider sends the backlog's text as one delta (relay.py).
    stream_coalescing: bool = setting(True, Check("true or false"))


@dataclass(frozen=True)
class LimitsConfig:
    """What one process accepts: request size and shape, and concurrent RPCs."""

    max_request_bytes: int = setting(16 * 1024 * 1024, BYTES)
    max_messages: int = setting(1000, POSITIVE_INT)
    max_tools: int = setting(128, COUNT)
    max_tokens: int = setting(200_000, POSITIVE_INT)
    max_concurrent_rpcs: int = setting(512, POSITIVE_INT)  # beyond it, calls are shed at once (RESOURCE_EXHAUSTED)
    shed_retry_after_s: float = setting(1.0, SECONDS)
    max_json_depth: int = setting(64, POSITIVE_INT)  # nesting of tool schemas, tool-call arguments and response schemas
    max_parts: int = setting(1000, POSITIVE_INT)  # content parts in one message
    max_tool_calls: int = setting(256, POSITIVE_INT)  # tool calls in one assistant message
    max_stop_sequences: int = setting(16, COUNT)
    max_inflight_request_bytes: int = setting(64 * 1024 * 1024, BYTES)  # requests over 256 KiB held at once, per process
    max_document_bytes: int = setting(10 * 1024 * 1024, BYTES)  # one document's bytes
    max_documents: int = setting(20, COUNT)  # documents in one request
    max_embed_inputs: int = setting(10_000, POSITIVE_INT)  # inputs in one Embed request
    max_embed_input_bytes: int = setting(8 * 1024 * 1024, BYTES)  # UTF-8 bytes of one Embed request's inputs, summed


@dataclass(frozen=True)
class SecurityConfig:
    """Who may call: bearer tokens (a hashed tokens file) and/or mutual TLS; server TLS."""

    tokens_file: str = ""
    open_services: tuple[str, ...] = ("grpc.health.v1.Health",)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # set: clients must present a certificate signed by this CA

    @property
    def authenticates(self) -> bool:
        return bool(self.tokens_file or self.tls_client_ca_file)


@dataclass(frozen=True)
class Config:
    """The whole configuration."""

    source: str
    server: ServerConfig
    retry: RetryConfig
    claude_code: ClaudeCodeConfig
    hive_api_base: str
    routes: Mapping[str, Route]
    fake_upstream: str = ""
    debug_dump_dir: str = ""
    debug_dump_keep: int = 50
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)
    quotas: QuotasConfig = field(default_factory=QuotasConfig)

    def route(self, name: str) -> Route | None:
        """The route of that name, or None."""
        return self.routes.get(name)

    def core(self) -> CoreSettings:
        """What the provider core is configured with."""
        return CoreSettings(
            routes=self.routes,
            retry=self.retry,
            resilience=self.resilience,
            claude_code=self.claude_code,
            hive_api_base=self.hive_api_base,
            max_retries_cap=self.server.max_retries_cap,
            debug_dump_dir=self.debug_dump_dir,
            debug_dump_keep=self.debug_dump_keep,
        )


_KINDS: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "int | None": int,
    "float | None": float,
    "bool | None": bool,
}


class _Reader:
    """Typed access to one YAML mapping, with errors that name the file and key."""

    def __init__(self, source: str, data: Any, where: str) -> None:
        self.source = source
        self.where = where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", "a mapping", data)
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, expected: str, got: Any) -> None:
        key = self.key(name) if name else (self.where or "(top level)")
        raise ConfigError(f"{self.source}: {key}: expected {expected}, got {got!r}")

    def get(self, name: str, kind: type, default: Any, expected: str, check: Any = None) -> Any:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(name, expected, value)
        if check is not None and not check(value):
            self.fail(name, expected, value)
        return value

    def settings(self, cls: type[Any], **given: Any) -> Any:
        """An instance of cls: each of its `setting` fields read from this mapping (default and
        check from the field), the others given."""
        values = dict(given)
        for f in dataclasses.fields(cls):
            check = f.metadata.get("check")
            if check is not None:
                values[f.name] = self.get(f.name, _KINDS[str(f.type)], f.default, check.expected, check.test)
        return cls(**values)

    def sub(self, name: str) -> _Reader:
        self.used.add(name)
        return _Reader(self.source, self.data.get(name), self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(unknown[0], f"one of {sorted(self.used)}", unknown[0])


def load_config(path: str | Path, environ: Mapping[str, str]) -> Config:
    """Read and validate the YAML file at path; keys are taken from environ or files."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse_config(raw, source, environ)


def parse_config(raw: Any, source: str, environ: Mapping[str, str]) -> Config:
    """Validate an already parsed YAML document."""
    top = _Reader(source, raw, "")
    sections = {}
    for name, cls in (
        ("server", ServerConfig),
        ("retry", RetryConfig),
        ("claude_code", ClaudeCodeConfig),
        ("limits", LimitsConfig),
        ("resilience", ResilienceConfig),
    ):
        reader = top.sub(name)
        sections[name] = reader.settings(cls)
        reader.done()
    server, retry, limits, resilience = sections["server"], sections["retry"], sections["limits"], sections["resilience"]
    cc = sections["claude_code"]
    entrypoint = environ.get("CLAUDE_CODE_ENTRYPOINT", "").strip()
    if entrypoint:
        cc = dataclasses.replace(cc, entrypoint=entrypoint)
    au = top.sub("auth")
    tokens_file = au.get("tokens_file", str, "", "a file path")
    open_services = au.get("open_services", list, ["grpc.health.v1.Health"], "a list of gRPC service names")
    if not all(isinstance(v, str) for v in open_services):
        au.fail("open_services", "a list of gRPC service names", open_services)
    au.done()
    tl = top.sub("tls")
    cert = tl.get("cert_file", str, "", "a PEM file path")
    key = tl.get("key_file", str, "", "a PEM file path")
    client_ca = tl.get("client_ca_file", str, "", "a PEM file path")
    if bool(cert) != bool(key):
        tl.fail("cert_file", "cert_file and key_file together", cert or key)
    if client_ca and not cert:
        tl.fail("client_ca_file", "server TLS (cert_file, key_file) for mutual TLS", client_ca)
    tl.done()
    security = SecurityConfig(tokens_file, tuple(open_services), cert, key, client_ca)
    dbg = top.sub("debug_dumps")
    dump_dir = dbg.get("dir", str, "", "a folder path")
    dump_keep = dbg.get("keep", int, 50, POSITIVE_INT.expected, POSITIVE_INT.test)
    dbg.done()
    dev = top.sub("dev")
    fake = dev.get("fake_upstream", str, "", "host:port", _host_port)
    dev.done()
    hive_api_base = top.get("hive_api_base", str, "", "a URL")
    routes_reader = top.sub("routes")
    routes: dict[str, Route] = {}
    for name in routes_reader.data:
        routes_reader.used.add(name)
        if not isinstance(name, str) or not ROUTE_NAME_RE.match(name):
            routes_reader.fail(str(name), "a route name of letters, digits and . _ : -", name)
        routes[name] = _parse_route(routes_reader.sub(name), name, environ)
    if not routes:
        top.fail("routes", "at least one route", raw.get("routes") if isinstance(raw, dict) else None)
    for route in routes.values():
        for fb in route.fallbacks:
            if fb not in routes or fb == route.name:
                raise ConfigError(f"{source}: routes.{route.name}.fallbacks: expected names of other routes, got {fb!r}")
    quotas = _quotas(top.sub("quotas"))
    for who, rules in (("default", quotas.default), *((f"callers.{n}", r) for n, r in quotas.callers.items())):
        unknown = sorted(set(rules.routes) - set(routes))
        if unknown:
            raise ConfigError(f"{source}: quotas.{who}.routes: expected names of configured routes, got {unknown[0]!r}")
    top.done()
    return Config(
        source=source,
        server=server,
        retry=retry,
        claude_code=cc,
        hive_api_base=hive_api_base,
        routes=routes,
        fake_upstream=fake,
        debug_dump_dir=dump_dir,
        debug_dump_keep=dump_keep,
        limits=limits,
        security=security,
        resilience=resilience,
        quotas=quotas,
    )


def _quotas(q: _Reader) -> QuotasConfig:
    """The `quotas:` section: backend settings, `default` limits, and `callers: {name: limits}`."""
    callers_reader = q.sub("callers")
    callers = {}
    for name in callers_reader.data:
        callers_reader.used.add(name)
        if not isinstance(name, str) or not name:
            callers_reader.fail(str(name), "a caller name (as the tokens file or the client certificate names it)", name)
        callers[name] = _quota_rules(callers_reader.sub(name))
    quotas: QuotasConfig = q.settings(QuotasConfig, default=_quota_rules(q.sub("default")), callers=callers)
    q.done()
    return quotas


def _quota_rules(r: _Reader) -> QuotaRules:
    """One caller's limits: requests_per_minute, tokens_per_minute, concurrent_streams, usd_per_day,
    usd_per_month over all its routes, and the same under `routes: {route: ...}` for single routes."""
    routes_reader = r.sub("routes")
    routes = {}
    for name in routes_reader.data:
        routes_reader.used.add(name)
        per_route = routes_reader.sub(str(name))
        routes[str(name)] = per_route.settings(Limits)
        per_route.done()
    limits: Limits = r.settings(Limits)
    r.done()
    return QuotaRules(limits, routes)


def quota_rules(data: Any, source: str, where: str) -> QuotaRules:
    """A caller's limits from a mapping (a tokens file entry's `quotas:`), checked as the config's are."""
    return _quota_rules(_Reader(source, data, where))


def _parse_route(r: _Reader, name: str, environ: Mapping[str, str]) -> Route:
    if "fast_path" in r.data:  # its name until 2026-12; a file that still says it gets told the new one
        r.fail("fast_path", "transport: direct or transport: litellm (fast_path was renamed)", r.data["fast_path"])
    model = r.get("model", str, None, "a LiteLLM model string such as openai/gpt-4o-mini", lambda v: bool(v.strip()))
    if model is None:
        r.fail("model", "a LiteLLM model string such as openai/gpt-4o-mini", None)
    api_base, key_source, key, headers = _endpoint(r, environ)
    fallbacks = r.get("fallbacks", list, [], "a list of route names")
    if not all(isinstance(f, str) for f in fallbacks):
        r.fail("fallbacks", "a list of route names", fallbacks)
    route: Route = r.settings(
        Route,
        name=name,
        model=model.strip(),
        api_base=api_base,
        key_source=key_source,
        key=key,
        headers=headers,
        fallbacks=tuple(fallbacks),
        deployments=_deployments(r, environ),
        price_usd_per_mtok=_price(r),
        reasoning=_reasoning(r),
        provider_tools=_provider_tools(r, model.strip()),
    )
    r.done()
    _check_reasoning_defaults(r, route)
    return route


def _check_reasoning_defaults(r: _Reader, route: Route) -> None:
    """A route's default reasoning must be one its model takes: else every call would be refused."""
    try:
        reasoning_kwargs(route, CallRequest(messages=[]), resolve_model(route.model), route.max_tokens)
    except InvalidRequest as exc:
        r.fail("reasoning", f"defaults this route's model takes ({exc.description})", r.data.get("reasoning"))


def _price(r: _Reader) -> Price | None:
    """A route's own price (`price_usd_per_mtok: {input, output, cache_read, cache_creation}`), or None."""
    if r.data.get("price_usd_per_mtok") is None:
        r.used.add("price_usd_per_mtok")
        return None
    p = r.sub("price_usd_per_mtok")
    price: Price = p.settings(Price)
    p.done()
    return price


def _provider_tools(r: _Reader, model: str) -> tuple[ProviderTool, ...]:
    """A route's provider-run tools: `provider_tools: [{name: web_search, max_uses: 3}, ...]`, each a
    name the route's provider has and, beside it, the options the provider takes as they are."""
    items = r.get("provider_tools", list, [], "a list of provider tools ({name: web_search, ...options})")
    tools: list[ProviderTool] = []
    for i, item in enumerate(items):
        where = f"{r.key('provider_tools')}[{i}]"
        t = _Reader(r.source, item, where)
        expected = " or ".join(PROVIDER_TOOL_NAMES)
        name = t.get("name", str, "", expected, lambda v: v in PROVIDER_TOOL_NAMES)
        if not name:
            t.fail("name", expected, None)
        if provider_tools.unsupported(resolve_model(model), name):
            t.fail("name", "a tool this route's provider runs (Anthropic: all three; OpenAI: web_search)", name)
        tools.append(ProviderTool(name, json.dumps({k: v for k, v in t.data.items() if k != "name"}, sort_keys=True)))
    return tuple(tools)


def _reasoning(r: _Reader) -> ReasoningDefaults:
    """A route's reasoning defaults (`reasoning: {effort, budget_tokens, supported}`); none when absent."""
    section = r.sub("reasoning")
    defaults: ReasoningDefaults = section.settings(ReasoningDefaults)
    section.done()
    return defaults


def _endpoint(r: _Reader, environ: Mapping[str, str]) -> tuple[str, KeySource | None, Secret | None, tuple[tuple[str, str], ...]]:
    """A route's or a deployment's api_base, key (where it comes from, and its value) and headers."""
    api_base = r.get("api_base", str, "", "an http(s) URL", lambda v: v.startswith(("http://", "https://")))
    key_source: KeySource | None = None
    key: Secret | None = None
    if "key" in r.data and r.data["key"] is not None:
        k = r.sub("key")
        env = k.get("env", str, "", "an environment variable name", lambda v: bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v)))
        file = k.get("file", str, "", "a file path")
        k.done()
        if bool(env) == bool(file):
            k.fail("", "exactly one of env or file", r.data["key"])
        key_source = KeySource(env=env, file=file)
        key = _read_key(key_source, environ)
    else:
        r.used.add("key")
    headers_raw = r.get("headers", dict, {}, "a mapping of header names to strings")
    for hk, hv in headers_raw.items():
        if not isinstance(hk, str) or not isinstance(hv, str):
            r.fail("headers", "a mapping of header names to strings", {hk: hv})
    return api_base.rstrip("/"), key_source, key, tuple(sorted(headers_raw.items()))


def _deployments(r: _Reader, environ: Mapping[str, str]) -> tuple[Deployment, ...]:
    """The route's deployments: each a name (unique in the route), and what differs from the route."""
    items = r.get("deployments", list, [], "a list of deployments (name, key, api_base, model, headers, weight)")
    found: list[Deployment] = []
    for i, item in enumerate(items):
        d = _Reader(r.source, item, f"{r.key('deployments')}[{i}]")
        name = d.get("name", str, "", "a deployment name of letters, digits and . _ : -", lambda v: bool(ROUTE_NAME_RE.match(v)))
        if not name or any(other.name == name for other in found):
            d.fail("name", "a name of its own in this route", name or None)
        model = d.get("model", str, "", "a LiteLLM model string")
        api_base, key_source, key, headers = _endpoint(d, environ)
        found.append(
            d.settings(
                Deployment, name=name, model=model.strip(), api_base=api_base, key_source=key_source, key=key, headers=headers
            )
        )
        d.done()
    return tuple(found)


def _read_key(source: KeySource, environ: Mapping[str, str]) -> Secret | None:
    if source.env:
        value = environ.get(source.env, "").strip()
        return Secret(value) if value else None
    return FileSecret(source.file)
