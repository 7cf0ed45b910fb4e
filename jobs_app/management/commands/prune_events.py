from django.core.management.base import BaseCommand

from jobs_app.retention import prune_events


class Command(BaseCommand):
    help = "Delete events past retention (EVENT_RETENTION_HOURS and EVENT_RETENTION_MAX)."

    def handle(self, *args, **options) -> None:
        deleted = prune_events()
        self.stdout.write(f"Deleted {deleted} event(s) past retention.")
