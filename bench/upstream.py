"""The benchmark's upstream: an OpenAI-compatible chat endpoint answering from pre-built bytes.

It does no per-request work beyond reading the body, so it stays far from saturation
while the measured server is loaded. The model name picks the answer:
`…-paced` waits PACE_S between stream chunks (each chunk arrives alone, as real tokens
do), `…-slow` sends one chunk then holds the stream open (memory under many open
streams), anything else sends the whole stream at once (burst). `/v1/embeddings` answers
EMBED_INPUTS vectors of EMBED_DIMENSIONS floats (the Embed row).

    python -m bench.upstream --port 8300
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

CHUNKS = 200
PACE_S = 0.002
SLOW_HOLD_S = 600.0
MODEL = "bench-model"


def _sse(obj: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    return _sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})  # fmt: skip


USAGE = {"prompt_tokens": 12, "completion_tokens": CHUNKS, "total_tokens": 12 + CHUNKS}
STREAM_CHUNKS: list[bytes] = [
    _chunk({"role": "assistant", "content": "tok0 "}),
    *(_chunk({"content": f"tok{i} "}) for i in range(1, CHUNKS)),
    _chunk({}, "stop"),
    _sse(
        {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [], "usage": USAGE}
    ),
    b"data: [DONE]\n\n",
]
STREAM_BODY = b"".join(STREAM_CHUNKS)
ANSWER = {"role": "assistant", "content": "Hello from the benchmark upstream."}
UNARY_BODY = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the benchmark upstream."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
).encode()


EMBED_INPUTS = 16
EMBED_DIMENSIONS = 1536  # text-embedding-3-small's
EMBED_BODY = json.dumps(
    {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [((i * 31 + j) % 256 - 128) / 128 for j in range(EMBED_DIMENSIONS)]}
            for i in range(EMBED_INPUTS)
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 4 * EMBED_INPUTS, "total_tokens": 4 * EMBED_INPUTS},
    }
).encode()


async def embeddings(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=EMBED_BODY, content_type="application/json")


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", ""))
    if not body.get("stream"):
        return web.Response(body=UNARY_BODY, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    try:
        if model.endswith("-paced"):
            for chunk in STREAM_CHUNKS:
                await resp.write(chunk)
                await asyncio.sleep(PACE_S)
        elif model.endswith("-slow"):
            await resp.write(STREAM_CHUNKS[0])
            await asyncio.sleep(SLOW_HOLD_S)
        else:
            await resp.write(STREAM_BODY)
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client went away (the memory test cancels its open streams)
    return resp


def app() -> web.Application:
    application = web.Application()
    application.router.add_post("/v1/chat/completions", chat)
    application.router.add_post("/v1/embeddings", embeddings)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, print=None, access_log=None, backlog=4096, shutdown_timeout=0.5)


if __name__ == "__main__":
    main()
