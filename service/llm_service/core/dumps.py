"""Failed-request dumps for debugging (PC26): one JSON file per failed attempt, newest N kept.

Off unless a folder is configured: prompts are user data. A dump holds what was
asked (messages, tools, limits) and why it failed, never the API key or any
header, and every configured secret is masked in what it does hold.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from llm_service.core.request import UpstreamRequest
from llm_service.core.tokens import estimate_tokens

log = logging.getLogger(__name__)
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MASK = "***"


class FailedRequestDumps:
    """Writes dumps to a folder and prunes it to the newest `keep` files."""

    def __init__(self, folder: str | os.PathLike[str], keep: int) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self._seq = itertools.count()

    async def record(self, req: UpstreamRequest, route: str, error_type: str, attempt: int) -> Path | None:
        """Dump the request of a failed attempt, off the event loop (see write)."""
        return await asyncio.to_thread(self.write, req, route, error_type, attempt)

    def write(self, req: UpstreamRequest, route: str, error_type: str, attempt: int) -> Path | None:
        """Write one dump; returns its path, or None when writing failed (logged, never raised)."""
        kwargs, model, secrets = req.kwargs, req.model, req.secrets
        messages = kwargs.get("messages", [])
        now = datetime.now(UTC)
        tokens, method = estimate_tokens(model, messages)
        data = {
            "timestamp": now.isoformat(),
            "route": route,
            "model": model,
            "error_type": error_type,
            "attempt": attempt,
            "estimated_tokens": tokens,
            "token_method": method,
            "num_messages": len(messages),
            "messages": messages,
            "tools": kwargs.get("tools"),
            "max_tokens": kwargs.get("max_tokens"),
            "temperature": kwargs.get("temperature"),
        }
        text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
        for secret in secrets:
            if secret:
                text = text.replace(secret, _MASK)
        name = f"{now:%Y%m%dT%H%M%S%f}_{next(self._seq):06d}_{error_type}_{_UNSAFE_NAME_CHARS.sub('_', route)}.json"
        path = self.folder / name
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            log.warning("could not write a failed-request dump", extra={"folder": str(self.folder)}, exc_info=True)
            return None
        self._prune()
        log.warning("failed request dumped", extra={"route": route, "error_type": error_type, "dump": str(path)})
        return path

    def _prune(self) -> None:
        """Delete all but the newest `keep` dumps; best effort."""
        try:
            dumps = sorted(self.folder.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))
            for old in dumps[: max(0, len(dumps) - self.keep)]:
                old.unlink(missing_ok=True)
        except OSError:
            log.debug("pruning failed-request dumps failed", exc_info=True)
