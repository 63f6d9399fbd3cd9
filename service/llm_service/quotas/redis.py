"""The quota counters in Redis, shared by every replica: each admission and each settlement is
one Lua script, so replicas never race between checking a limit and counting against it.

The scripts asked for while the event loop runs one round of its ready callbacks go to Redis
together, in one pipeline (`_Batches`): under concurrency, a call's admission and settlement
share the write, the read and the wake-ups with the other calls', which is most of what a round
trip through redis-py costs this process.

Keys, per caller and scope, all with the caller's name as the hash tag (one caller's keys stay
in one Cluster slot, so each script runs on one node of a Redis Cluster):
`<prefix>:{<caller>}:<scope>:minute` (a hash: t0, req, tok; expires 60 s after the window's
first call), `…:day:<YYYY-MM-DD>` and `…:month:<YYYY-MM>` (US dollars; expire an hour after
their period), `…:streams` (a sorted set of stream ids by lease end).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import urllib.parse
from typing import Any

import redis.asyncio
import redis.asyncio.sentinel
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llm_service.quotas.counters import MINUTE_S, STREAM_RETRY_S, Admission, Ask, Refusal, limit_args
from llm_service.quotas.limits import Limits
from llm_service.quotas.resp import LeanScripts

BACKEND_ERRORS = (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)  # Redis did not answer
KEYS_PER_SCOPE = 4
LIMIT_ORDER = ("requests_per_minute", "tokens_per_minute", "concurrent_streams", "usd_per_day", "usd_per_month")

# KEYS: per scope: minute, day, month, streams.
# ARGV: now_ms, tokens, usd, stream_id, lease_ms, day_left_ms, month_left_ms, then per scope its
#       five limits (-1: none) in LIMIT_ORDER, as one word joined by commas (`_limit_words`).
# Few arguments and one string for an answer: redis-py's encoding and parsing of each costs this
# process more than the script costs Redis.
# Day and month keys outlive their period by an hour (3600000 ms), so --quota-status can still read them.
# Returns "0 <scope index> <limit index> <retry_ms>" or "1 <day spend> <month spend> <t0 per scope...>".
_ADMIT = """
local now, tokens, usd, stream = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local lease, day_left, month_left = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local minute_ms, stream_retry = MINUTE_MS, STREAM_RETRY_MS
local n = #KEYS / 4
local limits = {}
for i = 1, n do
  limits[i] = {}
  for v in string.gmatch(ARGV[7 + i], '[^,]+') do table.insert(limits[i], tonumber(v)) end
end
local function limit(i, j) return limits[i][j] end
for i = 1, n do
  local minute, day, month, streams = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local left = redis.call('PTTL', minute)
  if left < 0 then left = minute_ms end
  local used = {
    tonumber(redis.call('HGET', minute, 'req') or '0'),
    tonumber(redis.call('HGET', minute, 'tok') or '0'),
    0,
    tonumber(redis.call('GET', day) or '0'),
    tonumber(redis.call('GET', month) or '0'),
  }
  local retry = {left, left, stream_retry, day_left, month_left}
  if stream ~= '' and limit(i, 3) >= 0 then
    redis.call('ZREMRANGEBYSCORE', streams, '-inf', now)
    used[3] = redis.call('ZCARD', streams)
  end
  for j = 1, 5 do
    if limit(i, j) >= 0 and (j ~= 3 or stream ~= '') and used[j] >= limit(i, j) then
      return table.concat({0, i, j, retry[j]}, ' ')
    end
  end
end
local out = {1, '0', '0'}
for i = 1, n do
  local minute, day, month, streams = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  if redis.call('EXISTS', minute) == 0 then
    redis.call('HSET', minute, 't0', ARGV[1])
    redis.call('PEXPIRE', minute, minute_ms)
  end
  redis.call('HINCRBY', minute, 'req', 1)
  redis.call('HINCRBY', minute, 'tok', tokens)
  local spent_day = redis.call('INCRBYFLOAT', day, usd)
  local spent_month = redis.call('INCRBYFLOAT', month, usd)
  if redis.call('PTTL', day) < 0 then redis.call('PEXPIRE', day, day_left + 3600000) end
  if redis.call('PTTL', month) < 0 then redis.call('PEXPIRE', month, month_left + 3600000) end
  if stream ~= '' and limit(i, 3) >= 0 then
    redis.call('ZADD', streams, now + lease, stream)
    if redis.call('PTTL', streams) < lease then redis.call('PEXPIRE', streams, lease) end
  end
  if i == 1 then out[2], out[3] = spent_day, spent_month end
  out[3 + i] = redis.call('HGET', minute, 't0')
