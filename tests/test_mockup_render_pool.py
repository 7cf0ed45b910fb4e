"""The built-in mockup API's render pool: worker processes, their lifecycle and their deaths.

The pool is the test session's, as it is a server's: `runner.shutdown()` at the end of each test
ends that test's tasks, not the pool. Tests that break or close it leave a new one behind.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from PIL import Image

from mockup_api import render_jobs
from mockup_api.runner import runner

pytest_plugins = ["tests.mockup_fixtures"]


def photo_bytes(size: tuple[int, int] = (800, 600)) -> bytes:
    image = Image.radial_gradient("L").resize(size).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def alive(pid: int) -> bool:
    """Tell whether `pid` runs (a zombie does not: it has exited, only its entry is left)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def eventually(condition: Callable[[], object], timeout: float = 5) -> None:
    """Wait until `condition()` is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def kill_workers() -> list[int]:
    """SIGKILL every worker of the current pool, once it has them; return their pids."""
    await eventually(runner.worker_pids)
    pids = runner.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


@pytest.fixture
def pool_settings(settings, tmp_path):
    settings.MOCKUP_API_WORKERS = 2
    return settings


class TestWorkers:
    async def test_renders_run_in_other_processes_that_never_load_django(self, pool_settings):
        pid = await runner.in_pool(render_jobs.warm_up)
        assert pid != os.getpid()
        assert pid in runner.worker_pids()
        assert len(runner.worker_pids()) == 2  # all started with the pool, not one per call
        loaded = "sorted(m for m in __import__('sys').modules if m.split('.')[0] == 'django')"
        assert await runner.in_pool(eval, loaded) == []

    async def test_a_render_writes_its_files_and_returns_only_names_and_sizes(
        self, pool_settings, tmp_path
    ):
        rendered = await runner.in_pool(
            render_jobs.render_generation,
            photo_bytes(),
            kind="generation",
            style="comic",
            seed=3,
            size=256,
            preview_size=64,
            directory=tmp_path / "files",
        )
        assert (rendered.width, rendered.height) == (256, 192)
        assert Image.open(tmp_path / "files" / rendered.result).size == (256, 192)
        assert max(Image.open(tmp_path / "files" / rendered.preview).size) == 64

    async def test_an_undecodable_input_raises_in_the_caller(self, pool_settings):
        with pytest.raises(render_jobs.UndecodableImage):
            await runner.in_pool(render_jobs.check_image, b"not an image")

    async def test_rendering_costs_this_process_next_to_no_cpu(self, pool_settings, tmp_path):
        """What starved the event loop: renders on threads of this process, holding its GIL."""
        data = photo_bytes((1200, 900))
        await runner.in_pool(render_jobs.check_image, data)
        styles = ["comic", "oil-painting"]
        before_cpu, before = time.process_time(), time.perf_counter()
        await asyncio.gather(
            *(
                runner.in_pool(
                    render_jobs.render_generation,
                    data,
                    kind="generation",
                    style=style,
                    seed=1,
                    size=768,
                    preview_size=192,
                    directory=tmp_path,
                )
                for style in styles
            )
        )
        spent_cpu, spent = time.process_time() - before_cpu, time.perf_counter() - before
        # About 1 s of CPU in the workers; here a few bytes pickled, threads woken up.
        assert spent_cpu < 0.25 * spent, (spent_cpu, spent)


class TestBrokenPool:
    async def test_a_call_whose_worker_is_killed_runs_again_on_a_new_pool(self, pool_settings):
        await runner.in_pool(render_jobs.warm_up)
        started = runner.pools_started
        call = asyncio.ensure_future(runner.in_pool(time.sleep, 0.5))
        await asyncio.sleep(0.1)  # the call is in a worker now
        killed = await kill_workers()
        assert await call is None
        assert runner.pools_started == started + 1
        assert not set(runner.worker_pids()) & set(killed)
        assert not any(alive(pid) for pid in killed)  # reaped, not zombies
        assert await runner.in_pool(render_jobs.check_image, photo_bytes()) == (800, 600)

    async def test_a_call_that_breaks_two_pools_fails_and_the_next_call_works(self, pool_settings):
        await runner.in_pool(render_jobs.warm_up)
        started = runner.pools_started
        call = asyncio.ensure_future(runner.in_pool(time.sleep, 5))
        await asyncio.sleep(0.1)
        first = await kill_workers()
        await eventually(lambda: runner.pools_started > started)  # the retry's pool
        await eventually(lambda: not set(runner.worker_pids()) & set(first))
        await asyncio.sleep(0.1)
        await kill_workers()
        with pytest.raises(BrokenProcessPool):
            await call
        assert await runner.in_pool(render_jobs.warm_up) in runner.worker_pids()

    async def test_a_generation_task_completes_although_its_renders_lost_their_workers(
        self, mockup_api, image_server, pool_settings
    ):
        image_server.serve("/big.jpg", photo_bytes((1600, 1200)))
        await runner.in_pool(render_jobs.warm_up)
        started = runner.pools_started
        socket = await mockup_api.socket("booth")
        await mockup_api.create_generation(
            image_server.url("/big.jpg"), kind="enhancement", style=None
        )
        # The render starts right after step 2 (of 4) is told; an enhancement takes a while.
        await socket.receive_until(lambda m: m.get("type") == "jobProgress" and m["step"] == 2)
        await kill_workers()
        messages = await socket.receive_until(lambda m: m.get("type") == "taskCompleted", 20)
        assert messages[-1]["status"] == "completed"
        result = next(m for m in messages if m["type"] == "jobResult")
        assert (result["width"], result["height"]) == (3200, 2400)
        assert runner.pools_started == started + 1
        # The server goes on: the next task renders on the new pool.
        await mockup_api.create_generation(image_server.url("/photo.jpg"), number_images=2)
        messages = await socket.receive_until(lambda m: m.get("type") == "taskCompleted", 20)
        assert messages[-1]["status"] == "completed"


class TestLifecycle:
    async def test_close_reaps_every_worker_and_the_next_render_starts_a_new_pool(
        self, pool_settings
    ):
        await runner.in_pool(render_jobs.warm_up)
        workers = runner.worker_pids()
        started = runner.pools_started
        await asyncio.to_thread(runner.close)
        assert runner.worker_pids() == []
        assert not any(alive(pid) for pid in workers)
        assert await runner.in_pool(render_jobs.warm_up) in runner.worker_pids()
        assert runner.pools_started == started + 1

    async def test_a_new_worker_count_starts_a_pool_of_that_size(self, pool_settings):
        await runner.in_pool(render_jobs.warm_up)
        old = runner.worker_pids()
        pool_settings.MOCKUP_API_WORKERS = 3
        await runner.in_pool(render_jobs.warm_up)
        assert len(runner.worker_pids()) == 3
        pool_settings.MOCKUP_API_WORKERS = 2
        await runner.in_pool(render_jobs.warm_up)
        await eventually(lambda: not any(alive(pid) for pid in old))  # old pools end on their own
