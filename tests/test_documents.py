"""Documents (PDFs) through the real server: the block each provider format received, on both
transports, and the refusals for what a route cannot read or the limits do not allow."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from fake_upstream import FakeUpstream
from llm_client import LLMClient, LLMServiceError, channel_options, document, pb
from tests.support.servers import PATHS, ServerPath, ServerThread, on_path, service_config

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"
PDF_B64 = base64.b64encode(PDF).decode()
URL = "https://docs.example.com/report.pdf"
LIMITS = {"max_document_bytes": 1024, "max_documents": 2}


@pytest.fixture(scope="module", params=PATHS)
def dclient(fake: FakeUpstream, request: pytest.FixtureRequest) -> Iterator[LLMClient]:
    """A client of a server per path whose routes read documents (and the shared ones, which do not)."""
    path: ServerPath = request.param
    key = {"env": "TEST_PROVIDER_KEY"}
    routes = {
        "sonnet": {"model": "anthropic/claude-sonnet-4-5", "api_base": fake.base_url, "key": key},
        "gpt4o": {"model": "openai/gpt-4o-mini", "api_base": f"{fake.base_url}/v1", "key": key},
        "gemini-docs": {"model": "gemini/gemini-2.5-flash", "api_base": fake.base_url, "key": key},
        # A model LiteLLM's map does not know, which its route says reads documents.
        "declared": {"model": "openai/test-model", "api_base": f"{fake.base_url}/v1", "key": key, "documents": True},
    }
    srv = ServerThread(on_path(service_config(fake.base_url, routes=routes, limits=LIMITS), path))
    with LLMClient(srv.target, options=channel_options(retries=False)) as c:
        yield c
    srv.stop()


def _ask(*documents: pb.Document) -> list[pb.Message]:
    parts = [pb.ContentPart(text="Summarise this.")] + [pb.ContentPart(document=d) for d in documents]
    return [pb.Message(role=pb.ROLE_USER, parts=parts)]


def _content(fake: FakeUpstream) -> Any:
    [req] = fake.requests()
    return req.body


def test_anthropic_gets_document_blocks(dclient: LLMClient, fake: FakeUpstream) -> None:
    dclient.complete("sonnet", _ask(pb.Document(data=PDF, mime_type="application/pdf"), pb.Document(url=URL)), timeout=10)
    content = _content(fake)["messages"][0]["content"]
    assert content[1:] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}},
        {"type": "document", "source": {"type": "url", "url": URL}},
    ]


def test_openai_gets_file_parts(dclient: LLMClient, fake: FakeUpstream) -> None:
    question = pb.Message(role=pb.ROLE_USER, parts=[pb.ContentPart(text="Summarise this."), document(PDF, filename="q3.pdf")])
    list(dclient.stream("gpt4o", [question], timeout=10))
    content = _content(fake)["messages"][0]["content"]
    assert content[1] == {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}", "filename": "q3.pdf"}}
    fake.reset()
    dclient.complete("declared", _ask(pb.Document(data=PDF, mime_type="application/pdf")), timeout=10)
    assert _content(fake)["messages"][0]["content"][1]["file"]["filename"] == "document"


def test_gemini_gets_inline_data(dclient: LLMClient, fake: FakeUpstream) -> None:
    dclient.complete("gemini-docs", _ask(pb.Document(data=PDF, mime_type="application/pdf")), timeout=10)
    parts = _content(fake)["contents"][0]["parts"]
    assert {"inline_data": {"mime_type": "application/pdf", "data": PDF_B64}} in parts


@pytest.mark.parametrize(
    ("route", "documents", "field"),
    [
        ("openai", [pb.Document(data=PDF, mime_type="application/pdf")], "messages[0].parts[1].document"),
        ("anthropic", [pb.Document(url=URL)], "messages[0].parts[1].document"),  # claude-test: not known to read PDFs
        ("gpt4o", [pb.Document(url=URL)], "messages[0].parts[1].document.url"),  # LiteLLM would fetch it for OpenAI
        ("sonnet", [pb.Document(url="http://docs.example.com/a.pdf")], "messages[0].parts[1].document.url"),
        ("sonnet", [pb.Document(data=PDF, mime_type="image/png")], "messages[0].parts[1].document.mime_type"),
        ("sonnet", [pb.Document(mime_type="application/pdf")], "messages[0].parts[1].document"),
        ("sonnet", [pb.Document(data=b"x" * 1025, mime_type="application/pdf")], "messages[0].parts[1].document.data"),
        ("sonnet", [pb.Document(url=URL)] * 3, "messages[0].parts"),  # limits.max_documents: 2
    ],
)
def test_what_cannot_be_read_is_refused_naming_the_field(
    dclient: LLMClient, fake: FakeUpstream, route: str, documents: list[pb.Document], field: str
) -> None:
    with pytest.raises(LLMServiceError) as info:
        dclient.complete(route, _ask(*documents), timeout=10)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in info.value.field_violations] == [field], info.value.message
    assert fake.requests() == []


def test_documents_go_in_user_messages_only(dclient: LLMClient, fake: FakeUpstream) -> None:
    turn = pb.Message(role=pb.ROLE_ASSISTANT, parts=[pb.ContentPart(document=pb.Document(url=URL))])
    with pytest.raises(LLMServiceError) as info:
        dclient.complete("sonnet", [*_ask(), turn], timeout=10)
    assert [f for f, _ in info.value.field_violations] == ["messages[1].parts[0]"]
