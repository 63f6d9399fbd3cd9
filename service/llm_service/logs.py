"""Structured logs: one JSON object per line.

Fields passed with `extra=` become JSON keys. Nothing here formats message content;
callers log only counts, names and codes, and keys are Secret objects that print as ***.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from llm_service.core import secrets

TRACE_IDS: ContextVar[dict[str, str] | None] = ContextVar("log_trace_ids", default=None)
"""The trace_id and span_id of the RPC being served (set when tracing is on): every line logged
while serving it carries them."""
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, the fixed fields, extras, exception.

    Every RPC logs a line, so what is the same for many lines is done once: the encoder is
    made once, the timestamp's date and time once per second."""

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.fields = fields or {}
        self._encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
        self._second = (-1, "")

    def _timestamp(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._timestamp(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **self.fields,
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})  # the extras
        if (ids := TRACE_IDS.get()) is not None:
            for key, value in ids.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return secrets.redact(self._encode(out))


def configure(level: str = "INFO", stream: Any = None, fields: dict[str, Any] | None = None) -> None:
    """Send every log record to stderr (or stream) as JSON lines, each with fields (e.g. the worker's index)."""
    # No record needs the process's or thread's name or id (the worker's index is a field): looking
    # them up was a fifth of making each record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
