"""Pydantic-free validation of JSON data: :class:`Model`, :func:`Field`,
:func:`model_validator` and :class:`ValidationError`, with Pydantic v2's names.

Pydantic v2 does not build for the component target (its core is a native
extension with no WASI build), so this module covers what tasks need to check a
model's JSON answer or a task's input, in the same spelling::

    class Critique(Model):
        score: int = Field(ge=1, le=10, description="Quality score from 1-10")
        strengths: list[str] = Field(description="What the draft does well")

    critique = Critique.model_validate_json(text)   # raises ValidationError

Types understood: ``str``, ``int`` (not ``bool``, not ``9.0``), ``float``
(``int`` accepted), ``bool``, ``None``, ``Any``, ``list[T]``, ``tuple[T, ...]``,
``dict[str, T]``, ``Optional[T]`` and other unions, ``Literal[...]``, nested
models and dataclasses. Constraints: ``ge``, ``gt``, ``le``, ``lt`` on numbers,
``min_length`` and ``max_length`` on strings and lists. Keys a model does not
declare are ignored, as in Pydantic's default.
"""

import dataclasses
import json
import types
import typing
from typing import Any, Callable, ClassVar, Literal, Union

__all__ = ["Field", "FieldInfo", "Model", "ValidationError", "model_validator", "validate_as", "to_jsonable"]

_MISSING: Any = object()


class ValidationError(ValueError):
    """Data that does not fit a type: ``problems`` lists (location, explanation) pairs."""

    def __init__(self, title: str, problems: list[tuple[str, str]]) -> None:
        self.title = title
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        lines = [f"{count} validation error{'s' if count != 1 else ''} for {self.title}"]
        lines += [f"  {loc or '(root)'}: {why}" for loc, why in self.problems]
        return "\n".join(lines)

    def errors(self) -> list[dict[str, str]]:
        """The problems as ``{"loc": ..., "msg": ...}`` dicts."""
        return [{"loc": loc, "msg": why} for loc, why in self.problems]


@dataclasses.dataclass
class FieldInfo:
    """A model field's default and constraints (made by :func:`Field`)."""

    default: Any = _MISSING
    default_factory: Callable[[], Any] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    description: str | None = None
    annotation: Any = Any

    def is_required(self) -> bool:
        """Whether the field has neither a default nor a default factory."""
        return self.default is _MISSING and self.default_factory is None

    def make_default(self) -> Any:
        """A fresh default value for the field."""
        return self.default_factory() if self.default_factory is not None else self.default


def Field(  # noqa: N802 (Pydantic's spelling)
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    description: str | None = None,
) -> Any:
    """Declares a model field's default and constraints, as Pydantic's ``Field``."""
    return FieldInfo(default, default_factory, ge, gt, le, lt, min_length, max_length, description)


def model_validator(*, mode: Literal["after"] = "after") -> Callable[[Callable], Callable]:
    """Marks a model method that checks the whole model after its fields are
    validated; it raises ``ValueError`` to reject the data and returns ``self``."""
    if mode != "after":
        raise ValueError('only model_validator(mode="after") is supported')

    def mark(method: Callable) -> Callable:
        method.__cairn_after_validator__ = True  # type: ignore[attr-defined]
        return method

    return mark


