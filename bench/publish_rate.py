"""How fast one process publishes events: `publish_event` flat out, on PostgreSQL and SQLite.

    .venv/bin/python bench/publish_rate.py                 # PostgreSQL + Redis, 1/2/4/8/16 threads
    .venv/bin/python bench/publish_rate.py --sqlite        # the embedded default as well

For each case it creates a fresh database (PostgreSQL: `photobooth_bench_publish`, dropped at
the end; SQLite: a file in a temporary folder), migrates it, creates --sessions booth sessions
with one task each (bench/publisher.py setup), then runs bench/publisher.py flat-out: T threads
of one process publish `progress` events as fast as they can for --seconds, each thread to its
own sessions, every event in its own transaction, announced to the channel layer (Redis with
`--redis`, the default for PostgreSQL; the in-memory layer for SQLite). It prints events/s, CPU
per event of the publishing process and the SQL statements of one publish. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from tests.live import migrate  # noqa: E402

DB_NAME = "photobooth_bench_publish"
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PUBLISHER = ROOT / "bench" / "publisher.py"


def _recreate_database() -> str:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    return f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"


def _drop_database() -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


def run_case(env: dict[str, str], sessions: int, threads: list[int], seconds: float) -> list:
    with tempfile.TemporaryDirectory(prefix="pb-publish-") as folder:
        env = dict(env, PHOTOBOOTH_VAR_DIR=folder, MEDIA_ROOT=str(Path(folder) / "media"))
        migrate(env)
        tasks = Path(folder) / "tasks.json"
        python = sys.executable
        subprocess.run([python, str(PUBLISHER), "setup", "--clients", str(sessions),
                        "--out", str(tasks)], env=env, check=True, cwd=ROOT)  # fmt: skip
        results = []
        for count in threads:
            out = subprocess.run(
                [python, str(PUBLISHER), "flat-out", "--tasks", str(tasks),
                 "--threads", str(count), "--seconds", str(seconds)],
                env=env, check=True, cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--threads", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--sqlite", action="store_true", help="also measure SQLite")
    parser.add_argument("--no-redis", action="store_true", help="in-memory layer on PostgreSQL")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    base.update(DJANGO_SETTINGS_MODULE="bench.settings", LOG_LEVEL="WARNING",
                BENCH_CHANNEL_PREFIX=f"pb-publish-{uuid.uuid4().hex[:8]}")  # fmt: skip
    cases = []
    pg = dict(base, DATABASE_URL=_recreate_database())
    if not args.no_redis:
        pg["REDIS_URL"] = "redis://127.0.0.1:6379/0"
    try:
        cases.append(("postgresql" + ("" if args.no_redis else "+redis"), pg))
        if args.sqlite:
            cases.append(("sqlite", dict(base)))
        print(f"{'database':18} {'threads':>7} {'events/s':>9} {'CPU ms/event':>12} {'queries':>7}")
        for name, env in cases:
            for row in run_case(env, args.sessions, threads, args.seconds):
                print(f"{name:18} {row['threads']:7d} {row['eventsPerSecond']:9.0f} "
                      f"{row['cpuMsPerEvent']:12.2f} {row['queriesPerEvent']:7d}")  # fmt: skip
            print("  statements of one publish: " + " | ".join(row["queries"]))
    finally:
        _drop_database()


if __name__ == "__main__":
    main()
