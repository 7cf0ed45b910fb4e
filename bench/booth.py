"""Booth load benchmark: N booths start an M-image generation at once, one stream each.

    .venv/bin/python bench/booth.py

It runs the matrix modes {upstream-alone, embedded} x transports {sse, ws} x reconnects {off,
on}, then one case with 1,000 idle WebSocket streams beside the load (upstream-alone), each
case on a fresh server (tests/booth_load.py: `booth_server`, `run_load`). For every stored
event a stream receives it notes arrival minus the event's `timestamp`; after the run it checks
each stream against its log read over REST (lost, duplicated, out of order) and scans the
server logs for 5xx answers, tracebacks, "never retrieved" and "database is locked".

It prints one row per case and asserts nothing. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402  (tests/live.py fails a server start with pytest.fail)

from bench.streams import cpu_seconds, raise_fd_limit  # noqa: E402
from bench.streams import machine_description as streams_machine  # noqa: E402
from tests.booth_load import (  # noqa: E402
    MODES,
    TRANSPORTS,
    LoadPlan,
    LoadResult,
    booth_server,
    run_load,
)

PY_SPY_RATE = 50  # samples/s for each of the two recorders (SVG and raw): 100/s together
DUMP_EVERY_SECONDS = 5.0


# --- machine and processes ------------------------------------------------------------------


class CpuMeter:
    """CPU of some processes between start() and stop(), in % of one core."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.percent: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> None:
        wall = max(time.monotonic() - self._t0, 1e-6)
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                self.percent[name] = 100 * (cpu_seconds(pid) - self._start[name]) / wall


class Profiler:
    """py-spy on one process during the load: a flame graph, raw stacks and periodic dumps."""

    def __init__(self, pid: int, out: Path, name: str):
        self.pid = pid
        self.out = out
        self.name = name
        self.py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or (
            shutil.which("py-spy")
        )
        self._records: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._dumper: threading.Thread | None = None

    @property
    def raw(self) -> Path:
        return self.out / f"{self.name}.raw.txt"

    def start(self) -> None:
        if self.py_spy is None:
            print(
                "warning: --py-spy given but py-spy is not installed (.venv/bin/pip install py-spy)"
            )
            return
        self.out.mkdir(parents=True, exist_ok=True)
        # The flame graph shows every active thread (waits included); the raw stacks and the top
        # list only the thread holding the GIL, i.e. where the process's Python CPU goes.
        for fmt, path in (("flamegraph", self.out / f"{self.name}.svg"), ("raw", self.raw)):
            command = [
                self.py_spy,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                str(PY_SPY_RATE),
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(path),
                *(["--gil"] if fmt == "raw" else []),
            ]
            log = (self.out / f"{self.name}.{fmt}.log").open("wb")
            self._records.append(subprocess.Popen(command, stdout=log, stderr=log))
        self._dumper = threading.Thread(target=self._dump_loop, daemon=True)
        self._dumper.start()

    def _dump_loop(self) -> None:
        path = self.out / f"{self.name}.dump.txt"
        while not self._stop.wait(DUMP_EVERY_SECONDS):
            command = [self.py_spy, "dump", "--pid", str(self.pid)]  # a pause of a few ms
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
            with path.open("a") as out:
                out.write(f"=== {datetime.now(UTC).isoformat()} ===\n{done.stdout}{done.stderr}\n")

    def stop(self) -> None:
        self._stop.set()
        for record in self._records:
            record.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for record in self._records:
            try:
                record.wait(60)
            except subprocess.TimeoutExpired:
                record.kill()
        if self._dumper:
            self._dumper.join(35)

    def summary(self, top: int = 20) -> str:
        """Return a py-spy-top-like table (own and total % of samples) from the raw stacks."""
        if not self.raw.exists():
            return f"{self.raw.name}: no samples"
        own: dict[str, int] = {}
        total: dict[str, int] = {}
        samples = 0
        for line in self.raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for frame in set(frames):
                total[frame] = total.get(frame, 0) + n
        ranked = sorted(total, key=lambda f: -total[f])[:top]
        share = 100 / max(samples, 1)
        rows = [
            f"  {share * own.get(f, 0):5.1f}% {share * total[f]:5.1f}%  {f[:130]}" for f in ranked
        ]
        by_own = sorted(own, key=lambda f: -own[f])[:top]
        rows_own = [f"  {100 * own[f] / max(samples, 1):5.1f}%  {f[:130]}" for f in by_own]
        return (
            f"{self.raw.name}: {samples} samples\n   %own %total  (by total)\n"
            + "\n".join(rows)
            + "\n   %own  (by own)\n"
            + "\n".join(rows_own)
        )


