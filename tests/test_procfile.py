"""The Procfile, run by honcho as docs/operations.md says, is a working deployment."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deployment import fresh_database, private_redis
from tests.live import ROOT, free_port
from tests.upstream_helpers import Booth, contract_problems, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.deployment]
HONCHO = Path(sys.executable).parent / "honcho"


def test_honcho_runs_the_procfile_as_a_deployment_that_completes_a_task(tmp_path):
    web_port, api_port = free_port(), free_port()
    with fresh_database() as database_url, private_redis(tmp_path / "redis") as redis_server:
        env_file = tmp_path / "local.env"
        env_file.write_text(
            f"DATABASE_URL={database_url}\nREDIS_URL={redis_server.url}\n"
            f"WEB_PORT={web_port}\nAPI_PORT={api_port}\n"
            f"MOCKUP_API_URL=http://127.0.0.1:{api_port}/mockup-api\n"
            f"PUBLIC_BASE_URL=http://127.0.0.1:{web_port}\n"
            f"PHOTOBOOTH_VAR_DIR={tmp_path / 'var'}\nMOCKUP_API_STEP_SECONDS=0.01\n"
        )
        honcho = [str(HONCHO), "-e", str(env_file), "-f", str(ROOT / "Procfile")]
        migrate = [*honcho, "run", sys.executable, "manage.py", "migrate", "--no-input", "-v0"]
        subprocess.run(migrate, cwd=ROOT, check=True)
        log = (tmp_path / "honcho.log").open("wb")
        process = subprocess.Popen([*honcho, "start"], cwd=ROOT, stdout=log, stderr=log)
        try:
            booth = _booth_when_up(f"http://127.0.0.1:{web_port}", process, tmp_path)
            task = booth.generation(booth.upload(), number_images=2)
            finished = booth.wait_for_task(task["taskId"])
            problems = contract_problems(finished, booth.events(finished))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        output = (tmp_path / "honcho.log").read_text(errors="replace")

    assert finished["status"] == "completed", output[-3000:]
    assert not problems, problems
    # honcho started the three roles and stopped them all on SIGTERM.
    for role in ("api.1", "web.1", "worker.1"):
        assert f"{role} " in output, output[-3000:]
    assert "worker_stopped" in output, output[-3000:]


def _booth_when_up(base: str, process: subprocess.Popen, tmp_path: Path) -> Booth:
    import httpx

    def up() -> bool:
        if process.poll() is not None:
            log = (tmp_path / "honcho.log").read_text(errors="replace")
            pytest.fail(f"honcho stopped:\n{log[-3000:]}")
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, "the web process behind honcho", 30, every=0.1)
    return Booth(base, "procfile-booth")
