"""`python -m llm_service --quota-status [CALLER]`: the live counters in Redis, one JSON line per
caller and scope, beside the limits the configuration (and the tokens file) sets for them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import Any

from llm_service.config import Config
from llm_service.quotas.limits import ALL_ROUTES, QuotaRules


def _limits_of(config: Config, caller: str) -> QuotaRules:
    if config.security.tokens_file:
        from llm_service.auth import TokenStore

        for listed in TokenStore(config.security.tokens_file).callers():
            if listed.name == caller and listed.quotas is not None:
                return listed.quotas
    return config.quotas.callers.get(caller, config.quotas.default)


async def _rows(config: Config, caller: str) -> list[dict[str, Any]]:
    from llm_service.quotas.redis import RedisCounters

    q = config.quotas
    counters = RedisCounters(q.redis_url, q.key_prefix, max(q.backend_timeout_s, 2.0), q.redis_cluster)
    try:
        return await counters.status(caller)
    finally:
        await counters.aclose()


def print_status(config: Config, caller: str) -> int:
    """Print the counters (of one caller, or of every caller with counters: ""); the exit status."""
    if not config.quotas.redis_url:
        print("llm_service: no quotas.redis_url: each server keeps its counters in its own memory", file=sys.stderr)
        return 2
    from llm_service.quotas.redis import BACKEND_ERRORS

    try:
        rows = asyncio.run(_rows(config, caller))
    except BACKEND_ERRORS as exc:
        print(f"llm_service: cannot read the quota counters from Redis: {exc}", file=sys.stderr)
        return 1
    for row in rows:
        rules = _limits_of(config, row["caller"])
        limits = rules.limits if row["scope"] == ALL_ROUTES else rules.routes.get(row["scope"])
        if limits is not None:
            row["limits"] = {k: v for k, v in dataclasses.asdict(limits).items() if v is not None}
        print(json.dumps(row, sort_keys=True))
    if not rows:
        print(f"no counters{f' for caller {caller!r}' if caller else ''} (no call counted within their windows)", file=sys.stderr)
    return 0
