"""A stream's events on their way to the caller, read from the provider in a task of their own.

While one message is being written to the caller, the provider's next events keep arriving.
When the writes fall behind (a caller that reads slowly, or a server busy with many streams),
a backlog of at least `COALESCE_BACKLOG` events goes out with the runs of consecutive text
(or reasoning) deltas joined into one delta each: fewer, larger messages, each still carrying
only new text, in the same order as the events. A stream that keeps up sees a backlog shorter
than that, and gets one message per event as before.

The backlog is bounded (`MAX_BACKLOG`): past it, the reader waits for the writer, so a caller
that stops reading holds the provider back through TCP, as it did without the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from llm_service.core import types

COALESCE_BACKLOG = 16
MAX_BACKLOG = 512


class Relay:
    """Reads `upstream` ahead of the writer; `next_batch` gives what arrived since the last call."""

    def __init__(self, upstream: AsyncGenerator[types.Event, None], coalesce: bool = True) -> None:
        self._upstream = upstream
        self._coalesce = coalesce
        self._backlog: list[types.Event] = []
        self._ended = False
        self._failure: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._arrived: asyncio.Future[None] | None = None  # the writer waits on it for events
        self._taken: asyncio.Future[None] | None = None  # the reader waits on it when the backlog is full
        self._reader = self._loop.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self._upstream:
                self._backlog.append(event)
                self._wake_writer()
                if len(self._backlog) >= MAX_BACKLOG:
                    self._taken = self._loop.create_future()
                    await self._taken
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the provider's failure, given to the writer after the events before it
            self._failure = exc
        finally:
            self._ended = True
            self._wake_writer()

    def _wake_writer(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    async def next_batch(self) -> list[types.Event]:
        """The events that arrived since the last batch (waiting for one if none did), in order;
        StopAsyncIteration at the end, or the provider's failure once the events before it are out."""
        while not self._backlog:
            if self._ended:
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                raise StopAsyncIteration
            self._arrived = self._loop.create_future()
            await self._arrived
        batch, self._backlog = self._backlog, []
        if self._taken is not None and not self._taken.done():
            self._taken.set_result(None)
        if self._coalesce and len(batch) >= COALESCE_BACKLOG:
            return joined(batch)
        return batch

    async def aclose(self) -> None:
        """Stop reading and close the provider's stream (its request with it)."""
        if not self._reader.done():
            self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._upstream.aclose()


def joined(events: list[types.Event]) -> list[types.Event]:
    """The events with each run of consecutive text deltas (and of reasoning deltas) as one delta."""
    out: list[types.Event] = []
    run: list[str] = []
    run_kind: type[types.TextDelta] | type[types.ReasoningDelta] | None = None
    for event in events:
        kind = type(event) if isinstance(event, types.TextDelta | types.ReasoningDelta) else None
        if run_kind is not None and kind is not run_kind:
            out.append(run_kind("".join(run)))
            run, run_kind = [], None
        if kind is None:
            out.append(event)
        else:
            run_kind = kind
            run.append(event.text)  # type: ignore[union-attr]
    if run_kind is not None:
        out.append(run_kind("".join(run)))
    return out
