"""A scriptable stand-in for LLM providers, speaking their real HTTP wire formats.

It serves the OpenAI chat-completions API (`…/chat/completions`, JSON and SSE) and
the Anthropic Messages API (`…/messages`, JSON and SSE), and embeddings (`…/embeddings`,
Cohere's `…/embed`: vectors derived from the text, `embeddings.vector_of`). What it answers is chosen
per request: a queue of scripts set by a test (over HTTP or in process), else a
scenario named in the request's model, else a short echo of the prompt. It records
every request (path, headers, JSON body) and when each one ended and how, so tests
assert on what LiteLLM really sent and on whether the service hung up.
"""

from fake_upstream.embeddings import vector_of
from fake_upstream.script import Script, ToolCallSpec, Usage
from fake_upstream.server import FakeUpstream, RecordedRequest

__all__ = ["FakeUpstream", "RecordedRequest", "Script", "ToolCallSpec", "Usage", "vector_of"]
