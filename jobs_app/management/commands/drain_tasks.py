from django.core.management.base import BaseCommand

from jobs_app.actions import do_cancel_task
from jobs_app.models import Task
from jobs_app.states import TASK_TERMINAL, CancelReason, TaskStatus


class Command(BaseCommand):
    help = (
        "Cancel unfinished tasks on purpose (reason `shutdown`), e.g. before retiring the "
        "service. A plain restart needs no draining: tasks carry on."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--queued-only", action="store_true", help="Leave tasks already sent upstream alone."
        )

    def handle(self, *args, queued_only: bool, **options) -> None:
        tasks = Task.objects.exclude(status__in=TASK_TERMINAL).select_related("client_app")
        if queued_only:
            tasks = tasks.filter(status=TaskStatus.QUEUED)
        cancelled = sum(do_cancel_task(task, CancelReason.SHUTDOWN).did_cancel for task in tasks)
        self.stdout.write(f"Cancelled {cancelled} task(s) with reason 'shutdown'.")
