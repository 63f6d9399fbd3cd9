"""`make bench-peer`: LiteLLM Proxy with one worker, under the same load and upstream as `make bench`.

The proxy comes from its own virtual environment (.venv-peer, installed by the Makefile from
the hash-checked requirements-peer.lock), listens on loopback with one uvicorn worker pinned
to the measured core, and routes bench-burst / bench-paced to the same pre-built upstream.
The load generator's raw HTTP path (the same client as the floor) calls the proxy's
/v1/chat/completions, and the proxy's CPU is read from /proc around each run, as the
service's is. Writes bench/results/peer.json, which `make bench` puts beside its own paths.

    python -m bench.peer [--runs 3] [--seconds 2] [--concurrency 1,32,256]
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
from pathlib import Path
from typing import Any

import yaml

from bench.load import rss_mb
from bench.run import MEASURED_CPU, OTHER_CPU, RESULTS, ROOT, env, load, pinned, wait_port
from tests.support.servers import free_port

PEER_PYTHON = ROOT / ".venv-peer" / "bin" / "python"
MODELS = ("bench-burst", "bench-paced")


def proxy_config(upstream: str) -> dict[str, Any]:
    """Each bench model as an OpenAI-compatible deployment at the upstream; no database, no callbacks."""

    def params(model: str) -> dict[str, str]:
        return {"model": f"openai/{model}", "api_base": f"{upstream}/v1", "api_key": "os.environ/BENCH_KEY"}

    return {
        "model_list": [{"model_name": m, "litellm_params": params(m)} for m in MODELS],
        "litellm_settings": {"drop_params": True, "request_timeout": 600},
    }


def first_completion(url: str, started: float, proc: subprocess.Popen[bytes]) -> float:
    """Seconds from process start until a chat completion through the proxy succeeds."""
    import urllib.error
    import urllib.request

    body = json.dumps({"model": "bench-burst", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {os.environ['BENCH_BEARER']}"}
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM Proxy exited with {proc.returncode}: see {RESULTS / 'server-proxy.log'}")
        request = urllib.request.Request(f"{url}/v1/chat/completions", body, headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() - started > 120:
            raise RuntimeError("LiteLLM Proxy did not answer within 120 s")
        time.sleep(0.05)


def proxy_version() -> str:
    out = subprocess.run(
        [str(PEER_PYTHON), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,32,256")
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        sys.exit(f"{PEER_PYTHON} is missing: run `make bench-peer`, which installs it from requirements-peer.lock")
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The proxy refuses to start without a master key; the load generator sends it (BENCH_BEARER).
    os.environ["BENCH_BEARER"] = "sk-" + secrets.token_hex(32)
    upstream_port, proxy_port = free_port(), free_port()
    upstream_url, proxy_url = f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{proxy_port}"
    upstream = subprocess.Popen(pinned(OTHER_CPU, "-m", "bench.upstream", "--port", str(upstream_port)), env=env(), cwd=ROOT)
    procs: list[subprocess.Popen[bytes]] = [upstream]
    try:
        wait_port(upstream_port)
        with tempfile.TemporaryDirectory() as tmp, open(RESULTS / "server-proxy.log", "w") as log:
            config = Path(tmp) / "proxy.yaml"
            config.write_text(yaml.safe_dump(proxy_config(upstream_url)))
            argv = ["taskset", "-c", MEASURED_CPU, str(PEER_PYTHON), "-m", "litellm.proxy.proxy_cli",
                    "--config", str(config), "--host", "127.0.0.1", "--port", str(proxy_port), "--num_workers", "1"]  # fmt: skip
            started = time.monotonic()
            proxy_env = env() | {"LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": os.environ["BENCH_BEARER"]}
            proxy = subprocess.Popen(argv, env=proxy_env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
            procs.append(proxy)
            print("  starting LiteLLM Proxy …", file=sys.stderr, flush=True)
            startup_s = first_completion(proxy_url, started, proxy)
            time.sleep(0.5)
            idle_rss_mb = rss_mb(proxy.pid)
            rows = load(args, "proxy", "--path", "http", "--upstream", proxy_url, "--pid", str(proxy.pid), cpu=OTHER_CPU)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = {"litellm_version": proxy_version(), "workers": 1, "startup_s": startup_s, "idle_rss_mb": idle_rss_mb, "rows": rows}
    (RESULTS / "peer.json").write_text(json.dumps(out, indent=2))
    for row in rows:
        print(json.dumps({k: row[k] for k in ("mode", "concurrency", "calls_per_s", "p50_ms", "cpu_us_per_call")}))
    print(f"LiteLLM Proxy {out['litellm_version']}: start-up {startup_s:.2f} s, idle RSS {idle_rss_mb:.0f} MB")
    print(f"wrote {RESULTS / 'peer.json'}; `make bench` shows it beside the service")


if __name__ == "__main__":
    main()
