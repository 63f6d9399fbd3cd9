"""Several deployments per route (PC29's key pool and issue 18): which key each attempt goes to,
rests that honour Retry-After, refused keys taken out until their file changes, weights.
Through the real server on both transports; the fake upstream answers per key."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream, Script
from llm_client import LLMClient, LLMServiceError
from tests.support.messages import user_msg
from tests.support.servers import ServerPath, custom_server, on_both_paths

pytestmark = pytest.mark.alone  # make test runs it after the parallel phase: its counts and timings need the machine to itself


KEY_A = "sk-deployment-a-000000000000AAAA"
KEY_B = "sk-deployment-b-000000000000BBBB"


def _pool(fake: FakeUpstream, tmp_path: Path, *weights: int, **route: Any) -> dict[str, Any]:
    """A route 'pool' of deployments a, b, … on the fake, each key in its own file."""
    deployments = []
    for name, key, weight in zip("ab", (KEY_A, KEY_B), weights or (1, 1), strict=False):
        (tmp_path / name).write_text(key)
        deployments.append({"name": name, "key": {"file": str(tmp_path / name)}, "weight": weight})
    return {"pool": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "deployments": deployments, **route}}


def _keys(fake: FakeUpstream) -> list[str]:
    """The key each upstream request was sent with, as a deployment name."""
    names = {f"Bearer {KEY_A}": "a", f"Bearer {KEY_B}": "b"}
    return [names.get(r.headers.get("Authorization", ""), "?") for r in fake.requests()]


def _text(c: LLMClient, rpc: str, **options: Any) -> tuple[str, str]:
    """The answer's text and the deployment the gateway says answered."""
    if rpc == "complete":
        done = c.complete("pool", [user_msg()], timeout=options.pop("timeout", 30), **options)
        return done.text, done.deployment
    events = list(c.stream("pool", [user_msg()], timeout=options.pop("timeout", 30), **options))
    finish = events[-1].finish
    assert finish is not None
    return "".join(e.delta for e in events), finish.gateway.deployment


@on_both_paths
@pytest.mark.parametrize("rpc", ["complete", "stream"])
def test_pc29_a_rate_limited_key_rests_as_asked_and_the_next_attempt_takes_another_at_once(
    fake: FakeUpstream, tmp_path: Path, path: ServerPath, rpc: str
) -> None:
    fake.script(Script(status=429, headers={"retry-after": "1"}, match_key=KEY_A), Script(text="from b", times=5))
    with custom_server(fake, path=path, routes=_pool(fake, tmp_path, ramp_s=0.2)) as (_, c):
        assert _text(c, rpc) == ("from b", "b")
        first, second = (r.started_at for r in fake.requests())
        assert second - first < 0.5, "no wait for the 1 s asked: the retry went to the other key at once"
        for _ in range(3):
            _text(c, rpc)  # within the rest: only b
        assert _keys(fake) == ["a", "b", "b", "b", "b"]
        time.sleep(1.3)  # the rest, then the ramp back to its whole weight
        fake.reset()
        fake.script(Script(text="both", times=4))
        for _ in range(4):
            _text(c, rpc)
        assert sorted(_keys(fake)) == ["a", "a", "b", "b"], "after the rest, both again"


@pytest.mark.parametrize("rpc", ["complete", "stream"])
def test_pc29_every_key_resting_waits_for_the_soonest_within_the_deadline_else_fails_at_once(
    fake: FakeUpstream, tmp_path: Path, rpc: str
) -> None:
    limited = Script(status=429, headers={"retry-after": "1"}, times=2)
    fake.script(limited, Script(text="woke"))
    with custom_server(fake, routes=_pool(fake, tmp_path)) as (_, c):
        started = time.monotonic()
        assert _text(c, rpc, timeout=5)[0] == "woke"
        assert time.monotonic() - started >= 0.95, "one wait for the soonest key"
        starts = [r.started_at for r in fake.requests()]
        assert len(starts) == 3 and starts[2] - starts[1] >= 0.95, "no back-to-back re-send meanwhile"

        fake.reset()
        fake.script(limited)
        with pytest.raises(LLMServiceError) as info:
            _text(c, rpc, timeout=0.8)
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED")
        assert info.value.retry_delay_s == pytest.approx(1.0, abs=0.3)
        assert len(fake.requests()) == 2


