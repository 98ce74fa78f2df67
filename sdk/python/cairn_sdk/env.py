"""What the host tells the task about the current run, through environment
variables (``CAIRN_RUN_ID``, ``CAIRN_ATTEMPT``, ``CAIRN_TASK``)."""

import os

__all__ = ["attempt", "run_id", "task_name"]


def run_id() -> str | None:
    """The run's id, if the host set ``CAIRN_RUN_ID``."""
    return os.environ.get("CAIRN_RUN_ID")


def attempt() -> int:
    """The attempt number, 1 for the first attempt (1 when ``CAIRN_ATTEMPT`` is unset)."""
    try:
        return int(os.environ.get("CAIRN_ATTEMPT", "1"))
    except ValueError:
        return 1


def task_name() -> str | None:
    """The manifest name of the task being run, if the host set ``CAIRN_TASK``."""
    return os.environ.get("CAIRN_TASK")
