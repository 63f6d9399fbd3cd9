"""Request messages, built the way a caller builds them."""

from __future__ import annotations

from llm_client import pb


def user_msg(text: str = "Hello") -> pb.Message:
    """A user message with one text part."""
    return pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text=text)])