class Model:
    """A typed record validated from JSON data, like Pydantic's ``BaseModel``."""

    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _after_validators: ClassVar[list[Callable]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: dict[str, FieldInfo] = {}
        for name, annotation in typing.get_type_hints(cls).items():
            if name.startswith("_") or typing.get_origin(annotation) is ClassVar:
                continue
            declared = cls.__dict__.get(name, _MISSING)
            if declared is _MISSING:
                info = dataclasses.replace(cls.model_fields.get(name, FieldInfo()))
            elif isinstance(declared, FieldInfo):
                info = dataclasses.replace(declared)
            else:
                info = FieldInfo(default=declared)
            info.annotation = annotation
            fields[name] = info
            if isinstance(declared, FieldInfo):
                delattr(cls, name)
        cls.model_fields = fields
        cls._after_validators = [
            member
            for klass in reversed(cls.__mro__)
            for member in vars(klass).values()
            if getattr(member, "__cairn_after_validator__", False)
        ]

    def __init__(self, **data: Any) -> None:
        problems: list[tuple[str, str]] = []
        values = _validate_fields(type(self), data, "", problems)
        if not problems:
            self._fill(values, "", problems)
        if problems:
            raise ValidationError(type(self).__name__, problems)

    def _fill(self, values: dict[str, Any], loc: str, problems: list[tuple[str, str]]) -> None:
        """Sets validated field values, then runs the model's after-validators."""
        self.__dict__.update(values)
        for check in self._after_validators:
            try:
                check(self)
            except ValueError as e:
                problems.append((loc, str(e)))
                return

    @classmethod
    def model_validate(cls, data: Any) -> typing.Self:
        """An instance made from a JSON-like value (a dict); raises :class:`ValidationError`."""
        return validate_as(data, cls)

    @classmethod
    def model_validate_json(cls, text: str | bytes) -> typing.Self:
        """An instance made from a JSON document; raises :class:`ValidationError`."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValidationError(cls.__name__, [("", f"not valid JSON ({e})")]) from None
        return cls.model_validate(data)

    def model_dump(self) -> dict[str, Any]:
        """The model as a dict of plain JSON values."""
        return {name: to_jsonable(getattr(self, name)) for name in self.model_fields}

    def model_dump_json(self) -> str:
        """The model as a JSON document."""
        return json.dumps(self.model_dump(), ensure_ascii=False)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.model_dump() == other.model_dump()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.model_fields)
        return f"{type(self).__name__}({fields})"


def validate_as(value: Any, annotation: Any, title: str | None = None) -> Any:
    """``value`` checked against a type annotation and converted (dicts become models
    or dataclasses where the annotation says so); raises :class:`ValidationError`."""
    problems: list[tuple[str, str]] = []
    result = _check(value, annotation, "", problems)
    if problems:
        raise ValidationError(title or _type_name(annotation), problems)
    return result


def to_jsonable(value: Any) -> Any:
    """``value`` with models and dataclasses turned into dicts and tuples into lists."""
    if isinstance(value, Model):
        return value.model_dump()
    if hasattr(value, "_cairn_from_json"):  # a File or Dir reference
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    return value


def _validate_fields(cls: type, data: Any, loc: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    fields = _fields_of(cls)
    if not isinstance(data, dict):
        problems.append((loc, f"expected an object, got {_json_type(data)}"))
        return {}
    values = {}
    for name, info in fields.items():
        where = f"{loc}.{name}" if loc else name
        if name in data:
            values[name] = _check(data[name], info.annotation, where, problems)
            _constrain(values[name], info, where, problems)
        elif info.is_required():
            problems.append((where, "field required"))
        else:
            values[name] = info.make_default()
    return values


def _fields_of(cls: type) -> dict[str, FieldInfo]:
    if issubclass(cls, Model):
        return cls.model_fields
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        factory = None if f.default_factory is dataclasses.MISSING else f.default_factory
        default = _MISSING if f.default is dataclasses.MISSING else f.default
        fields[f.name] = FieldInfo(default=default, default_factory=factory, annotation=hints.get(f.name, Any))
    return fields


def _check(value: Any, annotation: Any, loc: str, problems: list[tuple[str, str]]) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is object:
        return value
    if annotation is None or annotation is type(None):
        return value if value is None else _wrong(loc, "null", value, problems)
    if origin is Union or origin is types.UnionType:
        present = [a for a in args if a is not type(None)]
        if value is not None and len(present) == 1:  # Optional[T]: report T's own problems
            return _check(value, present[0], loc, problems)
        for option in args:
            attempt: list[tuple[str, str]] = []
            result = _check(value, option, loc, attempt)
            if not attempt:
                return result
        return _wrong(loc, " or ".join(_type_name(a) for a in args), value, problems)
    if origin is Literal:
        if value in args:
            return value
        problems.append((loc, f"expected one of {', '.join(json.dumps(a) for a in args)}, got {_short(value)}"))
        return value
    if annotation is bool:
        return value if isinstance(value, bool) else _wrong(loc, "a boolean", value, problems)
    if annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return value if ok else _wrong(loc, "an integer", value, problems)
    if annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _wrong(loc, "a number", value, problems)
    if annotation is str:
        return value if isinstance(value, str) else _wrong(loc, "a string", value, problems)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _wrong(loc, "a list", value, problems)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                problems.append((loc, f"expected {len(args)} items, got {len(value)}"))
                return value
            return tuple(_check(v, a, f"{loc}[{i}]", problems) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_check(v, item, f"{loc}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if (origin or annotation) is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return _wrong(loc, "an object", value, problems)
        item = args[1] if len(args) == 2 else Any
        return {k: _check(v, item, f"{loc}.{k}" if loc else str(k), problems) for k, v in value.items()}
    if isinstance(annotation, type) and hasattr(annotation, "_cairn_from_json"):  # File, Dir
        if isinstance(value, annotation):
            return value
        try:
            return annotation._cairn_from_json(value)
        except ValueError as e:
            problems.append((loc, str(e)))
            return value
    if isinstance(annotation, type) and (issubclass(annotation, Model) or dataclasses.is_dataclass(annotation)):
        if isinstance(value, annotation):
            return value
        before = len(problems)
        values = _validate_fields(annotation, value, loc, problems)
        if len(problems) > before:
            return value
        if issubclass(annotation, Model):
            model = annotation.__new__(annotation)
            model._fill(values, loc, problems)
            return model
        return annotation(**values)
    if isinstance(annotation, type):
        return value if isinstance(value, annotation) else _wrong(loc, _type_name(annotation), value, problems)
    return value


def _constrain(value: Any, info: FieldInfo, loc: str, problems: list[tuple[str, str]]) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for bound, holds, words in (
            (info.ge, lambda b: value >= b, "greater than or equal to"),
            (info.gt, lambda b: value > b, "greater than"),
            (info.le, lambda b: value <= b, "less than or equal to"),
            (info.lt, lambda b: value < b, "less than"),
        ):
            if bound is not None and not holds(bound):
                problems.append((loc, f"must be {words} {bound}, got {value}"))
    if isinstance(value, (str, list, tuple)):
        if info.min_length is not None and len(value) < info.min_length:
            problems.append((loc, f"must have at least {info.min_length} characters or items, got {len(value)}"))
        if info.max_length is not None and len(value) > info.max_length:
            problems.append((loc, f"must have at most {info.max_length} characters or items, got {len(value)}"))


def _wrong(loc: str, expected: str, value: Any, problems: list[tuple[str, str]]) -> Any:
    got = "null" if value is None else f"{_json_type(value)} {_short(value)}"
    problems.append((loc, f"expected {expected}, got {got}"))
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
