"""Fault 7: SIGTERM during 50 open streams: all 50 complete, new calls are refused, the process exits 0 in time."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc

from fake_upstream import FakeUpstream, Script
from llm_client import pb
from llm_client._proto.llm.v1 import llm_service_pb2_grpc as pb_grpc
from tests.support.messages import user_msg
from tests.support.servers import ServerProcess

STREAMS = 50
GRACE_S = 15.0


def test_f07_sigterm_lets_50_open_streams_finish_and_refuses_new_calls(fake: FakeUpstream, tmp_path: Path) -> None:
    words = " ".join(f"w{i}" for i in range(20))
    fake.script(Script(text=words, chunk_delay_s=0.1, times=STREAMS))  # each stream lasts about 2 s
    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    server = ServerProcess({"routes": routes, "server": {"drain_grace_s": GRACE_S}}, tmp_path)
    finished: list[str] = []
    failures: list[BaseException] = []
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.LLMServiceStub(channel)

    def stream() -> None:
        try:
            events = list(stub.Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=60))
            if events[-1].WhichOneof("event") == "finish":
                finished.append("".join(e.text_delta.text for e in events))
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for t in threads:
        t.start()
    fake.wait_for(lambda rs: len(rs) == STREAMS, timeout_s=30)
    signalled = time.monotonic()
    server.proc.send_signal(15)

    time.sleep(0.3)
    with grpc.insecure_channel(server.target) as fresh:
        try:
            pb_grpc.LLMServiceStub(fresh).Complete(pb.CompleteRequest(model="openai", messages=[user_msg()]), timeout=5)
            refused = None
        except grpc.RpcError as err:
            refused = err.code()
    for t in threads:
        t.join(60)
    code = server.proc.wait(timeout=GRACE_S + 10)
    exited = time.monotonic()
    server.stop()
    channel.close()

    assert failures == []
    assert len(finished) == STREAMS and all(text == words for text in finished), "every open stream completed"
    assert refused == grpc.StatusCode.UNAVAILABLE, "a new call during the drain is refused"
    assert code == 0
    assert exited - signalled < GRACE_S, f"exited {exited - signalled:.1f} s after SIGTERM"
    assert len(fake.requests()) == STREAMS, "the refused call never reached the upstream"


def test_f07_streams_still_open_when_the_grace_runs_out_end_with_an_error_event(fake: FakeUpstream, tmp_path: Path) -> None:
    routes = {"openai": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": {"env": "TEST_PROVIDER_KEY"}}}
    server = ServerProcess({"routes": routes, "server": {"drain_grace_s": 2}}, tmp_path)
    fake.script(Script(text=" ".join(["word"] * 200), chunk_delay_s=0.1, times=3))
    outcomes: list[tuple[list[str], str, str]] = []

    def reader() -> None:
        with grpc.insecure_channel(server.target) as channel:
            call = pb_grpc.LLMServiceStub(channel).Stream(pb.StreamRequest(model="openai", messages=[user_msg()]), timeout=60)
            kinds: list[str] = []
            reason = ""
            try:
                for event in call:
                    kinds.append(event.WhichOneof("event"))
                    if event.WhichOneof("event") == "error":
                        reason = event.error.reason
            except grpc.RpcError as err:
                outcomes.append((kinds, reason, err.code().name))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    fake.wait_for(lambda rs: len(rs) == 3 and all(r.chunks_sent > 2 for r in rs), timeout_s=10)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert server.proc.wait(timeout=30) == 0
    server.stop()
    assert len(outcomes) == 3
    for kinds, reason, code in outcomes:
        assert kinds[0] == "text_delta" and kinds[-1] == "error", kinds[-3:]
        assert (reason, code) == ("SERVER_SHUTTING_DOWN", "UNAVAILABLE")
