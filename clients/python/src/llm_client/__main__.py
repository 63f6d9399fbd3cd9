"""Command line: `python -m llm_client models | complete | stream [options] [PROMPT]`."""

from __future__ import annotations

import argparse
import json
import sys

from google.protobuf import json_format

from llm_client.client import LLMClient, LLMServiceError, user


def main(argv: list[str] | None = None) -> int:
    """Run one command against the server; exit 1 with the error on failure."""
    parser = argparse.ArgumentParser(prog="llm_client", description="Call llm-service over gRPC.")
    parser.add_argument("command", choices=("models", "complete", "stream"))
    parser.add_argument("prompt", nargs="?", default="", help="the user message (default: read standard input)")
    parser.add_argument("--target", default="127.0.0.1:50051", help="server address (default 127.0.0.1:50051)")
    parser.add_argument("--model", default="demo", help="route name (default demo)")
    parser.add_argument("--system", default="", help="system prompt")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the raw responses as JSON")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds (default 120)")
    args = parser.parse_intermixed_args(argv)
    with LLMClient(args.target) as client:
        try:
            return _run(client, args)
        except LLMServiceError as err:
            print(f"error: {err}", file=sys.stderr)
            if err.retry_delay_s is not None:
                print(f"retry after {err.retry_delay_s:.1f}s", file=sys.stderr)
            return 1


def _run(client: LLMClient, args: argparse.Namespace) -> int:
    if args.command == "models":
        for m in client.models(timeout=args.timeout):
            if args.json:
                print(json_format.MessageToJson(m, indent=None))
            else:
                print(f"{m.name:24} {m.provider_model:48} {'ready' if m.ready else 'no key'}")
        return 0
    prompt = args.prompt or sys.stdin.read()
    messages = [user(prompt)]
    if args.command == "complete":
        result = client.complete(args.model, messages, system=args.system, max_tokens=args.max_tokens, timeout=args.timeout)
        if args.json:
            print(json_format.MessageToJson(result.raw, indent=None))
        else:
            print(result.text)
            for tc in result.tool_calls:
                print(f"tool call {tc.name}({tc.arguments_json})")
        return 0
    for event in client.stream(args.model, messages, system=args.system, max_tokens=args.max_tokens, timeout=args.timeout):
        if args.json:
            print(json.dumps(json_format.MessageToDict(event.raw)), flush=True)
        elif event.kind == "text_delta":
            print(event.delta, end="", flush=True)
        elif event.kind == "tool_call":
            print(f"\ntool call {event.tool_call.name}({event.tool_call.arguments_json})", flush=True)
        elif event.kind == "finish":
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