end
return table.concat(out, ' ')
""".replace("STREAM_RETRY_MS", str(int(STREAM_RETRY_S * 1000))).replace("MINUTE_MS", str(int(MINUTE_S * 1000)))

# KEYS as for _ADMIT. ARGV: tokens_delta, usd_delta, stream_id, then per scope the window's t0.
# Returns "<day spend> <month spend>" of the first scope.
_SETTLE = """
local tokens, usd, stream = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local n = #KEYS / 4
local function add(key, delta)
  if redis.call('EXISTS', key) == 0 then return end
  if tonumber(redis.call('INCRBYFLOAT', key, delta)) < 0 then redis.call('SET', key, '0', 'KEEPTTL') end
end
for i = 1, n do
  local minute, day, month, streams = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  if redis.call('HGET', minute, 't0') == ARGV[3 + i] and redis.call('HINCRBY', minute, 'tok', tokens) < 0 then
    redis.call('HSET', minute, 'tok', 0)
  end
  if usd ~= 0 then add(day, ARGV[2]); add(month, ARGV[2]) end
  if stream ~= '' then redis.call('ZREM', streams, stream) end
end
return (redis.call('GET', KEYS[2]) or '0') .. ' ' .. (redis.call('GET', KEYS[3]) or '0')
"""


ADMIT_SHA, SETTLE_SHA = (hashlib.sha1(script.encode()).hexdigest() for script in (_ADMIT, _SETTLE))
SCRIPTS = {ADMIT_SHA: _ADMIT, SETTLE_SHA: _SETTLE}
SENTINEL_SCHEME = "redis+sentinel://"


def connect(url: str, timeout_s: float, cluster: bool = False) -> Any:
    """A client for url (one node of a Redis Cluster, with cluster; the master Redis Sentinel names,
    with a redis+sentinel:// URL) that fails fast: no retries of its own (the gate decides what a
    failure means)."""
    fail_fast: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if url.startswith(SENTINEL_SCHEME):
        sentinels, service, db, password = sentinel_parts(url)
        sentinel = redis.asyncio.sentinel.Sentinel(sentinels, sentinel_kwargs=fail_fast)  # type: ignore[no-untyped-call]
        return sentinel.master_for(
            service, db=db, password=password, retry=Retry(NoBackoff(), 0), decode_responses=True, **fail_fast
        )
    kind = redis.asyncio.RedisCluster if cluster else redis.asyncio.Redis
    return kind.from_url(url, retry=Retry(NoBackoff(), 0), decode_responses=True, **fail_fast)


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """redis+sentinel://[:password@]host:port[,host:port...]/service[/db]: the Sentinels to ask,
    the name of the master they watch, its database and password."""
    rest = url[len(SENTINEL_SCHEME) :]
    password = None
    if "@" in rest:
        credentials, rest = rest.rsplit("@", 1)
        password = urllib.parse.unquote(credentials.split(":", 1)[-1]) or None
    hosts, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        sentinels.append((name, int(port)))
    return sentinels, service, int(db or 0), password


class _Batches:
    """Runs the scripts by their SHA1, every one asked for in the same round of the event loop in
    one pipeline (not a transaction: each script is atomic on its own), sent by a task of its own
    so that no caller's cancellation cuts the others' replies. A script Redis no longer has (it
    restarted) is loaded and run again."""

    def __init__(self, client: Any, scripts: dict[str, str]) -> None:
        self.client = client
        self._scripts = scripts  # SHA1: source
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def run(self, sha: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """The script's reply, once the pipeline it goes in has been answered."""
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        if not self._pending:  # the task runs after the callbacks ready now: their scripts go with this one
            sending = loop.create_task(self._send())
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)
        self._pending.append((("EVALSHA", sha, len(keys), *keys, *args), reply))
        return reply

    async def _send(self) -> None:
        batch, self._pending = self._pending, []
        try:
            replies = await self._pipelined([command for command, _ in batch])
            missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
            if missing:
                for source in self._scripts.values():
                    await self.client.script_load(source)
                again = await self._pipelined([batch[i][0] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    replies[i] = r
        except Exception as exc:  # Redis did not answer: every call in the batch learns it
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except BaseException:  # the loop is closing: so are the calls waiting
            for _, reply in batch:
                reply.cancel()
            raise
        for (_, reply), r in zip(batch, replies, strict=True):
            if not reply.done():
                reply.set_exception(r) if isinstance(r, Exception) else reply.set_result(r)

    def reset(self) -> None:
        """Nothing of its own to drop: it sends through the client, which is reset with the counters."""

    async def aclose(self) -> None:
        """Nothing of its own to close: the client is closed with the counters."""

    async def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply, or the error Redis answered it with."""
        if len(commands) == 1:  # alone in its round (a quiet server): no pipeline to build
            try:
                return [await self.client.execute_command(*commands[0])]
            except redis.exceptions.ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


@functools.lru_cache(maxsize=1024)
def _limit_words(limits: Limits) -> str:
    """A scope's limits as the admission script's argument (made once per set of limits)."""
    return ",".join(repr(v) for v in limit_args(limits))


def key_base(prefix: str, caller: str, scope: str) -> str:
    """The start of every key of one caller's scope."""
    return f"{prefix}:{{{caller}}}:{scope}"


class RedisCounters:
    """The counters in one Redis, a Redis Cluster or the master a Redis Sentinel names (redis://,
    rediss://, unix://, redis+sentinel://), shared by every replica."""

    def __init__(self, url: str, prefix: str, timeout_s: float, cluster: bool = False) -> None:
        self.prefix = prefix
        self.client = connect(url, timeout_s, cluster)
        # One Redis reached directly: the scripts go through the lean client, the rest through redis-py.
        lean = not cluster and url.startswith(("redis://", "unix://"))
        self._scripts: LeanScripts | _Batches = LeanScripts(url, timeout_s, SCRIPTS) if lean else _Batches(self.client, SCRIPTS)

    def _keys(self, ask: Ask) -> list[str]:
        keys = []
        for scope, _ in ask.scopes:
            base = key_base(self.prefix, ask.caller, scope)
            keys += [f"{base}:minute", f"{base}:day:{ask.day}", f"{base}:month:{ask.month}", f"{base}:streams"]
        return keys

    async def admit(self, ask: Ask) -> Admission:
        args: list[Any] = [
            int(ask.now_s * 1000),
            ask.tokens,
            repr(ask.usd),
            ask.stream_id,
            int(ask.lease_s * 1000),
            int(ask.day_left_s * 1000),
            int(ask.month_left_s * 1000),
            *(_limit_words(limits) for _, limits in ask.scopes),
        ]
        out = (await self._scripts.run(ADMIT_SHA, self._keys(ask), args)).split()
        if out[0] == "0":
            scope, limits = ask.scopes[int(out[1]) - 1]
            name = LIMIT_ORDER[int(out[2]) - 1]
            return Admission(Refusal(name, scope, float(getattr(limits, name)), int(out[3]) / 1000))
        return Admission(None, tuple(float(t) for t in out[3:]), float(out[1]), float(out[2]))

    async def settle(self, ask: Ask, admission: Admission, tokens_delta: int, usd_delta: float) -> tuple[float, float]:
        args = [tokens_delta, repr(usd_delta), ask.stream_id, *(str(int(t)) for t in admission.windows)]
        day, month = (await self._scripts.run(SETTLE_SHA, self._keys(ask), args)).split()
        return float(day), float(month)

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        await self.client.ping()

    async def reconnect(self) -> None:
        """Drop the pooled connections (dead after Redis restarted): the next commands open fresh ones."""
        if isinstance(self.client, redis.asyncio.RedisCluster):
            await self.client.aclose()  # it initializes again on its next command
        else:
            await self.client.connection_pool.disconnect(inuse_connections=False)
        self._scripts.reset()

    async def status(self, caller: str = "") -> list[dict[str, Any]]:
        """The live counters of one caller (every caller: ""), one row per caller and scope."""
        pattern = f"{key_base(self.prefix, caller, '*')}:*" if caller else f"{self.prefix}:{{*}}:*"
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        async for key in self.client.scan_iter(match=pattern, count=500):
            rest = key[len(self.prefix) + 2 :]
            name, _, tail = rest.partition("}:")
            scope, _, kind = tail.partition(":")
            row = rows.setdefault((name, scope), {"caller": name, "scope": scope})
            kind = kind.split(":", 1)[0]
            if kind == "minute":
                window = await self.client.hgetall(key)
                row["requests_this_minute"] = int(window.get("req", 0))
                row["tokens_this_minute"] = int(window.get("tok", 0))
                row["minute_resets_in_s"] = max(0, await self.client.pttl(key)) / 1000
            elif kind in ("day", "month"):
                row[f"usd_this_{kind}"] = float(await self.client.get(key) or 0)
            elif kind == "streams":
                row["open_streams"] = int(await self.client.zcard(key))
        return [rows[k] for k in sorted(rows)]

    async def aclose(self) -> None:
        await self._scripts.aclose()
        await self.client.aclose()
