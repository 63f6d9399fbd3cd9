"""Work on a large request, moved off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def when_large(large: bool, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """work(*args, **kwargs): for a large request in a worker thread, so the event loop keeps serving
    every other call meanwhile; for the others on the loop, where it costs less than a thread hop."""
    if large:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)
