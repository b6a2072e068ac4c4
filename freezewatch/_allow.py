"""allow_blocking(): code known to block the loop, excluded from detection."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType

from . import _state


class allow_blocking:
    """Suppress freeze detection for the running loop while the block runs.

    ``with freezewatch.allow_blocking("load model"): ...`` inside a coroutine
    (or ``async with``). A heartbeat delayed by the block is measured from
    the block's end, so a freeze that follows it is still caught. Outside a
    watched loop it does nothing.
    """

    __slots__ = ("_w", "reason")

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        self._w = None

    def __enter__(self) -> allow_blocking:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return self
        w = _state.by_loop.get(loop)
        if w is not None:
            self._w = w  # type: ignore[assignment]
            w.allow_depth += 1
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        w = self._w
        if w is not None:
            self._w = None
            w.allow_exit_at = time.monotonic()  # type: ignore[unreachable]
            w.allow_depth -= 1

    async def __aenter__(self) -> allow_blocking:
        return self.__enter__()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(et, e, tb)
