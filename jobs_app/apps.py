from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs_app"
    verbose_name = "Tasks and events"

    def ready(self) -> None:
        # One upstream client per process, shared by every request and consumer. Creating it
        # does no I/O: its connection pool and event socket start on first use.
        from jobs_app import upstream
        from jobs_app.upstream.client import UpstreamClient

        upstream.install(UpstreamClient())