# --- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    mode: str
    transport: str
    reconnects: int
    idle_streams: int = 0

    @property
    def slug(self) -> str:
        return f"{self.mode}-{self.transport}-r{self.reconnects}" + (
            f"-idle{self.idle_streams}" if self.idle_streams else ""
        )


def plan_cases(args: argparse.Namespace) -> list[Case]:
    """Return the matrix, then the idle-streams case."""
    reconnect_counts = {"off": 0, "on": args.reconnect_count}
    cases = [
        Case(mode=mode, transport=transport, reconnects=reconnect_counts[reconnects])
        for mode in args.modes
        for transport in args.transports
        for reconnects in args.reconnects
    ]
    if args.idle_streams:
        cases.append(
            Case(
                mode="upstream-alone", transport="ws", reconnects=0, idle_streams=args.idle_streams
            )
        )
    return cases


def run_case(case: Case, args: argparse.Namespace, server_env: dict[str, str]) -> dict[str, Any]:
    """Run one case on a fresh server; return its row as a dict."""
    folder = Path(tempfile.mkdtemp(prefix=f"booth-{case.slug}-"))
    plan = LoadPlan(
        sessions=args.sessions,
        images=args.images,
        transport=case.transport,
        reconnects=case.reconnects,
        idle_streams=case.idle_streams,
        style=args.style,
        timeout=args.timeout,
        seed=args.seed,
    )
    row: dict[str, Any] = {
        "case": case.slug,
        "mode": case.mode,
        "transport": case.transport,
        "reconnectsPlanned": case.reconnects,
        "idleStreams": case.idle_streams,
        "logDir": str(folder),
    }
    result: LoadResult | None = None
    load_before = os.getloadavg()[0]
    with booth_server(case.mode, folder, **server_env) as server:
        pids = {"server": server.pid} | ({"api": server.api_pid} if server.api_pid else {})
        meter = CpuMeter(pids)
        profiler = Profiler(server.pid, Path(args.py_spy), case.slug) if args.py_spy else None

        def before() -> None:
            meter.start()
            if profiler:
                profiler.start()

        def after() -> None:
            meter.stop()
            if profiler:
                profiler.stop()

        try:
            result = asyncio.run(
                run_load(server.base, plan, before_tasks=before, after_tasks=after)
            )
        except Exception as exc:  # a benchmark reports, it does not stop the matrix
            row["error"] = repr(exc)
            if profiler and profiler._records:
                profiler.stop()
    findings = server.log_findings()
    row["loadAverage"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    row["log"] = findings.counts
    row["logExcerpts"] = findings.excerpts[:5]
    row["cpu"] = {name: round(p, 1) for name, p in meter.percent.items()}
    if result is not None:
        row.update(result.summary())
    if profiler:
        row["profile"] = profiler.summary()
    if not args.keep_logs:
        shutil.rmtree(folder, ignore_errors=True)
        row["logDir"] = None
    return row


# --- output -----------------------------------------------------------------------------------

HEADER = (
    f"{'mode':<15}{'tr':<4}{'reconn':>7}{'idle':>6}{'events':>8}{'p50':>8}{'p95':>8}"
    f"{'p99':>8}{'max':>9}{'lost':>6}{'dup':>5}{'ooo':>5}{'tasks':>8}{'5xx':>8}"
    f"{'lock/nvr/tb':>13}{'cpu%':>7}"
)


LOG_ERRORS = ("database is locked", "never retrieved", "traceback")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_row(row: dict[str, Any]) -> str:
    if "events" not in row:
        return f"{row['mode']:<15}{row['transport']:<4}  failed: {row.get('error')}"
    log = row["log"]
    tasks = row["tasks"]
    seen_5xx = sum(v for k, v in row["httpStatuses"].items() if int(k) >= 500)
    return (
        f"{row['mode']:<15}{row['transport']:<4}{row['reconnects']:>7}"
        f"{row['idle']['connected']:>6}{row['events']:>8}{_ms(row['p50']):>8}"
        f"{_ms(row['p95']):>8}{_ms(row['p99']):>8}{_ms(row['max']):>9}{row['lost']:>6}"
        f"{row['duplicated']:>5}{row['outOfOrder']:>5}"
        f"{str(tasks['completed']) + '/' + str(tasks['total']):>8}"
        f"{str(seen_5xx) + '/' + str(log['5xx']):>8}"
        f"{'/'.join(str(log[k]) for k in LOG_ERRORS):>13}"
        f"{row['cpu'].get('server', 0):>7.0f}"
    )


def print_details(row: dict[str, Any]) -> None:
    print(f"--- {row['case']}")
    if "events" in row:
        tasks = row["tasks"]
        print(
            f"    setup {row['setupSeconds']} s, load {row['loadSeconds']} s"
            f"{' (TIMED OUT)' if row['timedOut'] else ''}; events {row['events']} of "
            f"{row['logEvents']} in the logs; undelivered (the logs' tails when the case ended) "
            f"{row['undelivered']}; unknown {row['unknown']}, resets {row['resets']}"
        )
        print(f"    tasks {tasks}; terminal events missed by streams {row['terminalMissed']}")
        print(
            f"    reconnects {row['reconnects']} of {row['reconnectsPlanned']} planned; server "
            f"closes {row['serverCloses']}; idle {row['idle']}"
        )
        print(f"    HTTP {row['httpStatuses']}; transport errors {row['transportErrors']}")
        for problem in row["problems"][:6]:
            print(f"    problem: {problem[:300]}")
    else:
        print(f"    error: {row.get('error')}")
    print(
        f"    CPU % of a core during the load: {row['cpu']}; machine load average "
        f"{row.get('loadAverage')} (before, after); log: {row['log']}"
    )
    for excerpt in row["logExcerpts"][:3]:
        print("    log> " + excerpt[:800].replace("\n", "\n    log> "))
    if row.get("logDir"):
        print(f"    logs kept in {row['logDir']}")
    if row.get("profile"):
        print(row["profile"])


def machine_description() -> str:
    return f"{streams_machine()}, load average {os.getloadavg()[0]:.2f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def words(allowed: tuple[str, ...]):
        def parse(text: str) -> list[str]:
            values = [v.strip() for v in text.split(",") if v.strip()]
            if bad := [v for v in values if v not in allowed]:
                raise argparse.ArgumentTypeError(f"{bad} not in {allowed}")
            return values

        return parse

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=20, help="booths, one stream each")
    parser.add_argument("--images", type=int, default=16, help="numberImages per task (1..16)")
    parser.add_argument(
        "--modes",
        type=words(MODES),
        default=list(MODES),
        help="comma-separated: upstream-alone, embedded",
    )
    parser.add_argument(
        "--transports",
        type=words(TRANSPORTS),
        default=list(TRANSPORTS),
        help="comma-separated: sse, ws",
    )
    parser.add_argument(
        "--reconnects",
        type=words(("off", "on")),
        default=["off", "on"],
        help="comma-separated: off, on",
    )
    parser.add_argument(
        "--reconnect-count",
        type=int,
        default=160,
        help="random stream drops per case when reconnects are on",
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=1000,
        help="idle WebSocket streams of the extra case (upstream-alone); 0: no such case",
    )
    parser.add_argument(
        "--style",
        default="pixel-art",
        help="style of the generation tasks (pixel-art renders in ~30 ms, pop-art ~120 ms, "
        "watercolor ~1 s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for the tasks of a case"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random drops")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the servers (an experiment: labelled)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    parser.add_argument(
        "--py-spy",
        metavar="DIR",
        help="profile our server during the load: DIR/<case>.svg (flame graph), "
        ".raw.txt (stacks of the GIL holder: CPU), .dump.txt (py-spy dump every 5 s)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep each case's var dirs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # `kill <pid>` stops the run like Ctrl+C: the servers of the current case are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server_env = dict(item.split("=", 1) for item in args.server_env)
    fd_limit = raise_fd_limit()
    cases = plan_cases(args)
    print(
        f"booth load: {args.sessions} sessions x {args.images} images, style {args.style}, "
        f"render time 0 s/step; {len(cases)} cases; open-file limit {fd_limit}"
    )
    print(f"machine: {machine_description()}")
    if server_env:
        print(f"[experiment: server env {server_env}]")
    rows = []
    for case in cases:
        started = time.monotonic()
        print(f"running {case.slug} ...", flush=True)
        try:
            row = run_case(case, args, server_env)
        except (Exception, pytest.fail.Exception) as exc:  # the server did not start
            row = {
                "case": case.slug,
                "mode": case.mode,
                "transport": case.transport,
                "error": repr(exc)[:3000],
                "log": {},
                "logExcerpts": [],
                "cpu": {},
            }
        row["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print_details(row)
        print(HEADER)
        print(format_row(row), flush=True)
    print()
    print(
        "latency = arrival - event timestamp, ms; 5xx = seen by the clients / lines in the "
        "server logs; lock/nvr/tb = 'database is locked' / 'never retrieved' / tracebacks "
        "in the logs; cpu% = our server process during the load, % of one core"
    )
    print(HEADER)
    for row in rows:
        print(format_row(row))
    if args.json:
        document = {
            "args": vars(args),
            "serverEnv": server_env,
            "machine": machine_description(),
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(document, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
