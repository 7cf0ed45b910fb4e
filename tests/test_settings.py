"""Settings come from the environment and refuse bad values at start-up (contract section 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRINT_SETTINGS = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'], "
    "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], 'debug': settings.DEBUG, "
    "'hosts': settings.ALLOWED_HOSTS, 'options': settings.DATABASES['default'].get('OPTIONS', {})},"
    " default=str))"
)


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    clean.update(
        DJANGO_SETTINGS_MODULE="photobooth.settings", PHOTOBOOTH_VAR_DIR=str(tmp_path), **env
    )
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_defaults_are_sqlite_in_wal_mode_and_the_in_memory_layer(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["engine"] == "photobooth.sqlite_writer"  # Django's, one writer at a time
    assert "journal_mode=WAL" in settings["options"]["init_command"]
    assert settings["options"]["transaction_mode"] == "IMMEDIATE"
    assert settings["layer"] == "jobs_app.channel_layer.InMemoryChannelLayer"
    assert settings["debug"] is False
    assert (tmp_path / "secret_key").exists()


def test_database_url_and_redis_url_switch_to_postgresql_and_channels_redis(tmp_path):
    result = start(
        tmp_path,
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/0",
        ALLOWED_HOSTS="booth.example.com, api.example.com",
    )
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["engine"] == "django.db.backends.postgresql"
    assert settings["layer"] == "jobs_app.channel_layer.RedisChannelLayer"
    assert settings["hosts"] == ["booth.example.com", "api.example.com"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "nosuchdb://x/y"}, "DATABASE_URL is not usable"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL="),
        ({"STREAM_MAX_PER_SESSION": "twenty"}, "STREAM_MAX_PER_SESSION='twenty' is not an integer"),
        ({"WEBHOOK_SECRETS": "not-a-whsec"}, "WEBHOOK_SECRETS"),
        ({"EVENT_RETENTION_HOURS": "1"}, "below its minimum of 24"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_clear_message(tmp_path, env, message):
    result = start(tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def _run(tmp_path: Path, command: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    clean.update(PHOTOBOOTH_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(command, cwd=ROOT, env=clean, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).parent / "daphne"), "-p", "0", "photobooth.asgi:application"],
        [sys.executable, "manage.py", "serve", "--port", "0"],
        [sys.executable, "manage.py", "worker"],
    ],
    ids=["daphne", "serve", "worker"],
)
def test_with_redis_every_process_refuses_to_mount_the_built_in_api(tmp_path, command):
    result = _run(tmp_path, command, REDIS_URL="redis://127.0.0.1:6379/0")
    assert result.returncode != 0
    assert "MOCKUP_API_URL" in result.stderr and "run_mockup_api" in result.stderr


def test_the_built_in_api_alone_and_migrations_start_with_redis_set(tmp_path):
    check = _run(tmp_path, [sys.executable, "manage.py", "check"],
                 REDIS_URL="redis://127.0.0.1:6379/0")  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_a_worker_without_redis_refuses_to_start_and_says_why(tmp_path):
    result = _run(tmp_path, [sys.executable, "manage.py", "worker"])
    assert result.returncode != 0
    assert "needs REDIS_URL" in result.stderr and "manage.py serve" in result.stderr
