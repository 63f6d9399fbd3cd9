"""Memory given back after a burst: the idle trimmer (memory.py) on a real server and on a real event loop.

How much RSS comes back is measured by `make bench` (1,000 open streams, then closed); tests
prove when the trim runs: once calls have stopped, never while one is in flight.
"""

from __future__ import annotations

import asyncio
import time

from fake_upstream import FakeUpstream
from llm_service.memory import IdleTrimmer
from tests.support.messages import user_msg
from tests.support.servers import custom_server


def test_the_server_trims_its_heap_once_the_calls_stop(fake: FakeUpstream) -> None:
    with custom_server(fake) as (srv, client):
        assert srv.running is not None
        trimmer = srv.running.admission.trimmer
        for _ in range(3):
            client.complete("openai", [user_msg()], timeout=30)
        assert trimmer.trims == 0 and trimmer.active == 0
        deadline = time.monotonic() + trimmer.idle_s + 10
        while trimmer.trims == 0:
            assert time.monotonic() < deadline, "no trim after the calls stopped"
            time.sleep(0.05)
        time.sleep(trimmer.idle_s + 0.5)
        assert trimmer.trims == 1  # once per quiet period, not again and again


def test_no_trim_while_a_call_is_in_flight_or_calls_keep_coming() -> None:
    async def scenario() -> list[int]:
        trimmer = IdleTrimmer(idle_s=0.2)
        seen = []
        trimmer.begin()
        await asyncio.sleep(0.5)  # one long call
        seen.append(trimmer.trims)
        trimmer.end()
        await asyncio.sleep(0.5)  # quiet
        seen.append(trimmer.trims)
        for _ in range(50):  # short calls every 10 ms: never a whole quiet period
            trimmer.begin()
            await asyncio.sleep(0.005)
            trimmer.end()
            await asyncio.sleep(0.005)
        seen.append(trimmer.trims)
        await asyncio.sleep(0.5)  # quiet again
        seen.append(trimmer.trims)
        trimmer.begin()
        trimmer.end()
        trimmer.cancel()  # the server stops: the pending trim is dropped
        await asyncio.sleep(0.5)
        seen.append(trimmer.trims)
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1, 2, 2]
