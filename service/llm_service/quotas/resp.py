"""A lean client for the quota scripts on one Redis (redis:// or unix://, no TLS, no Cluster, no
Sentinel: those go through redis-py): each command is written as it is asked for, any number in
flight on one connection (Redis answers them in order), the replies read by a parser of a few
lines (RESP2: the scripts answer a string).

redis-py's asyncio client costs this process a few hundred µs of CPU per command (its pool, its
timeouts, its per-argument encoder and its parser), which made counting a call in Redis cost
more than the rest of the call; this costs a fraction of that. Errors are redis-py's own
exceptions, so what the gate makes of a Redis that does not answer is unchanged.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import redis.exceptions
from redis.asyncio.connection import parse_url

ARRAY, BULK, INTEGER, SIMPLE, ERROR = b"*", b"$", b":", b"+", b"-"


def packed(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def parsed(buffer: bytearray, start: int) -> tuple[Any, int] | None:
    """The reply that begins at start and where it ends, or None while it has not all arrived."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return None
    kind, line = buffer[start : start + 1], bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == BULK:
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            return None
        return buffer[after : after + size].decode(), after + size + 2
    if kind == ARRAY:
        items = []
        for _ in range(int(line)):
            item = parsed(buffer, after)
            if item is None:
                return None
            value, after = item
            items.append(value)
        return items, after
    if kind == INTEGER:
        return int(line), after
    if kind == SIMPLE:
        return line.decode(), after
    message = line.decode(errors="replace")
    error = redis.exceptions.NoScriptError if message.startswith("NOSCRIPT") else redis.exceptions.ResponseError
    return error(message), after


class _Connection(asyncio.Protocol):
    """One connection: the replies awaited, in the order their commands were written."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._unsent: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while self._waiting and (reply := parsed(self._buffer, start)) is not None:
            value, start = reply
            waiter = self._waiting.popleft()
            if not waiter.done():  # its caller gave up waiting: the reply is read and dropped
                waiter.set_exception(value) if isinstance(value, Exception) else waiter.set_result(value)
        del self._buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(redis.exceptions.ConnectionError("the connection to Redis was lost"))

    def send(self, payload: bytes) -> asyncio.Future[Any]:
        """The reply's future; the command is written with the others asked for in this round of
        the event loop, in one write (one system call for them all)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiting.append(waiter)
        if not self._unsent:
            loop.call_soon(self._write)
        self._unsent.append(payload)
        return waiter

    def _write(self) -> None:
        unsent, self._unsent = self._unsent, []
        if self.transport is not None and not self.closed:
            self.transport.write(b"".join(unsent))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LeanScripts:
    """Runs the quota scripts by their SHA1 on one Redis, loading one Redis no longer has."""

    def __init__(self, url: str, timeout_s: float, scripts: dict[str, str]) -> None:
        self._where = parse_url(url)
        self._timeout_s = timeout_s
        self._scripts = scripts  # SHA1: source
        self._connection: _Connection | None = None
        self._lock = asyncio.Lock()

    async def run(self, sha: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply."""
        command = ("EVALSHA", sha, len(keys), *keys, *args)
        try:
            return await self._command(command)
        except redis.exceptions.NoScriptError:  # Redis restarted, or its scripts were flushed
            await self._command(("SCRIPT", "LOAD", self._scripts[sha]))
            return await self._command(command)

    async def _command(self, command: tuple[Any, ...]) -> Any:
        connection = self._connection
        if connection is None or connection.closed:
            connection = await self._connected()
        waiter = connection.send(packed(command))
        try:
            async with asyncio.timeout(self._timeout_s):
                return await waiter
        except TimeoutError:
            connection.abort()  # a reply that comes late would answer the next command
            raise redis.exceptions.TimeoutError("Redis did not answer in time") from None

    async def _connected(self) -> _Connection:
        """The connection, opened by the first command that needs it (the others wait for it)."""
        async with self._lock:
            if self._connection is None or self._connection.closed:
                self._connection = await self._connect()
            return self._connection

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = self._where
        async with asyncio.timeout(self._timeout_s):
            if "path" in where:
                _, connection = await loop.create_unix_connection(_Connection, where["path"])
            else:
                _, connection = await loop.create_connection(_Connection, where.get("host", "localhost"), where.get("port", 6379))
            try:
                if where.get("password"):
                    await connection.send(packed(("AUTH", *filter(None, [where.get("username")]), where["password"])))
                if where.get("db"):
                    await connection.send(packed(("SELECT", where["db"])))
            except BaseException:
                connection.abort()
                raise
        return connection

    def reset(self) -> None:
        """Drop the connection (dead after Redis restarted): the next command opens a fresh one."""
        if self._connection is not None:
            self._connection.abort()
            self._connection = None

    async def aclose(self) -> None:
        self.reset()
