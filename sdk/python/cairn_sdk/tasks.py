"""Child tasks, fan-out and the current run's context (``cairn:task/tasks``).

A child is a run of its own, with its task's retries, fallbacks, cache and
environment pool, linked to the run that submitted it. Submissions are journaled
in the parent: a retried or resumed parent gets the same child back (its result
if it finished, the running child otherwise) instead of starting it again::

    from cairn_sdk import tasks

    with tasks.group("refine"):
        children = [tasks.submit("report-refiner", {"topic": t}) for t in topics]
    for child in children:
        report = child.get_json()      # waits; raises ChildError if the child failed

A child's final error is raised as :class:`ChildError`, a :class:`TaskError` with
the child's ``kind``, ``message`` and ``retryable``: left uncaught it fails the
parent the same way.
"""

import json
from contextlib import contextmanager
from typing import Any, Iterator

from componentize_py_types import Err
from wit_world.imports import tasks as wit_tasks

from .errors import TaskError
from .validation import to_jsonable

__all__ = ["ChildError", "Pending", "RunContext", "call", "call_json", "current", "group", "submit"]

RunContext = wit_tasks.RunContext
"""The run an attempt belongs to: ``run_id``, ``task``, ``attempt`` (1 for the
first) and ``parent`` (the submitting run's id, or ``None``)."""


class ChildError(TaskError):
    """A child run's final error (or a failed submission), with the child's
    ``kind``, ``message`` and ``retryable``; ``task`` is the child's task and
    ``run_id`` its run id when known."""

    def __init__(self, error: Any, task: str, run_id: str | None = None) -> None:
        super().__init__(str(error.kind), str(error.message), retryable=bool(error.retryable))
        self.task = task
        self.run_id = run_id


def current() -> RunContext:
    """The current run, as the host sees it now. On a reused (warm) instance it
    changes from run to run: call it when needed, do not keep it in a global."""
    return wit_tasks.current()


def _to_json(input: Any) -> str:
    """``input`` as a JSON document: a ``str`` is taken as JSON already; anything
    else (dicts, lists, models, dataclasses, ...) is serialised."""
    if isinstance(input, str):
        return input
    return json.dumps(to_jsonable(input), ensure_ascii=False)


class Pending:
    """A submitted child run: ``run_id`` is its id (see ``cairn runs show``),
    ``task`` its task name. Dropping it does not cancel the child."""

    def __init__(self, handle: Any, task: str) -> None:
        self._handle = handle
        self.task = task
        self.run_id: str = handle.run_id()

    def get(self) -> str:
        """Waits for the child to finish and returns its output (a JSON document);
        raises :class:`ChildError` with its final error once its retries and
        fallbacks are spent. May be called more than once."""
        try:
            return self._handle.get()
        except Err as e:
            raise ChildError(e.value, self.task, self.run_id) from None

    def get_json(self) -> Any:
        """:meth:`get`, parsed from JSON."""
        return json.loads(self.get())

    def __repr__(self) -> str:
        return f"Pending(task={self.task!r}, run_id={self.run_id!r})"


def submit(task: str, input: Any) -> Pending:
    """Starts task ``task`` (a name from the manifest) on ``input`` and returns at
    once; children run concurrently, bounded by their environment's pool.
    ``input`` is a JSON document (``str``) or a value to serialise (``dict``, list,
    model, dataclass). Raises :class:`ChildError` when the task is unknown or the
    host cannot record the submission."""
    try:
        return Pending(wit_tasks.submit(task, _to_json(input)), task)
    except Err as e:
        raise ChildError(e.value, task) from None


def call(task: str, input: Any) -> str:
    """Runs ``task`` on ``input`` as a child and waits for it: its output (a JSON
    document), or :class:`ChildError` with its final error."""
    try:
        return wit_tasks.call(task, _to_json(input))
    except Err as e:
        raise ChildError(e.value, task) from None


def call_json(task: str, input: Any) -> Any:
    """:func:`call`, parsed from JSON."""
    return json.loads(call(task, input))


@contextmanager
def group(name: str) -> Iterator[str]:
    """A named group of children (Flyte's ``group``), open for the ``with`` block:
    children submitted inside belong to it, and groups opened inside nest under it.
    Yields the group's full name (outer groups first, joined by ``/``)::

        with tasks.group("batch-1") as full_name:
            ...
    """
    handle = wit_tasks.Group(name)
    try:
        yield handle.name()
    finally:
        handle.__exit__(None, None, None)
