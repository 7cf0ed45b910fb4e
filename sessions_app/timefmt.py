"""The one time format of the API and the events: ISO-8601 UTC with milliseconds and `Z`."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_ms(moment: datetime | None) -> str | None:
    """Return `moment` as e.g. 2026-11-26T03:04:05.123Z (None stays None)."""
    if moment is None:
        return None
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
