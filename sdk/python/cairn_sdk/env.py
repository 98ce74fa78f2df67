"""Where the task runs: the current run's id, attempt and task name, read from
the host with :func:`cairn_sdk.tasks.current` on every call.

The host also sets ``CAIRN_RUN_ID``, ``CAIRN_ATTEMPT`` and ``CAIRN_TASK``, but a
WASI environment is fixed when an instance starts: on a reused (warm) instance
they still describe the run the instance was created for. Use these functions,
not ``os.environ``."""

from .tasks import current

__all__ = ["attempt", "parent_run_id", "run_id", "task_name"]


def run_id() -> str:
    """The current run's id."""
    return current().run_id


def attempt() -> int:
    """The current attempt number, 1 for the first attempt."""
    return current().attempt


def task_name() -> str:
    """The manifest name of the task being run."""
    return current().task


def parent_run_id() -> str | None:
    """The run that submitted this one, for a child run; ``None`` for a top-level run."""
    return current().parent
