"""Configuration: one YAML file read once at start-up into frozen, validated objects.

A bad file stops the server with a ConfigError naming the file, the key and what
was expected. The environment is read here and only here (key variables and
CLAUDE_CODE_ENTRYPOINT), from a mapping passed in, so tests give a clean one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.yaml")


KEY_RELOAD_INTERVAL_S = 1.0
MAX_WORKERS = 64


class ConfigError(Exception):
    """The configuration file is invalid; the message names file, key and expectation."""


class Secret:
    """A provider key: never shown by repr/str, so it cannot leak into logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the upstream request only."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class FileSecret(Secret):
    """A key kept in a file (a Kubernetes Secret mounted as files), re-read when the file changes.

    Checked at most once per KEY_RELOAD_INTERVAL_S. A file that is missing or empty for a
    moment (Kubernetes swaps the mounted files atomically, but editors do not) keeps the
    last key that was read.
    """

    __slots__ = ("_checked", "_mtime_ns", "_path")

    def __init__(self, path: str) -> None:
        super().__init__("")
        self._path = Path(path)
        self._mtime_ns = -1
        self._checked = 0.0
        self._refresh()

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        try:
            mtime = self._path.stat().st_mtime_ns
            if mtime == self._mtime_ns:
                return
            value = self._path.read_text(encoding="utf-8").strip()
        except OSError:
            return
        self._mtime_ns = mtime
        if value:
            self._value = value

    def reveal(self) -> str:
        if time.monotonic() - self._checked >= KEY_RELOAD_INTERVAL_S:
            self._refresh()
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSecret) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)


@dataclass(frozen=True)
class KeySource:
    """Where a route's provider key comes from: an environment variable or a file."""

    env: str = ""
    file: str = ""

    def describe(self) -> str:
        """Where to put the key, for an error message (never the key)."""
        if self.env:
            return f"environment variable {self.env}"
        if self.file:
            return f"file {self.file}"
        return "no key configured"


@dataclass(frozen=True)
class Route:
    """One route: a name callers use, and how the server reaches the provider for it."""

    name: str
    model: str
    api_base: str = ""
    key_source: KeySource | None = None
    key: Secret | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 600.0
    idle_timeout_s: float = 60.0  # the longest silence allowed from an answering upstream
    max_tokens: int = 4096
    max_retries: int | None = None
    fallbacks: tuple[str, ...] = ()
    fast_path: bool = True  # false: LiteLLM also reads the answers (its full path)

    @property
    def provider(self) -> str:
        """The provider part of the model string ("openai" for a bare model name)."""
        return self.model.split("/", 1)[0].lower() if "/" in self.model else "openai"

    @property
    def ready(self) -> bool:
        """Whether the route has the key it needs."""
        return self.key_source is None or (self.key is not None and bool(self.key.reveal()))


@dataclass(frozen=True)
class RetryConfig:
    """The retry engine's limits and delays (reference values by default)."""

    rate_limit_max_retries: int = 10
    backoff_base_s: float = 2.0
    max_delay_s: float = 120.0
    jitter_ratio: float = 0.2
    empty_stream_max_retries: int = 3
    empty_stream_delay_s: float = 1.0
    transient_max_retries: int = 3


@dataclass(frozen=True)
class ClaudeCodeConfig:
    """Claude subscription (OAuth) request settings (PC05)."""

    version: str = "2.1.76"
    billing_salt: str = "59cf53e54c78"
    entrypoint: str = "cli"


@dataclass(frozen=True)
class ServerConfig:
    """The gRPC server's own settings."""

    listen: str = "127.0.0.1:50051"
    drain_grace_s: float = 30.0
    max_retries_cap: int = 10
    log_level: str = "INFO"
    max_metadata_entries: int = 16
    metrics_listen: str = "127.0.0.1:9464"  # Prometheus /metrics; "" turns it off
    # gRFC A9: connections are closed after this age (clients reconnect and re-resolve, so new
    # replicas get traffic after a scale-up), with a grace longer than the longest stream.
    max_connection_age_s: float = 300.0
    max_connection_age_grace_s: float = 660.0
    # Worker processes sharing the port (SO_REUSEPORT); above 1, a supervisor runs them (workers.py).
    workers: int = 1


