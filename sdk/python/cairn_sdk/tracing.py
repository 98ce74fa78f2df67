"""``@trace``: durable checkpoints for the task's own steps (Flyte's ``@flyte.trace``)."""

import functools
import inspect
import json
import sys
import typing
from typing import Any, Callable, TypeVar, overload

from wit_world.imports import trace as wit_trace

from .validation import ValidationError, to_jsonable, validate_as

__all__ = ["trace", "canonical_json"]

F = TypeVar("F", bound=Callable[..., Any])


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys (models and dataclasses as dicts).
    Raises ``TypeError`` for values JSON cannot hold."""
    return json.dumps(to_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@overload
def trace(fn: F) -> F: ...
@overload
def trace(fn: str | None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def trace(fn: Any = None, *, name: str | None = None) -> Any:
    """Makes a function a durable step: a retried or resumed run gets its recorded
    result back instead of calling it again.

    Use it bare (``@trace``; the step is named after the function) or named
    (``@trace("draft")``). The step's input is its arguments, bound to the
    parameter names with defaults applied and serialised to JSON; the n-th call
    with the same name and arguments in a run matches the n-th record. On a hit
    the recorded result is returned, converted to the return annotation (models,
    dataclasses, lists of them); the function's LLM calls are not made at all.
    On a miss the function runs and its result is recorded before it is
    returned. Exceptions are not recorded. Arguments or results that JSON
    cannot hold make the step run untraced (a warning goes to stderr).
    """
    if isinstance(fn, str):
        name, fn = fn, None
    if fn is None:
        return lambda f: trace(f, name=name)
    step = name or fn.__qualname__
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            key = canonical_json(bound.arguments)
        except (TypeError, ValueError) as e:
            print(f"cairn_sdk: step {step!r} runs untraced: its arguments are not JSON ({e})", file=sys.stderr)
            return fn(*args, **kwargs)
        recorded = wit_trace.recall(step, key)
        if recorded is not None:
            try:
                return _decode(json.loads(recorded), fn)
            except (ValueError, ValidationError) as e:
                print(f"cairn_sdk: step {step!r}: recorded result does not fit ({e}); running it again", file=sys.stderr)
        result = fn(*args, **kwargs)
        try:
            wit_trace.record(step, key, canonical_json(result))
        except (TypeError, ValueError) as e:
            print(f"cairn_sdk: step {step!r}: result not recorded, it is not JSON ({e})", file=sys.stderr)
        return result

    return traced


def _decode(value: Any, fn: Callable[..., Any]) -> Any:
    """A recorded JSON result converted to ``fn``'s return annotation, if it has one."""
    try:
        annotation = typing.get_type_hints(fn).get("return", Any)
    except (NameError, TypeError):
        annotation = Any
    return validate_as(value, annotation, f"the result of {fn.__qualname__}")
