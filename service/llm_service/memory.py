"""Giving memory back after a burst: when the server has been idle a moment, collect and trim the heap.

A thousand open streams leave their freed buffers in glibc's arenas, which it keeps for the
process rather than returning them; after the burst RSS would stay ~20% above where it was.
Once no RPC has started or been running for IDLE_S, the trimmer runs the cycle collector and
`malloc_trim(0)` (both a few milliseconds on an idle heap), so a pod's memory follows its load
back down. Nothing runs while calls are in flight.

What start-up loaded is frozen out of the cycle collector once the server is up
(`freeze_startup_heap`), so neither these collections nor the ones allocation triggers during
calls walk LiteLLM's few hundred thousand long-lived objects.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc

IDLE_S = 2.0


def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: collecting is all there is to do
        return None


class IdleTrimmer:
    """Told when calls start and end; trims once none has been running or started for idle_s."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self.active = 0
        self.started = 0  # calls started so far
        self.trims = 0
        self._timer: asyncio.TimerHandle | None = None
        self._trim = _malloc_trim()

    def begin(self) -> None:
        """A call started."""
        self.active += 1
        self.started += 1

    def end(self) -> None:
        """A call ended; when it was the last, trim unless another call starts within idle_s."""
        self.active -= 1
        if self.active == 0 and self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.idle_s, self._fire, self.started)

    def _fire(self, started_then: int) -> None:
        self._timer = None
        if self.active:  # the last of these calls to end schedules again
            return
        if self.started != started_then:  # calls came and went meanwhile: wait for a whole quiet period
            self._schedule()
            return
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.trims += 1

    def cancel(self) -> None:
        """Drop the pending trim (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def freeze_startup_heap() -> None:
    """Once the server is up: collect what start-up left behind, then move every object still alive
    (LiteLLM's modules and tables, about a third of a million objects) out of the cycle collector's
    reach. They live as long as the process, yet each full collection walked them all: 0.2-0.5 s
    with the loop held, at whatever moment an allocation triggered it, a request's included."""
    gc.collect()
    gc.freeze()