@dataclass(frozen=True)
class LimitsConfig:
    """What one process accepts: request size and shape, and concurrent RPCs."""

    max_request_bytes: int = 16 * 1024 * 1024
    max_messages: int = 1000
    max_tools: int = 128
    max_tokens: int = 200_000
    max_concurrent_rpcs: int = 512  # beyond it, calls are shed at once (RESOURCE_EXHAUSTED)
    shed_retry_after_s: float = 1.0
    max_json_depth: int = 64  # nesting of tool schemas, tool-call arguments and response schemas
    max_parts: int = 1000  # content parts in one message
    max_tool_calls: int = 256  # tool calls in one assistant message
    max_stop_sequences: int = 16
    max_inflight_request_bytes: int = 64 * 1024 * 1024  # requests over 256 KiB held at once, per process


@dataclass(frozen=True)
class ResilienceConfig:
    """Per-route retry budget (gRFC A6 throttling) and circuit breaker settings."""

    retry_budget_tokens: float = 10.0
    retry_budget_ratio: float = 0.1
    breaker_failures: int = 5
    breaker_open_s: float = 30.0


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

    def route(self, name: str) -> Route | None:
        """The route of that name, or None."""
        return self.routes.get(name)


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

    def sub(self, name: str) -> _Reader:
        self.used.add(name)
        return _Reader(self.source, self.data.get(name), self.key(name))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(unknown[0], f"one of {sorted(self.used)}", unknown[0])


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _host_port(v: str) -> bool:
    return bool(re.fullmatch(r"\[?[A-Za-z0-9.:_-]+\]?:\d{1,5}", v))


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
    s = top.sub("server")
    server = ServerConfig(
        listen=s.get("listen", str, ServerConfig.listen, "host:port", _host_port),
        drain_grace_s=s.get("drain_grace_s", float, ServerConfig.drain_grace_s, "seconds >= 0", _non_negative),
        max_retries_cap=s.get("max_retries_cap", int, ServerConfig.max_retries_cap, "an integer >= 0", _non_negative),
        log_level=s.get(
            "log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR", lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR")
        ),
        max_metadata_entries=s.get("max_metadata_entries", int, 16, "an integer >= 0", _non_negative),
        max_connection_age_s=s.get("max_connection_age_s", float, 300.0, "seconds > 0", _positive),
        max_connection_age_grace_s=s.get("max_connection_age_grace_s", float, 660.0, "seconds > 0", _positive),
        metrics_listen=s.get(
            "metrics_listen",
            str,
            ServerConfig.metrics_listen,
            'host:port, or "" for no metrics',
            lambda v: v == "" or _host_port(v),
        ),
        workers=s.get("workers", int, 1, f"an integer from 1 to {MAX_WORKERS}", lambda v: 1 <= v <= MAX_WORKERS),
    )
    s.done()
    r = top.sub("retry")
    d = RetryConfig()
    retry = RetryConfig(
        rate_limit_max_retries=r.get("rate_limit_max_retries", int, d.rate_limit_max_retries, "an integer >= 0", _non_negative),
        backoff_base_s=r.get("backoff_base_s", float, d.backoff_base_s, "seconds >= 0", _non_negative),
        max_delay_s=r.get("max_delay_s", float, d.max_delay_s, "seconds >= 0", _non_negative),
        jitter_ratio=r.get("jitter_ratio", float, d.jitter_ratio, "a ratio from 0 to 1", lambda v: 0 <= v <= 1),
        empty_stream_max_retries=r.get(
            "empty_stream_max_retries", int, d.empty_stream_max_retries, "an integer >= 0", _non_negative
        ),
        empty_stream_delay_s=r.get("empty_stream_delay_s", float, d.empty_stream_delay_s, "seconds >= 0", _non_negative),
        transient_max_retries=r.get("transient_max_retries", int, d.transient_max_retries, "an integer >= 0", _non_negative),
    )
    r.done()
    c = top.sub("claude_code")
    cc = ClaudeCodeConfig(
        version=c.get("version", str, ClaudeCodeConfig.version, "a version string"),
        billing_salt=c.get("billing_salt", str, ClaudeCodeConfig.billing_salt, "a string"),
        entrypoint=(environ.get("CLAUDE_CODE_ENTRYPOINT", "").strip() or c.get("entrypoint", str, "cli", "a string")),
    )
    c.done()
    lim = top.sub("limits")
    dl = LimitsConfig()
    limits = LimitsConfig(
        max_request_bytes=lim.get("max_request_bytes", int, dl.max_request_bytes, "bytes > 0", _positive),
        max_messages=lim.get("max_messages", int, dl.max_messages, "an integer > 0", _positive),
        max_tools=lim.get("max_tools", int, dl.max_tools, "an integer >= 0", _non_negative),
        max_tokens=lim.get("max_tokens", int, dl.max_tokens, "an integer > 0", _positive),
        max_concurrent_rpcs=lim.get("max_concurrent_rpcs", int, dl.max_concurrent_rpcs, "an integer > 0", _positive),
        shed_retry_after_s=lim.get("shed_retry_after_s", float, dl.shed_retry_after_s, "seconds >= 0", _non_negative),
        max_json_depth=lim.get("max_json_depth", int, dl.max_json_depth, "an integer > 0", _positive),
        max_parts=lim.get("max_parts", int, dl.max_parts, "an integer > 0", _positive),
        max_tool_calls=lim.get("max_tool_calls", int, dl.max_tool_calls, "an integer > 0", _positive),
        max_stop_sequences=lim.get("max_stop_sequences", int, dl.max_stop_sequences, "an integer >= 0", _non_negative),
        max_inflight_request_bytes=lim.get(
            "max_inflight_request_bytes", int, dl.max_inflight_request_bytes, "bytes > 0", _positive
        ),
    )
    lim.done()
    rs = top.sub("resilience")
    dr = ResilienceConfig()
    resilience = ResilienceConfig(
        retry_budget_tokens=rs.get("retry_budget_tokens", float, dr.retry_budget_tokens, "a number >= 2", lambda v: v >= 2),
        retry_budget_ratio=rs.get("retry_budget_ratio", float, dr.retry_budget_ratio, "a number > 0", _positive),
        breaker_failures=rs.get("breaker_failures", int, dr.breaker_failures, "an integer > 0", _positive),
        breaker_open_s=rs.get("breaker_open_s", float, dr.breaker_open_s, "seconds > 0", _positive),
    )
    rs.done()
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
    dump_keep = dbg.get("keep", int, 50, "an integer > 0", _positive)
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
    )


