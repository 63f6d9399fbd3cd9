"""`make profile`: where the fast path's CPU goes, sampled by py-spy under the benchmark's load.

Starts the pre-built upstream and the service on its fast (direct) path exactly as
`bench.run` does (the service pinned to the measured core, upstream, load generator and
py-spy on the other), drives each load with `bench.load`, and attaches
`py-spy record --format raw` to the server while the load runs:

- `unary`: Complete at c = 32 (the unary cost);
- `paced`: Stream at c = 1, chunks 2 ms apart (the first token, with the core idling between
  chunks as it does for real tokens).

py-spy samples with `--nonblocking`: it reads the server's stacks while it runs. In its
default blocking mode it stops every thread of the server for each sample (ptrace), and at
1 kHz that slowed this server about eightfold (66 unary calls/s instead of ~530) and
changed what it spends time on (timeouts, connection waits); a rare torn stack costs less
than that. Blocking mode is also the only one that can unwind C frames (`--native`), so
cygrpc's Cython code has no frames of its own here: the time in it is the self time of the
Python frame that called into it, mostly asyncio's `Handle._run` (a callback cygrpc
scheduled), which the summary counts as grpc/cygrpc (with asyncio's C task steps, which
have no frames either). The rate is 997 Hz, a prime, so sampling does not fall in step with
the 1 ms and 2 ms timers of the load; py-spy shares its core with the load and the upstream,
so it takes fewer samples than that (a quarter to a third of them here), still spread over
the whole window. Only the event loop's thread is summarized (the thread pool and the
metrics server's thread wait); the CPU of grpc's core threads (its EventEngine poller,
timers), which py-spy cannot see at all, is reported beside it from /proc, per thread.

Each load runs twice: once unsampled, then sampled, so the summary shows how much sampling
disturbed the figures.

For each load it writes to bench/results/ the collapsed stacks (`profile-<load>.txt`, one
`frame;frame;… count` line per distinct stack: flamegraph.pl and speedscope read it), and
`profile-summary.txt`: the share of samples per group of code (innermost group on the stack,
so the groups add up to 100%; and inclusive), and the top functions by inclusive and self share.

    python -m bench.profile [--seconds 6] [--rate 997] [--loads unary,paced]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.load import CLOCK_TICKS
from bench.run import OTHER_CPU, RESULTS, ROOT, Server, env, pinned, wait_port
from tests.support.servers import free_port

LOADS = {"unary": ("unary", "32"), "paced": ("paced", "1")}
# A frame's group, by the innermost frame on the stack that matches one (first match of this list
# for that frame). Order matters only within a frame: json under direct_request is JSON.
GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("JSON", r"\bjson/|_json\.|orjson|ujson|json_(encode|decode)|\(json\)"),
        ("logging/metrics", r"logging/|llm_service/logs\.py|llm_service/metrics\.py|prometheus_client|secrets\.py"),
        ("aiohttp send/receive", r"aiohttp|multidict|yarl|propcache|direct_transport\.py|direct_decode\.py"),
        ("direct_request building", r"direct_request\.py|litellm|core/request\.py|core/plan\.py|pydantic"),
        ("convert", r"llm_service/convert\.py"),
        ("servicer", r"llm_service/servicer\.py|llm_service/relay\.py|llm_service/interceptors\.py|llm_service/auth\.py"),
        ("engine", r"llm_service/core/|llm_service/quotas|llm_service/tracing\.py"),
        ("idle trimmer", r"llm_service/memory\.py"),  # gc and malloc_trim, once the server has paused 2 s
        ("grpc/cygrpc", r"grpc|cygrpc|\.pyx|\.pxi|protobuf|_message|upb"),
    )
)
OTHER = "other"
TOP = 25
LOOP_ROOT = "_run_module_as_main"  # the main thread, which runs the event loop
IDLE_LEAF = re.compile(r"Selector\.select \(selectors\.py")  # the loop waiting for its sockets
# Self time here is C code a callback entered: on this server, cygrpc's (its Cython has no frames).
CALLBACK_LEAF = re.compile(r"^Handle\._run \(asyncio/events\.py")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of pid (threads of one name summed)."""
    out: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return dict(out)


def group_of(frame: str) -> str | None:
    return next((name for name, pattern in GROUPS if pattern.search(frame)), None)


def read_stacks(path: Path) -> tuple[list[tuple[list[str], int]], int]:
    """The event loop's busy stacks in py-spy's raw output (`outer frame;…;inner frame count`),
    outermost first; and how many samples found the loop waiting."""
    stacks, idle = [], 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not (count.isdigit() and frames[0].startswith(LOOP_ROOT)):
            continue
        if IDLE_LEAF.search(frames[-1]):
            idle += int(count)
        else:
            stacks.append((frames, int(count)))
    return stacks, idle


