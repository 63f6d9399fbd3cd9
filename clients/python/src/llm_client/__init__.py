"""Python client for llm-service: typed calls over the generated llm.v1 stubs.

    from llm_client import LLMClient, user
    with LLMClient("127.0.0.1:50051") as client:
        print(client.complete("demo", [user("Hello")]).text)
        with client.stream("demo", [user("Hello")]) as answer:
            for event in answer:
                if event.kind == "text_delta":
                    print(event.delta, end="")
                elif event.kind == "finish":
                    print(event.finish.usage)
        print(client.embed("embed", ["a text", "another"]).vectors.shape)  # (2, dims) with NumPy

It depends on grpcio and protobuf only (never LiteLLM).
"""

from llm_client._proto.llm.v1 import llm_service_pb2 as pb
from llm_client.client import (
    AsyncLLMClient,
    AsyncStream,
    CallOptions,
    Completion,
    DeadlineExceeded,
    FailedPrecondition,
    FinishEvent,
    InvalidArgument,
    LLMClient,
    LLMServiceError,
    NotFound,
    PermissionDenied,
    ReasoningDeltaEvent,
    ResourceExhausted,
    Stream,
    StreamEvent,
    TextDeltaEvent,
    TextEndEvent,
    TokenCount,
    ToolCallEvent,
    Unauthenticated,
    Unavailable,
    assistant,
    assistant_from_events,
    channel_options,
    document,
    error_from_rpc,
    system,
    tool_result,
    user,
)
from llm_client.embeddings import Embeddings, EmbedOptions

__all__ = [
    "AsyncLLMClient",
    "AsyncStream",
    "CallOptions",
    "Completion",
    "DeadlineExceeded",
    "EmbedOptions",
    "Embeddings",
    "FailedPrecondition",
    "FinishEvent",
    "InvalidArgument",
    "LLMClient",
    "LLMServiceError",
    "NotFound",
    "PermissionDenied",
    "ReasoningDeltaEvent",
    "ResourceExhausted",
    "Stream",
    "StreamEvent",
    "TextDeltaEvent",
    "TextEndEvent",
    "TokenCount",
    "ToolCallEvent",
    "Unauthenticated",
    "Unavailable",
    "assistant",
    "assistant_from_events",
    "channel_options",
    "document",
    "error_from_rpc",
    "pb",
    "system",
    "tool_result",
    "user",
]
