"""Real OTLP trace receivers on loopback, storing what they receive: the opentelemetry-proto
collector's TraceService over gRPC, and OTLP/HTTP's POST /v1/traces."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as collector
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as collector_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1 import trace_pb2


def value_of(v: AnyValue) -> Any:
    """An OTLP attribute value as Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(value_of(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One exported span, its ids in hex and its attributes and events as Python values."""

    raw: trace_pb2.Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.raw.name

    @property
    def trace_id(self) -> str:
        return self.raw.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.raw.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.raw.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {a.key: value_of(a.value) for a in self.raw.attributes}

    def events(self, name: str) -> list[dict[str, Any]]:
        """The attributes of each event of that name."""
        return [{a.key: value_of(a.value) for a in e.attributes} for e in self.raw.events if e.name == name]


class _Store:
    def __init__(self) -> None:
        self._requests: list[collector.ExportTraceServiceRequest] = []
        self._changed = threading.Condition()

    def add(self, request: collector.ExportTraceServiceRequest) -> None:
        """Store one export request."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._changed:
            requests = list(self._requests)
        out: list[ReceivedSpan] = []
        for request in requests:
            for rs in request.resource_spans:
                resource = {a.key: value_of(a.value) for a in rs.resource.attributes}
                out.extend(ReceivedSpan(span, resource) for ss in rs.scope_spans for span in ss.spans)
        return out

    def wait_for(self, ready: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 10.0) -> list[ReceivedSpan]:
        """Wait until ready(spans) holds; the spans (raises TimeoutError)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not ready(spans := self.spans()):
                if not self._changed.wait(deadline - time.monotonic()):
                    raise TimeoutError(f"OTLP receiver: condition not met; spans: {[s.name for s in spans]}")
        return spans


class OtlpGrpcReceiver(_Store, collector_grpc.TraceServiceServicer):
    """The OTLP/gRPC TraceService on 127.0.0.1; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        super().__init__()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        collector_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server.start()

    def Export(self, request: collector.ExportTraceServiceRequest, context: Any) -> collector.ExportTraceServiceResponse:
        """Store what an exporter sent."""
        self.add(request)
        return collector.ExportTraceServiceResponse()

    def stop(self) -> None:
        """Stop listening."""
        self._server.stop(None)


class OtlpHttpReceiver(_Store):
    """OTLP/HTTP (protobuf) on 127.0.0.1: POST /v1/traces; `endpoint` is its base URL."""

    def __init__(self) -> None:
        super().__init__()
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404)
                    return
                store.add(collector.ExportTraceServiceRequest.FromString(body))
                answer = collector.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._http.server_port}"
        threading.Thread(target=self._http.serve_forever, daemon=True, name="otlp-http").start()

    def stop(self) -> None:
        """Stop listening."""
        self._http.shutdown()
        self._http.server_close()