def summarize(stacks: list[tuple[list[str], int]]) -> dict[str, Any]:
    total = sum(n for _, n in stacks) or 1
    innermost: collections.Counter[str] = collections.Counter()
    inclusive_group: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        groups = [group_of(f) for f in frames]
        if CALLBACK_LEAF.search(frames[-1]):
            groups.append("grpc/cygrpc")  # and asyncio's C task steps, which have no frames either
        innermost[next((g for g in reversed(groups) if g), OTHER)] += n
        for g in set(groups) - {None}:
            inclusive_group[g] += n  # type: ignore[index]
        for f in set(frames):
            inclusive[_function(f)] += n
        self_time[_function(frames[-1])] += n

    def share(counter: collections.Counter[str], top: int | None = None) -> list[tuple[str, float]]:
        return [(k, v / total) for k, v in counter.most_common(top)]

    return {
        "samples": total,
        "groups": share(innermost),
        "groups_inclusive": share(inclusive_group),
        "inclusive": share(inclusive, TOP),
        "self": share(self_time, TOP),
    }


def _function(frame: str) -> str:
    """A frame without its line number: `name (file)`, so one function's lines are counted together."""
    return re.sub(r":\d+\)$", ")", frame)


def report(name: str, summary: dict[str, Any], idle: int, cpu: dict[str, float], loads: list[dict[str, Any]]) -> str:
    busy_share = summary["samples"] / (summary["samples"] + idle or 1)
    lines = [f"== {name}: {summary['samples']:,} samples of the event loop busy ({busy_share:.0%} of its samples)"]
    lines += [f"load {'unsampled' if i == 0 else 'sampled'}: {json.dumps(load)}" for i, load in enumerate(loads)]
    busy = sum(cpu.values()) or 1
    lines.append("CPU per thread while sampled (s, share): " + ", ".join(f"{k} {v:.2f} ({v / busy:.0%})" for k, v in cpu.items()))
    lines.append("groups (innermost on the stack; adds up to 100%):")
    lines += [f"  {share:6.1%}  {group}" for group, share in summary["groups"]]
    lines.append("groups (inclusive: a sample counts for every group on its stack):")
    lines += [f"  {share:6.1%}  {group}" for group, share in summary["groups_inclusive"]]
    for kind in ("inclusive", "self"):
        lines.append(f"top functions by {kind} share:")
        lines += [f"  {share:6.1%}  {fn}" for fn, share in summary[kind]]
    return "\n".join(lines)


def profile_load(args: argparse.Namespace, name: str, server: Server) -> str:
    """Run the load twice; py-spy samples the server during the second run."""
    mode, concurrency = LOADS[name]
    out = RESULTS / f"profile-{name}.txt"
    argv = pinned(OTHER_CPU, "-m", "bench.load", "--label", "service-fast", "--target", f"127.0.0.1:{server.port}",
                  "--pid", str(server.proc.pid), "--modes", mode, "--concurrency", concurrency, "--runs", "2",
                  "--seconds", str(args.seconds + 1.0))  # fmt: skip
    print(f"  profiling {name} ({mode}, c = {concurrency}) …", file=sys.stderr, flush=True)
    loader = subprocess.Popen(argv, env=env(), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert loader.stdout is not None
    rows = [json.loads(loader.stdout.readline())]  # the unsampled run is over: the sampled one starts
    time.sleep(0.5)
    before = thread_cpu(server.proc.pid)
    spy = ["taskset", "-c", OTHER_CPU, args.py_spy, "record", "--pid", str(server.proc.pid), "--format", "raw",
           "--rate", str(args.rate), "--duration", str(round(args.seconds)), "--nonblocking", "--output", str(out)]  # fmt: skip
    subprocess.run(spy, check=True, capture_output=True)
    after = thread_cpu(server.proc.pid)
    rows += [json.loads(line) for line in loader.stdout if line.startswith("{")]
    loader.wait(60)
    shown = ("calls_per_s", "cpu_us_per_call", "cpu_us_per_chunk", "ttft_p50_ms")
    loads = [{k: round(row[k], 2) for k in shown if row[k] and not (mode == "unary" and k == "ttft_p50_ms")} for row in rows]
    cpu = {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0.005}
    stacks, idle = read_stacks(out)
    return report(name, summarize(stacks), idle, cpu, loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="sampled seconds per load")
    parser.add_argument("--rate", type=int, default=997)
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--py-spy", default=str(Path(sys.executable).parent / "py-spy"))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    upstream_port = free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    upstream = subprocess.Popen(pinned(OTHER_CPU, "-m", "bench.upstream", "--port", str(upstream_port)), env=env(), cwd=ROOT)
    reports = []
    try:
        wait_port(upstream_port)
        with tempfile.TemporaryDirectory() as tmp:
            server = Server("service-fast", Path(tmp), upstream_url)
            try:
                reports = [profile_load(args, name, server) for name in args.loads.split(",")]
            finally:
                server.stop()
    finally:
        upstream.terminate()
        upstream.wait(10)
    text = "\n\n".join(reports) + "\n"
    (RESULTS / "profile-summary.txt").write_text(text)
    print(text)
    print(f"wrote {RESULTS / 'profile-summary.txt'} and the collapsed stacks beside it")


if __name__ == "__main__":
    main()
