"""Task errors, and how any exception becomes the ``task-error`` the host sees.

The host's retry policies match on an error's ``kind`` and stop at once when it
is not ``retryable``. A task chooses both by raising :class:`TaskError` (or one
of its subclasses); any other exception that escapes the task is mapped by
:func:`to_task_error`:

- ``kind`` is the exception type's name in kebab-case (``ValueError`` ->
  ``value-error``, ``JSONDecodeError`` -> ``json-decode-error``);
- ``message`` is ``"<TypeName>: <str(exc)>"``;
- ``retryable`` is ``True`` unless the exception (its class or the instance)
  has an attribute ``retryable`` that is false.

The traceback of such an exception is printed to stderr, which the host keeps in
the run's log (``cairn runs logs RUN``).
"""

import re
import sys
import traceback

from wit_world.imports import types as wit_types

__all__ = [
    "TaskError",
    "InvalidInput",
    "InvalidOutput",
    "kebab_case",
    "to_task_error",
]


def kebab_case(name: str) -> str:
    """``"HTTPTimeoutError"`` -> ``"http-timeout-error"``: the kind derived from a type name."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name)
    return re.sub(r"[^a-z0-9]+", "-", spaced.lower()).strip("-") or "error"


class TaskError(Exception):
    """A failure with an explicit ``kind`` (short, kebab-case: what retry policies
    match on), a human-readable ``message`` and whether a retry may help.

    Subclasses may fix ``kind`` and ``retryable`` as class attributes.
    """

    kind: str
    retryable: bool

    def __init__(self, kind: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class InvalidInput(TaskError):
    """Kind ``invalid-input``, not retryable: the input will not get better by retrying."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid-input", message, retryable=False)


class InvalidOutput(TaskError):
    """Kind ``invalid-output``, retryable: e.g. a model's answer that failed validation."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__("invalid-output", message, retryable=retryable)


def to_task_error(exc: BaseException) -> wit_types.TaskError:
    """The ``task-error`` for an exception that escaped the task (see the module's doc)."""
    if isinstance(exc, TaskError):
        return wit_types.TaskError(kind=exc.kind, message=exc.message, retryable=bool(exc.retryable))
    traceback.print_exception(exc, file=sys.stderr)
    type_name = type(exc).__name__
    text = str(exc)
    return wit_types.TaskError(
        kind=kebab_case(type_name),
        message=f"{type_name}: {text}" if text else type_name,
        retryable=bool(getattr(exc, "retryable", True)),
    )
