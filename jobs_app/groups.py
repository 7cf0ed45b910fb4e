"""The one place that names channel-layer groups.

Names stay within channels-redis' rules (ASCII letters, digits, `-`, `_`, `.`; under 100
characters): clientAppIds already match ^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$, ids are UUIDs.
"""

from __future__ import annotations

from uuid import UUID


def session_group(session_id: UUID | str) -> str:
    return f"session.{session_id}"


def client_group(client_app_id: str) -> str:
    return f"client.{client_app_id}"


def task_group(task_id: UUID | str) -> str:
    return f"task.{task_id}"
