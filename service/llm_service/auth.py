"""Client authentication: bearer tokens stored hashed, and the caller's identity for each call.

The tokens file (YAML) lists who may call and which routes each may use:

    tokens:
      - name: billing-service          # attribution in logs and the llm_caller_* metrics
        sha256: 5e884898da28…          # python -m llm_service --hash-token < token.txt
        routes: [gpt-4o-mini]          # optional; every route when absent
        quotas:                        # optional; else the config's quotas.callers or quotas.default
          requests_per_minute: 60
          usd_per_day: 5

Only SHA-256 hashes are stored. A presented token is hashed and compared with every
entry in constant time (hmac.compare_digest, no early exit), so timing tells nothing
about how close a guess was. Missing and wrong tokens get the same answer. The file
is re-read when it changes, so tokens rotate (and quotas change) without a restart. With mutual TLS, the
client certificate's common name identifies a caller that presents no token.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from llm_service.config import ConfigError, quota_rules
from llm_service.interceptors import Guard
from llm_service.quotas.limits import QuotaRules

log = logging.getLogger(__name__)
RELOAD_CHECK_INTERVAL_S = 1.0
UNAUTHENTICATED_MESSAGE = "missing or invalid credentials"


@dataclass(frozen=True)
class Caller:
    """Who is calling: a name for attribution, the routes it may use (None: all), its own quotas
    (None: the configuration's), and whether the tokens file lists it (its name may be a metric label)."""

    name: str
    routes: frozenset[str] | None = None
    quotas: QuotaRules | None = None
    listed: bool = False

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("llm_service_caller", default=None)


def hash_token(token: str) -> str:
    """The hex SHA-256 a tokens file stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    digest: bytes


class TokenStore:
    """The tokens file, loaded at start-up and re-read when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._entries: tuple[_Entry, ...] = ()
        self._mtime_ns = -1
        self._checked = 0.0
        self._load(strict=True)

    def _load(self, strict: bool) -> None:
        try:
            stat = self.path.stat()
            if stat.st_mtime_ns == self._mtime_ns:
                return
            entries = _parse(yaml.safe_load(self.path.read_text()), str(self.path))
        except (OSError, yaml.YAMLError, ConfigError) as exc:
            if strict:
                raise ConfigError(f"{self.path}: cannot load the tokens file: {exc}") from None
            log.error("tokens file not reloaded; keeping the previous tokens", extra={"path": str(self.path), "error": str(exc)})
            return
        self._entries, self._mtime_ns = entries, stat.st_mtime_ns
        log.info("tokens loaded", extra={"path": str(self.path), "tokens": len(entries)})

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_INTERVAL_S:
            self._checked = now
            self._load(strict=False)

    def callers(self) -> tuple[Caller, ...]:
        """Every caller the file lists."""
        return tuple(entry.caller for entry in self._entries)

    def caller_for(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None. Every entry is compared, in constant time."""
        self._maybe_reload()
        presented = hashlib.sha256(token.encode()).digest()
        found: Caller | None = None
        for entry in self._entries:
            if hmac.compare_digest(presented, entry.digest):
                found = entry.caller
        return found


def _parse(data: Any, source: str) -> tuple[_Entry, ...]:
    if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
        raise ConfigError(f"{source}: expected a mapping with a 'tokens' list")
    entries = []
    for i, item in enumerate(data["tokens"]):
        where = f"{source}: tokens[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"{where}: expected a mapping with a non-empty 'name'")
        digest = item.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ConfigError(f"{where}.sha256: expected 64 hex digits (python -m llm_service --hash-token)")
        routes = item.get("routes")
        if routes is not None and (not isinstance(routes, list) or not all(isinstance(r, str) for r in routes)):
            raise ConfigError(f"{where}.routes: expected a list of route names")
        quotas = quota_rules(item["quotas"], source, f"tokens[{i}].quotas") if item.get("quotas") is not None else None
        caller = Caller(item["name"], frozenset(routes) if routes is not None else None, quotas, listed=True)
        entries.append(_Entry(caller, bytes.fromhex(digest)))
    return tuple(entries)


class AuthGuard(Guard):
    """Admits a call with a valid bearer token or a verified client certificate; sets CALLER."""

    def __init__(self, tokens: TokenStore | None, mutual_tls: bool, open_services: frozenset[str]) -> None:
        self.tokens = tokens
        self.mutual_tls = mutual_tls
        self.open_services = open_services

    def applies(self, service: str) -> bool:
        return service not in self.open_services

    async def start(self, service: str, method: str, kind: str, context: grpc.aio.ServicerContext) -> Any:
        caller = self._identify(context)
        if caller is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        CALLER.set(caller)
        return None

    def _identify(self, context: grpc.aio.ServicerContext) -> Caller | None:
        header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        if self.tokens is not None:
            if isinstance(header, str) and header[:7].lower() == "bearer ":
                return self.tokens.caller_for(header[7:].strip())
            if not self.mutual_tls:
                return None
        if self.mutual_tls:
            names = context.auth_context().get("x509_common_name") or []
            if names:
                return Caller(names[0].decode(errors="replace"))
        return None


def read_pem(path: str) -> bytes:
    """A PEM file's bytes, with a clear error naming the file."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {os.strerror(exc.errno or 0) or exc}") from None
