"""The work-arounds that make LiteLLM's path read real answers as the direct path does (issue 16).

What each one fixes is proven end to end by the recorded answers of tests/test_corpus.py;
here: each is applied at start-up, and a target that moved in LiteLLM stops start-up naming
the LiteLLM version, rather than letting the server start with a fix that does nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from llm_service.core import litellm_setup

TARGETS = [
    ("litellm.llms.groq.chat.transformation", "GroqChatCompletionStreamingHandler.chunk_parser"),
    ("litellm.llms.openai_like.chat.transformation", "OpenAILikeChatConfig._transform_response"),
    ("litellm.litellm_core_utils.llm_response_utils.convert_dict_to_response", "extract_reasoning_content"),
    ("litellm.llms.openai.chat.gpt_transformation", "extract_reasoning_content"),
    ("litellm.litellm_core_utils.streaming_handler", "CustomStreamWrapper.chunk_creator"),
    ("litellm.litellm_core_utils.streaming_handler", "CustomStreamWrapper.is_chunk_non_empty"),
    ("litellm.llms.anthropic.chat.handler", "ModelResponseIterator.chunk_parser"),
    ("litellm.llms.anthropic.chat.transformation", "AnthropicConfig.extract_response_content"),
    ("litellm.llms.anthropic.chat.transformation", "AnthropicConfig.calculate_usage"),
]


def _owner(module: str, attribute: str) -> tuple[Any, str]:
    owner: Any = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, name


def test_wire_work_arounds_are_applied_at_start_up() -> None:
    report = litellm_setup.install()
    assert report.groq_in_band_error_status and report.groq_answer_without_service_tier
    assert report.content_as_sent and report.stream_deltas_kept
    assert report.anthropic_server_tools_kept_out and report.anthropic_advisor_iterations_left_out
    assert report.anthropic_in_band_error_status
    for module, attribute in TARGETS:
        owner, name = _owner(module, attribute)
        assert getattr(getattr(owner, name), "_llm_service_patched", False), attribute


@pytest.mark.parametrize(("module", "attribute"), TARGETS, ids=[f"{m.rsplit('.', 1)[-1]}.{a}" for m, a in TARGETS])
def test_a_moved_target_stops_start_up_naming_the_litellm_version(
    monkeypatch: pytest.MonkeyPatch, module: str, attribute: str
) -> None:
    owner, name = _owner(module, attribute)
    monkeypatch.setattr(litellm_setup, "_REPORT", None)
    monkeypatch.delattr(owner, name)
    with pytest.raises(litellm_setup.LiteLLMInternalsMoved) as info:
        litellm_setup.install()
    assert f"LiteLLM {litellm_setup.litellm_version()}" in str(info.value)


@pytest.mark.parametrize(
    ("module", "attribute", "words"),
    [
        ("litellm.llms.anthropic.chat.transformation", "AnthropicConfig.calculate_usage", "advisor-iteration"),
        ("litellm.llms.anthropic.chat.transformation", "AnthropicConfig.extract_response_content", "server-tool"),
        ("litellm.llms.anthropic.chat.handler", "ModelResponseIterator.chunk_parser", "in-band error status"),
        ("litellm.litellm_core_utils.streaming_handler", "CustomStreamWrapper.is_chunk_non_empty", "stream-delta"),
        ("litellm.litellm_core_utils.streaming_handler", "CustomStreamWrapper.chunk_creator", "stream-delta"),
        ("litellm.llms.groq.chat.transformation", "GroqChatCompletionStreamingHandler.chunk_parser", "in-band error"),
        ("litellm.llms.openai_like.chat.transformation", "OpenAILikeChatConfig._transform_response", "service_tier"),
        ("litellm.litellm_core_utils.llm_response_utils.convert_dict_to_response", "extract_reasoning_content", "content"),
    ],
)
def test_a_work_around_that_no_longer_takes_effect_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, module: str, attribute: str, words: str
) -> None:
    # LiteLLM moved the behaviour elsewhere: the patched method is no longer the one that decides.
    owner, name = _owner(module, attribute)
    patched = getattr(owner, name)
    original = patched.__wrapped__

    def elsewhere(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    # Marked as patched, so install() does not wrap it again: only the probe can tell.
    elsewhere._llm_service_work_arounds = patched._llm_service_work_arounds  # type: ignore[attr-defined]
    monkeypatch.setattr(litellm_setup, "_REPORT", None)
    monkeypatch.setattr(owner, name, elsewhere)
    with pytest.raises(litellm_setup.LiteLLMInternalsMoved, match=words):
        litellm_setup.install()
