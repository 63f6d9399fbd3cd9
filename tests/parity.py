"""The provider-core parity table: each PC item and the tests that prove it.

    python tests/parity.py                     # the table from the test names
    python tests/parity.py --junit results.xml # ... and whether each of those tests passed

Exits 1 when an item has no test (or, with --junit, no passing test), or when a
test names an item that does not exist. Test names carry the ID: test_pc07_….
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ID_RE = re.compile(r"^test_pc(\d{2})_")

# The items of the provider-core specification (shared/spec/provider-core.md), in short.
ITEMS = {
    "PC01": "any LiteLLM model string works",
    "PC02": "ollama/ is sent as ollama_chat/",
    "PC03": "kimi/ and hive/ sent as anthropic/, /v1 stripped, hive Bearer",
    "PC04": "default api_base by model prefix; configured one wins",
    "PC05": "Claude subscription keys: Bearer, OAuth beta, user agent, billing block",
    "PC06": "Codex backend parameters; unary served by collecting the stream",
    "PC07": "cache_control on the system message of allow-listed models only",
    "PC08": "json_mode as an instruction; response_format passed through",
    "PC09": "tools in function format; arguments and schemas round-trip",
    "PC10": "empty assistant messages dropped",
    "PC11": "stream_options only where accepted; unsupported parameters dropped",
    "PC12": "429 retries, delay from retry-after-ms / retry-after / date / backoff",
    "PC13": "a retry never sleeps past the caller's deadline (better than reference)",
    "PC14": "empty response retried, except after assistant or finish=length",
    "PC15": "empty stream retried up to 3 times, except finish=length",
    "PC16": "transient errors retried with their own cap; permanent ones never",
    "PC17": "a stream that sent anything is never retried (better than reference)",
    "PC18": "text deltas as they arrive; tool calls, text end, finish after",
    "PC19": "tool-call fragments assembled by index and id",
    "PC20": "truncated tool arguments repaired; unrepairable ones name the tool",
    "PC21": "usage and cached tokens from wherever they come; cost in USD",
    "PC22": "reasoning streamed as its own event; signed thinking blocks returned",
    "PC23": "OpenRouter tool compatibility mode",
    "PC24": "MiniMax streamed through a non-streaming call",
    "PC25": "pause_turn becomes tool_calls or stop",
    "PC26": "failed-request dumps: off by default, no secrets, newest 50",
    "PC27": "token estimate: LiteLLM's counter, else characters / 4",
    "PC28": "LiteLLM work-arounds applied once, tested; a work-around whose target moved stops start-up",
    "PC29": "key pools: a 429 rests its key as asked and the retry takes another at once; all resting waits",
    "PC30": "short Retry-After jittered, backoff jittered, clamped after the jitter; backpressure 1-2 s",
    "PC31": "empty whole answers capped at 3 apart from rate limits; empty stream dumped once; after a 429 waits as asked",
    "PC32": "Gemini <tool_code> text becomes tool calls with synth_ ids; the blocks leave the text",
    "PC33": "cache_control on the last message too; an uncached dynamic suffix of the system prompt",
    "PC34": "cost: the provider's own figure, then LiteLLM's price, then the route's price",
    "PC35": "an answer complete before LiteLLM rejects Kimi's finish reason is delivered, not retried",
}


def tests_by_item() -> dict[str, list[str]]:
    """Item ID -> "file::test" for every test function whose name carries an ID."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (m := ID_RE.match(node.name)):
                found[f"PC{m.group(1)}"].append(f"{path.relative_to(TESTS.parent)}::{node.name}")
    return found


def junit_outcomes(path: Path) -> dict[str, str]:
    """Test id (file::test, parameters stripped) -> "passed", or "failed" if any case failed or was skipped."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "").split("[", 1)[0]
        module = case.get("classname", "").replace(".", "/") + ".py"
        key = f"{module}::{name}"
        bad = any(child.tag in ("failure", "error", "skipped") for child in case)
        if bad or outcomes.get(key) == "failed":
            outcomes[key] = "failed"
        else:
            outcomes[key] = "passed"
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--junit", type=Path, action="append", help="a pytest --junitxml file (again for each phase): count only passing tests"
    )
    args = parser.parse_args()
    found = tests_by_item()
    outcomes: dict[str, str] | None = None
    if args.junit:
        outcomes = {}
        for path in args.junit:
            for key, outcome in junit_outcomes(path).items():
                outcomes[key] = "failed" if "failed" in (outcome, outcomes.get(key)) else outcome
    problems: list[str] = [f"{item}: named by tests but not an item of the specification" for item in set(found) - set(ITEMS)]
    print("| item | behaviour | tests |")
    print("|---|---|---|")
    for item, title in ITEMS.items():
        tests = found.get(item, [])
        if outcomes is not None:
            passing = [t for t in tests if outcomes.get(t) == "passed"]
            missing = [t for t in tests if t not in outcomes]
            failing = [t for t in tests if outcomes.get(t) == "failed"]
            problems += [f"{item}: {t} did not pass" for t in failing]
            problems += [f"{item}: {t} did not run" for t in missing]
            shown = f"{len(passing)}/{len(tests)} passed"
        else:
            passing = tests
            shown = f"{len(tests)} tests"
        if not passing:
            problems.append(f"{item}: no {'passing ' if outcomes is not None else ''}test proves it")
        names = "<br>".join(t.split("::", 1)[1] for t in tests) or "**none**"
        print(f"| {item} | {title} | {shown}: {names} |")
    for problem in problems:
        print(f"parity: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
