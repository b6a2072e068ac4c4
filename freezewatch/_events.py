"""The one event object every sink and hook receives."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FreezeEvent:
    """What happened to a watched loop, as told to ``on_freeze`` hooks and the log.

    ``event`` is one of ``freeze_detected``, ``freeze_updated``, ``freeze_ended``,
    ``stall_detected``, ``stall_ended``, ``dump_failed``.
    """

    event: str
    loop: str
    """Name of the loop (its thread's name unless ``name=`` was given)."""
    seconds: float
    """Seconds blocked (or stalled) so far; for ``*_ended`` the full duration."""
    blocked_at: str | None = None
    """``file:line in function`` of the blocking frame."""
    app_line: str | None = None
    """``file:line in function`` of the application frame that led there."""
    dump_path: str | None = None
    """The .json dump written for this event, if any."""
    reason: str | None = None
    """Why, for ``dump_failed`` and for events with no dump (e.g. rate limited)."""

    def fields(self) -> dict[str, object]:
        """Log fields: the non-empty attributes except ``event``."""
        d = dataclasses.asdict(self)
        d.pop("event")
        return {k: v for k, v in d.items() if v is not None}