def _parse_route(r: _Reader, name: str, environ: Mapping[str, str]) -> Route:
    model = r.get("model", str, None, "a LiteLLM model string such as openai/gpt-4o-mini", lambda v: bool(v.strip()))
    if model is None:
        r.fail("model", "a LiteLLM model string such as openai/gpt-4o-mini", None)
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
    fallbacks = r.get("fallbacks", list, [], "a list of route names")
    if not all(isinstance(f, str) for f in fallbacks):
        r.fail("fallbacks", "a list of route names", fallbacks)
    route = Route(
        name=name,
        model=model.strip(),
        api_base=api_base.rstrip("/"),
        key_source=key_source,
        key=key,
        headers=tuple(sorted(headers_raw.items())),
        timeout_s=r.get("timeout_s", float, 600.0, "seconds > 0", _positive),
        idle_timeout_s=r.get("idle_timeout_s", float, 60.0, "seconds > 0", _positive),
        max_tokens=r.get("max_tokens", int, 4096, "an integer > 0", _positive),
        max_retries=r.get("max_retries", int, None, "an integer >= 0", _non_negative),
        fallbacks=tuple(fallbacks),
        fast_path=r.get("fast_path", bool, True, "true or false"),
    )
    r.done()
    return route


def _read_key(source: KeySource, environ: Mapping[str, str]) -> Secret | None:
    if source.env:
        value = environ.get(source.env, "").strip()
        return Secret(value) if value else None
    return FileSecret(source.file)
