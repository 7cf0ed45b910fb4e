from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Booth sessions"

    def ready(self) -> None:
        from sessions_app import schema  # noqa: F401  (registers the OpenAPI auth schemes)
