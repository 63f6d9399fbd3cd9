"""Fault 5: 100% upstream failure for a sustained burst.

Upstream attempts stay at most 1.1 x incoming calls (the retry budget), and the breaker
opens, fails calls fast, and closes again after a successful probe once the upstream recovers.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError, Unavailable, channel_options, pb
from tests.support.messages import user_msg
from tests.support.metrics import scrape, total
from tests.support.servers import ServerPath, custom_server, on_both_paths

CALLS = 100
THREADS = 10


def _burst(target: str, calls: int) -> list[LLMServiceError]:
    errors: list[LLMServiceError] = []

    def worker(n: int) -> None:
        with LLMClient(target, options=channel_options(retries=False)) as c:
            for _ in range(n):
                try:
                    c.complete("openai", [user_msg()], timeout=30)
                except LLMServiceError as err:
                    errors.append(err)

    threads = [threading.Thread(target=worker, args=(calls // THREADS,)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


def test_f05_retry_budget_keeps_attempts_within_1_1_x_calls(fake: FakeUpstream) -> None:
    fake.script(Script(status=503, times=10 * CALLS))
    resilience = {"retry_budget_tokens": 10, "retry_budget_ratio": 0.1, "breaker_failures": 1_000_000}
    with custom_server(fake, resilience=resilience) as (srv, _):
        errors = _burst(srv.target, CALLS)
    attempts = len(fake.requests())
    assert len(errors) == CALLS and all(e.code == grpc.StatusCode.UNAVAILABLE for e in errors)
    assert attempts <= 1.1 * CALLS, f"{attempts} upstream attempts for {CALLS} calls"
    print(f"retry budget: {attempts} upstream attempts for {CALLS} failing calls ({attempts / CALLS:.2f}x)")


def test_f05_breaker_opens_fails_fast_and_closes_after_recovery(fake: FakeUpstream) -> None:
    open_s = 0.5
    fake.script(Script(status=503, times=1000))
    resilience = {"breaker_failures": 5, "breaker_open_s": open_s}
    with custom_server(fake, resilience=resilience) as (srv, client):
        port = srv.running.metrics_port if srv.running else 0
        for _ in range(2):  # 1 + 3 transient retries, then 1 more: five consecutive failures
            with pytest.raises(Unavailable):
                client.complete("openai", [user_msg()], timeout=30)
        seen = len(fake.requests())
        fast = []
        for _ in range(20):
            started = time.perf_counter()
            with pytest.raises(Unavailable) as info:
                client.complete("openai", [user_msg()], timeout=30)
            fast.append(time.perf_counter() - started)
            assert info.value.reason == "UPSTREAM_CIRCUIT_OPEN"
            assert info.value.retry_delay_s is not None and info.value.retry_delay_s <= open_s
        assert len(fake.requests()) == seen, "an open breaker sends nothing upstream"
        assert total(scrape(port), "llm_circuit_breaker_state", route="openai") == 1

        fake.reset()  # the upstream recovers (every request is answered)
        time.sleep(open_s + 0.1)
        assert client.complete("openai", [user_msg()], timeout=30).text, "the probe succeeded"
        assert all(client.complete("openai", [user_msg()], timeout=30).text for _ in range(5))
        assert len(fake.requests()) == 6
        assert total(scrape(port), "llm_circuit_breaker_state", route="openai") == 0
    print(f"open breaker: calls failed in {max(fast) * 1000:.1f} ms at most")


# --- a half-open probe is given back however it ends ------------------------------------------------

PROBE_ENDINGS = {
    # how the probe ends: (the upstream's script for the probe, the caller's timeout, cancel after s)
    "deadline": (Script(first_byte_delay_s=30), 1.0, None),
    "cancellation": (Script(first_byte_delay_s=30), 30.0, 0.5),
    "stall": (Script(text="a b c", stall_after_chunks=1, stall_s=30), 30.0, None),
    "error": (Script(status=503), 30.0, None),
}


def _probe(target: str, rpc: str, timeout: float, cancel_after: float | None) -> None:
    from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.LLMServiceStub(channel)
        if rpc == "Complete":
            future = stub.Complete.future(
                pb.CompleteRequest(model="openai", messages=[user_msg()], max_retries=0), timeout=timeout
            )
            if cancel_after is not None:
                time.sleep(cancel_after)
                future.cancel()
            with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)):
                future.result()
        else:
            stream = stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()], max_retries=0), timeout=timeout)
            if cancel_after is not None:
                threading.Timer(cancel_after, stream.cancel).start()
            with pytest.raises(grpc.RpcError):
                list(stream)


@on_both_paths
@pytest.mark.parametrize(
    ("rpc", "ending"),
    # a stall (idle_timeout_s between chunks) is a streamed answer's ending
    [
        (rpc, ending)
        for rpc in ("Complete", "Stream")
        for ending in sorted(PROBE_ENDINGS)
        if (rpc, ending) != ("Complete", "stall")
    ],
)
def test_f05_breaker_admits_calls_again_however_its_probe_ended(
    fake: FakeUpstream, path: ServerPath, rpc: str, ending: str
) -> None:
    open_s = 0.3
    resilience = {"breaker_failures": 3, "breaker_open_s": open_s}
    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    routes["openai"]["idle_timeout_s"] = 0.5
    probe_script, timeout, cancel_after = PROBE_ENDINGS[ending]
    fake.script(Script(status=503, times=3), probe_script)
    with custom_server(fake, path=path, resilience=resilience, routes=routes) as (srv, client):
        for _ in range(3):
            with pytest.raises(Unavailable):
                client.complete("openai", [user_msg()], max_retries=0, timeout=30)
        with pytest.raises(Unavailable) as opened:
            client.complete("openai", [user_msg()], timeout=30)
        assert opened.value.reason == "UPSTREAM_CIRCUIT_OPEN"
        time.sleep(open_s + 0.1)
        _probe(srv.target, rpc, timeout, cancel_after)
        fake.wait_for(lambda rs: len(rs) == 4 and rs[3].ended_at is not None, timeout_s=5)
        if ending in ("error", "stall"):
            time.sleep(open_s + 0.1)  # a failed probe opens the breaker again: the next probe comes after open_s
        answered = client.complete("openai", [user_msg()], timeout=30)
        assert answered.text, f"the breaker let a call through after a probe ended by {ending}"
        assert len(fake.requests()) == 5


def test_f05_rate_limits_never_open_the_breaker(fake: FakeUpstream) -> None:
    # A rate limit is the upstream asking for less traffic, not an outage (issue 18: five 429s with
    # retry-after 1 opened the breaker and everyone got 30 s of UPSTREAM_CIRCUIT_OPEN).
    fake.script(Script(status=429, headers={"retry-after": "0"}, times=5), Script(text="ok", times=2))
    with custom_server(fake, resilience={"breaker_failures": 3}) as (_, c):
        assert c.complete("openai", [user_msg()], timeout=30).text == "ok"
        assert c.complete("openai", [user_msg()], timeout=30).text == "ok", "no UPSTREAM_CIRCUIT_OPEN after the 429s"
    assert len(fake.requests()) == 7
