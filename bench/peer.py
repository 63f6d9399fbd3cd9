"""`make bench-peer`: the peer gateways, each one process on the measured core, under the same
load and upstream as `make bench`.

- LiteLLM Proxy, from its own virtual environment (.venv-peer, installed by the Makefile from
  the hash-checked requirements-peer.lock), one uvicorn worker, routing bench-burst /
  bench-paced to the pre-built upstream.
- The Portkey AI gateway (Node), from bench/portkey (installed by `npm ci` from its lock), one
  Node process, told the upstream per request by its custom-host header.

The load generator's raw HTTP path (the same client as the floor) calls each peer's
/v1/chat/completions, and the peer's CPU is read from /proc around each run, as the service's
is. Writes bench/results/peer.json (LiteLLM Proxy) and peer-portkey.json, which `make bench`
puts beside its own paths.

    python -m bench.peer [--peer litellm-proxy,portkey] [--runs 3] [--seconds 2] [--concurrency 1,32,256]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.load import rss_mb
from bench.run import MEASURED_CPU, OTHER_CPU, RESULTS, ROOT, env, load, pinned, wait_port
from tests.support.servers import free_port

PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
PORTKEY = ROOT / "bench" / "portkey"
PORTKEY_SERVER = PORTKEY / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
MODELS = ("bench-burst", "bench-paced")


def proxy_config(upstream: str) -> dict[str, Any]:
    """Each bench model as an OpenAI-compatible deployment at the upstream; no database, no callbacks."""

    def params(model: str) -> dict[str, str]:
        return {"model": f"openai/{model}", "api_base": f"{upstream}/v1", "api_key": "os.environ/BENCH_KEY"}

    return {
        "model_list": [{"model_name": m, "litellm_params": params(m)} for m in MODELS],
        "litellm_settings": {"drop_params": True, "request_timeout": 600},
    }


def first_completion(url: str, started: float, proc: subprocess.Popen[bytes], name: str, headers: dict[str, str]) -> float:
    """Seconds from process start until a chat completion through the peer succeeds."""
    import urllib.error
    import urllib.request

    body = json.dumps({"model": "bench-burst", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ['BENCH_BEARER']}", **headers}
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: see {RESULTS / f'server-{name}.log'}")
        request = urllib.request.Request(f"{url}/v1/chat/completions", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - started > 120:
            raise RuntimeError(f"{name} did not answer within 120 s")
        time.sleep(0.05)


def proxy_version() -> str:
    out = subprocess.run(
        [str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def portkey_version() -> str:
    return str(json.loads((PORTKEY_SERVER.parent.parent / "package.json").read_text())["version"])


@dataclass
class Peer:
    """How to start one peer gateway: its command, its environment, the headers each request needs."""

    name: str
    label: str
    results: str
    argv: list[str]
    env: dict[str, str]
    headers: dict[str, str]
    version: str
    version_key: str


def litellm_proxy(tmp: Path, port: int, upstream_url: str) -> Peer:
    if not PEER_PYTHON.exists():
        sys.exit(f"{PEER_PYTHON} is missing: run `make bench-peer`, which installs it from requirements-peer.lock")
    config = tmp / "proxy.yaml"
    config.write_text(yaml.safe_dump(proxy_config(upstream_url)))
    argv = [str(PEER_PYTHON), "-m", "litellm.proxy.proxy_cli",
            "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]  # fmt: skip
    # The proxy refuses to start without a master key; the load generator sends it (BENCH_BEARER).
    peer_env = {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": os.environ["BENCH_BEARER"]}
    return Peer("proxy", "LiteLLM Proxy", "peer.json", argv, peer_env, {}, proxy_version(), "litellm_version")


def portkey(tmp: Path, port: int, upstream_url: str) -> Peer:
    if not PORTKEY_SERVER.exists():
        sys.exit(f"{PORTKEY_SERVER} is missing: run `make bench-peer`, which installs it with npm ci from its lock")
    argv = ["node", str(PORTKEY_SERVER), f"--port={port}", "--headless"]
    # The gateway forwards the caller's bearer key to the provider; the upstream ignores it.
    headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{upstream_url}/v1"}
    return Peer("portkey", "Portkey AI gateway", "peer-portkey.json", argv, {"NODE_ENV": "production"}, headers,
                portkey_version(), "portkey_version")  # fmt: skip


PEERS = {"litellm-proxy": litellm_proxy, "portkey": portkey}


def measure(make: Any, args: argparse.Namespace) -> None:
    upstream_port, peer_port = free_port(), free_port()
    upstream_url, peer_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{peer_port}"
    upstream = subprocess.Popen(pinned(OTHER_CPU, "-m", "bench.upstream", "--port", str(upstream_port)), env=env(), cwd=ROOT)
    procs: list[subprocess.Popen[bytes]] = [upstream]
    try:
        wait_port(upstream_port)
        with tempfile.TemporaryDirectory() as tmp:
            peer: Peer = make(Path(tmp), peer_port, upstream_url)
            with open(RESULTS / f"server-{peer.name}.log", "w") as log:
                started = time.monotonic()
                argv = ["taskset", "-c", MEASURED_CPU, *peer.argv]
                proc = subprocess.Popen(argv, env=env() | peer.env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
                procs.append(proc)
                print(f"  starting {peer.label} …", file=sys.stderr, flush=True)
                startup_s = first_completion(peer_url, started, proc, peer.name, peer.headers)
                time.sleep(0.5)
                idle_rss_mb = rss_mb(proc.pid)
                os.environ["BENCH_HEADERS"] = json.dumps(peer.headers)
                rows = load(args, peer.name, "--path", "http", "--upstream", peer_url, "--pid", str(proc.pid), cpu=OTHER_CPU)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    out = {peer.version_key: peer.version, "workers": 1, "startup_s": startup_s, "idle_rss_mb": idle_rss_mb, "rows": rows}
    (RESULTS / peer.results).write_text(json.dumps(out, indent=2))
    for row in rows:
        print(json.dumps({k: row[k] for k in ("mode", "concurrency", "calls_per_s", "p50_ms", "cpu_us_per_call")}))
    print(f"{peer.label} {peer.version}: start-up {startup_s:.2f} s, idle RSS {idle_rss_mb:.0f} MB")
    print(f"wrote {RESULTS / peer.results}; `make bench` shows it beside the service")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", default=",".join(PEERS), help="which peers, comma-separated: " + ", ".join(PEERS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,32,256")
    parser.add_argument("--modes", default="unary,burst,paced")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_BEARER"] = "sk-" + secrets.token_hex(32)
    for name in args.peer.split(","):
        measure(PEERS[name], args)


if __name__ == "__main__":
    main()
