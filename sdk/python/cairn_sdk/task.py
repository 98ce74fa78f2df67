"""``export_task``: turns a Python function into the component's ``run`` export."""

import dataclasses
import inspect
import json
import typing
from typing import Any, Callable

import wit_world
from componentize_py_types import Err

from .errors import InvalidInput, TaskError, to_task_error
from .schema import interface_of
from .validation import Model, ValidationError, to_jsonable, validate_as

__all__ = ["export_task"]


def export_task(fn: Callable[..., Any]) -> type:
    """The ``WitWorld`` class that componentize-py exports, running ``fn`` once
    per attempt. Assign it at module level::

        WitWorld = export_task(refine_report)

    The run's JSON input is bound to ``fn``'s parameters: a function with one
    parameter annotated with a :class:`Model`, a dataclass or ``dict`` gets the
    whole input validated into it; otherwise the input must be a JSON object whose
    keys are the parameter names (missing keys take the defaults, unknown keys
    are ignored) and each value is checked against its annotation. An input
    that does not fit is a non-retryable ``invalid-input`` error. The return
    value (plain JSON values, models, dataclasses) is the run's JSON output.
    Any exception becomes a task error as described in :mod:`cairn_sdk.errors`.
    """
    bind = _input_binder(fn)
    interface = interface_of(fn)

    class WitWorld(wit_world.WitWorld):
        """The component's export: runs the task function on the JSON input."""

        def describe(self) -> str:
            """The task's interface: JSON Schemas of its input and output, from ``fn``'s type hints."""
            return interface

        def run(self, input: str) -> str:
            """Parses ``input``, runs the task and returns its output as JSON."""
            try:
                try:
                    data = json.loads(input)
                except ValueError as e:
                    raise InvalidInput(f"the input is not JSON: {e}") from None
                args, kwargs = bind(data)
                result = fn(*args, **kwargs)
                try:
                    return json.dumps(to_jsonable(result), ensure_ascii=False)
                except (TypeError, ValueError) as e:
                    raise TaskError(
                        "invalid-output", f"the task's result is not JSON: {e}", retryable=False
                    ) from None
            except BaseException as exc:  # every failure must become a task-error, not a trap
                raise Err(to_task_error(exc)) from None

    return WitWorld


def _input_binder(fn: Callable[..., Any]) -> Callable[[Any], tuple[list[Any], dict[str, Any]]]:
    """How to turn the parsed input into ``fn``'s arguments."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = [
        p
        for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    takes_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    if len(params) == 1:
        annotation = hints.get(params[0].name)
        takes_whole = annotation is dict or typing.get_origin(annotation) is dict
        if isinstance(annotation, type) and (issubclass(annotation, Model) or dataclasses.is_dataclass(annotation)):
            takes_whole = True
        if takes_whole:

            def whole(data: Any) -> tuple[list[Any], dict[str, Any]]:
                try:
                    return [validate_as(data, annotation, "the task's input")], {}
                except ValidationError as e:
                    raise InvalidInput(str(e)) from None

            return whole

    def by_name(data: Any) -> tuple[list[Any], dict[str, Any]]:
        if not isinstance(data, dict):
            raise InvalidInput("the input must be a JSON object whose keys are the task's parameters")
        kwargs: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for p in params:
            if p.name in data:
                try:
                    kwargs[p.name] = validate_as(data[p.name], hints.get(p.name, Any))
                except ValidationError as e:
                    problems += [(_join(p.name, loc), why) for loc, why in e.problems]
            elif p.default is inspect.Parameter.empty:
                problems.append((p.name, "field required"))
        if takes_extra:
            kwargs.update({k: v for k, v in data.items() if k not in kwargs and isinstance(k, str)})
        if problems:
            raise InvalidInput(str(ValidationError("the task's input", problems)))
        return [], kwargs

    return by_name


def _join(name: str, loc: str) -> str:
    """The location ``loc`` inside parameter ``name``: ``topic``, ``items[0]``, ``options.depth``."""
    if not loc or loc.startswith("["):
        return name + loc
    return f"{name}.{loc}"
