"""A bounded booth load on `make run`'s defaults: every event once, in order, and a clean log.

8 booths each start an 8-image generation at once, with one stream each, on a fresh
`manage.py serve` process (SQLite, the in-memory channel layer, the built-in mockup API in the
same process, render time 0). The driver is tests/booth_load.py; speed targets live in
bench/booth.py, never here.

Marked `deployment`: like the Procfile and scale-out tests it starts its own server on a
database of its own whatever DATABASE_URL says, so `make test` runs it once, on the SQLite
pass; the PostgreSQL pass (`-m "not deployment"`) would only repeat the same run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.booth_load import LoadPlan, LoadResult, LogFindings, booth_server, run_load

pytestmark = pytest.mark.deployment

SESSIONS = 8
IMAGES = 8
RECONNECTS = 24  # 3 random drops per stream, each resumed from the stream's last cursor
STYLE = "pixel-art"  # the cheapest to render: this test is about delivery, not rendering
TIMEOUT = 90.0  # generous for a loaded CI machine; a run takes a few seconds when healthy


async def booth_load(
    folder: Path, transport: str, reconnects: int = 0
) -> tuple[LoadResult, LogFindings]:
    """Run the load on a fresh embedded server; return the result and its whole log's findings
    (read after the server stopped: "never retrieved" is often printed at shutdown)."""
    plan = LoadPlan(
        sessions=SESSIONS,
        images=IMAGES,
        transport=transport,
        reconnects=reconnects,
        style=STYLE,
        timeout=TIMEOUT,
        seed=20261203,
    )
    with booth_server("embedded", folder) as server:
        result = await run_load(server.base, plan)
    return result, server.log_findings()


def assert_exactly_once_and_clean(result: LoadResult, findings: LogFindings) -> None:
    """Assert the load's outcome, showing the figures and the log's first findings."""
    shown = json.dumps(result.summary(), indent=1)
    assert result.tasks_total == SESSIONS, shown
    assert result.tasks_completed == SESSIONS, shown
    delivery = {
        "lost": result.lost,
        "undelivered": result.undelivered,
        "duplicated": result.duplicated,
        "out of order": result.out_of_order,
        "not in the log": result.unknown,
    }
    assert delivery == dict.fromkeys(delivery, 0), shown
    assert result.terminal_missed == 0, shown
    assert result.server_errors == 0, shown
    counts = findings.counts
    assert counts["5xx"] == 0, findings.describe()
    assert counts["never retrieved"] == 0, findings.describe()
    assert counts["database is locked"] == 0, findings.describe()
    assert counts["traceback"] == 0, findings.describe()


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_every_booth_stream_gets_every_event_once_and_in_order(tmp_path, transport):
    result, findings = await booth_load(tmp_path / "booth", transport)

    assert_exactly_once_and_clean(result, findings)


async def test_streams_dropped_at_random_resume_without_losing_or_repeating_events(tmp_path):
    # Half the booths resume over SSE (Last-Event-ID), half over WebSocket (?cursor=).
    result, findings = await booth_load(tmp_path / "booth", "mixed", reconnects=RECONNECTS)

    assert result.reconnects == RECONNECTS
    assert_exactly_once_and_clean(result, findings)
