"""Timestamps: aware UTC datetimes inside, ISO 8601 strings on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None = None) -> str:
    # The same "Z" form pydantic writes for the task timestamps.
    return (value or now()).isoformat().replace("+00:00", "Z")


def epoch_ms(at: datetime) -> int:
    """`at` as whole epoch milliseconds: the scores and times the queue's Redis keys hold."""
    return round(at.timestamp() * 1000)


def now_ms() -> int:
    return epoch_ms(now())
