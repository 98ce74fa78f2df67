"""JSON Schemas (2020-12) of a task's input and output, derived from its
function's type hints: what the component's ``describe`` export returns, so
the host checks a run's input before any attempt.

``str``, ``int``, ``float``, ``bool``, ``None``, ``list[T]``, ``tuple[...]``,
``dict[str, T]``, ``Optional``/``Union``, ``Literal``, :class:`Model` and
dataclasses (with :func:`Field` bounds), ``File`` and ``Dir``; anything else
(``Any``, no annotation) allows every value.
"""

import dataclasses
import inspect
import json
import types
import typing
from typing import Any, Callable, Literal, Union

from .validation import Model, _fields_of

__all__ = ["interface_of", "schema_of"]


def schema_of(annotation: Any, defs: dict) -> Any:
    """The schema of values of ``annotation``; models and dataclasses go in ``defs``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object or annotation is inspect.Parameter.empty:
        return True
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if origin is Union or origin is types.UnionType:
        return {"anyOf": [schema_of(a, defs) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if annotation in simple:
        return {"type": simple[annotation]}
    if origin is tuple and args and args[-1] is not Ellipsis:
        return {"type": "array", "prefixItems": [schema_of(a, defs) for a in args], "minItems": len(args), "maxItems": len(args)}
    if origin in (list, tuple) or annotation in (list, tuple):
        return {"type": "array", "items": schema_of(args[0], defs) if args else True}
    if origin is dict or annotation is dict:
        return {"type": "object", "additionalProperties": schema_of(args[1], defs) if len(args) == 2 else True}
    key = getattr(annotation, "KEY", None)
    if isinstance(annotation, type) and hasattr(annotation, "_cairn_from_json") and key:  # File, Dir
        return {"type": "object", "required": [key], "properties": {key: {"type": "string"}}}
    if isinstance(annotation, type) and (issubclass(annotation, Model) or dataclasses.is_dataclass(annotation)):
        name = annotation.__name__
        if name not in defs:
            defs[name] = True  # a model that refers to itself
            properties, required = {}, []
            for field, info in _fields_of(annotation).items():
                schema = schema_of(info.annotation, defs)
                if isinstance(schema, dict):
                    schema = dict(schema)
                    for bound, word in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum")):
                        if getattr(info, bound) is not None:
                            schema[word] = getattr(info, bound)
                    for bound, word in (("min_length", "min"), ("max_length", "max")):
                        if getattr(info, bound) is not None:
                            schema[word + ("Length" if schema.get("type") == "string" else "Items")] = getattr(info, bound)
                    if info.description:
                        schema["description"] = info.description
                properties[field] = schema
                if info.is_required():
                    required.append(field)
            defs[name] = {"type": "object", "properties": properties, "required": required}
        return {"$ref": f"#/$defs/{name}"}
    return True


def _with_defs(schema: Any, defs: dict) -> Any:
    if defs and isinstance(schema, dict):
        return {**schema, "$defs": defs}
    if defs:
        return {"allOf": [schema], "$defs": defs}
    return schema


def interface_of(fn: Callable[..., Any]) -> str:
    """``{"input": SCHEMA, "output": SCHEMA}`` of a task function, as ``export_task`` binds it."""
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn)
    params = [
        p
        for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    defs: dict = {}
    whole = None
    if len(params) == 1:
        annotation = hints.get(params[0].name)
        if annotation is dict or typing.get_origin(annotation) is dict or (
            isinstance(annotation, type) and (issubclass(annotation, Model) or dataclasses.is_dataclass(annotation))
        ):
            whole = schema_of(annotation, defs)
    if whole is None:
        properties = {p.name: schema_of(hints.get(p.name, Any), defs) for p in params}
        required = [p.name for p in params if p.default is inspect.Parameter.empty]
        whole = {"type": "object", "properties": properties, "required": required}
    input_schema = _with_defs(whole, defs)
    out_defs: dict = {}
    output_schema = _with_defs(schema_of(hints.get("return", Any), out_defs), out_defs)
    return json.dumps({"input": input_schema, "output": output_schema})