def test_pc29_weights_share_the_calls_evenly_spread(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.script(Script(text="ok", times=80))
    with custom_server(fake, routes=_pool(fake, tmp_path, 3, 1)) as (_, c):
        for _ in range(80):
            c.complete("pool", [user_msg()], timeout=30)
    keys = _keys(fake)
    assert keys.count("a") == 60 and keys.count("b") == 20, "3:1"
    assert "bb" not in "".join(keys), "spread out, not in runs"


def test_pc29_a_refused_key_is_taken_out_until_its_file_changes(
    fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Script(status=401, error={"message": "bad key"}, match_key=KEY_A), Script(text="ok", times=4))
    with caplog.at_level(logging.WARNING), custom_server(fake, routes=_pool(fake, tmp_path, ramp_s=0.1)) as (_, c):
        for _ in range(3):
            assert c.complete("pool", [user_msg()], timeout=30).deployment == "b"
        assert _keys(fake) == ["a", "b", "b", "b"]
        warning = next(r for r in caplog.records if r.getMessage().startswith("deployment out"))
        assert getattr(warning, "key", "") == "…AAAA" and KEY_A not in caplog.text, "only the key's fingerprint"

        fresh = "sk-deployment-a-rotated-0000CCCC"
        (tmp_path / "a").write_text(fresh)
        time.sleep(1.1)  # key files are re-read at most once a second
        fake.reset()
        fake.script(Script(text="ok", times=3))
        c.complete("pool", [user_msg()], timeout=30)  # finds the new key: back in, ramping for 0.1 s
        time.sleep(0.2)
        deployments = {c.complete("pool", [user_msg()], timeout=30).deployment for _ in range(2)}
        assert deployments == {"a", "b"}, "the new key brought it back"
        assert fake.requests()[0].headers["Authorization"] in (f"Bearer {fresh}", f"Bearer {KEY_B}")


@on_both_paths
def test_a_silent_first_deployment_is_abandoned_at_the_first_token_timeout_for_another(
    fake: FakeUpstream, tmp_path: Path, path: ServerPath
) -> None:
    with custom_server(fake, path=path, routes=_pool(fake, tmp_path, first_token_timeout_s=0.5)) as (_, c):
        _text(c, "stream"), _text(c, "stream")  # a, then b: LiteLLM's first call in a process is slow to start
        fake.reset()
        fake.script(Script(text="late", first_byte_delay_s=5, match_key=KEY_A), Script(text="from b", match_key=KEY_B))
        assert _text(c, "stream") == ("from b", "b")
    silent, answered = fake.requests()
    assert answered.started_at - silent.started_at >= 0.45, "abandoned at the timeout, not before"
    fake.wait_for(lambda rs: rs[0].ended_at is not None, timeout_s=2)
    assert fake.requests()[0].outcome == "aborted", "the silent request was closed"


def test_deployment_metrics_say_which_is_up_which_rests_and_why(fake: FakeUpstream, tmp_path: Path) -> None:
    from tests.support.metrics import scrape, total

    fake.script(Script(status=429, headers={"retry-after": "1"}, match_key=KEY_A), Script(text="ok", times=2))
    with custom_server(fake, routes=_pool(fake, tmp_path)) as (srv, c):
        c.complete("pool", [user_msg()], timeout=30)
        assert srv.running is not None
        port = srv.running.metrics_port
        resting = scrape(port)
        time.sleep(1.2)
        woke = scrape(port)

    def up(samples: Any, deployment: str) -> float:
        return total(samples, "llm_deployment_up", route="pool", deployment=deployment)

    assert (up(resting, "a"), up(resting, "b")) == (0.0, 1.0)
    assert total(resting, "llm_deployment_out_total", route="pool", deployment="a", reason="rate_limit") == 1.0
    assert total(resting, "llm_deployment_upstream_seconds_count", route="pool", deployment="a") == 1.0
    assert up(woke, "a") == 1.0, "back up when its rest is over, without waiting for a call"


def test_least_inflight_sends_fewer_calls_to_a_slow_deployment(fake: FakeUpstream, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fake.script(
        Script(text="slow", first_byte_delay_s=0.3, match_key=KEY_A, times=60), Script(text="fast", match_key=KEY_B, times=60)
    )
    with custom_server(fake, routes=_pool(fake, tmp_path, balance="least_inflight")) as (_, c):
        with ThreadPoolExecutor(8) as workers:
            answered = list(workers.map(lambda _: c.complete("pool", [user_msg()], timeout=30).deployment, range(48)))
    assert answered.count("a") < len(answered) / 4, answered.count("a")


def test_a_deployment_back_from_a_rest_regains_its_share_gradually() -> None:
    from llm_service.config import parse_config
    from llm_service.core.deployments import DeploymentPool

    now = [0.0]
    route = {"model": "openai/x", "ramp_s": 10, "deployments": [{"name": "a"}, {"name": "b"}]}
    pool = DeploymentPool(parse_config({"routes": {"r": route}}, "t", {}).routes["r"], lambda *_: None, clock=lambda: now[0])
    pool._resting_until["a"] = 5.0  # as rest() leaves it (its timer needs a running loop)
    now[0] = 5.0
    pool._woke("a")

    def share(at: float, calls: int = 100) -> float:
        now[0] = at
        picks = [target.deployment for target in (pool.choose() for _ in range(calls)) if target is not None]
        return picks.count("a") / calls

    early, later, whole = share(5.5), share(12.0), share(20.0)
    assert early < 0.15 < later < 0.45 < whole, (early, later, whole)


def test_a_whole_answer_call_on_a_route_with_a_first_token_timeout_is_streamed_underneath(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script(Script(text="late", first_byte_delay_s=5, match_key=KEY_A), Script(text="from b", match_key=KEY_B))
    with custom_server(fake, routes=_pool(fake, tmp_path, first_token_timeout_s=0.5)) as (_, c):
        assert _text(c, "complete") == ("from b", "b")
    assert all(r.body.get("stream") is True for r in fake.requests()), "sent as a stream, collected for the caller"
