"""LLM calls. The host picks the provider, holds its key and journals every
answer, so a retried or resumed run gets recorded answers back without calling
the provider again; no decorator is needed for that."""

import json
from typing import Any, Callable, TypeVar

from componentize_py_types import Err
from wit_world.imports import llm as wit_llm

from .errors import InvalidOutput, TaskError
from .validation import Model, ValidationError

__all__ = ["LlmError", "Response", "call_llm", "call_llm_json", "complete"]

T = TypeVar("T")

Response = wit_llm.Response
"""A finished completion: ``content``, ``model`` and ``usage`` (prompt and completion tokens)."""

_ROLES = {"system": wit_llm.Role.SYSTEM, "user": wit_llm.Role.USER, "assistant": wit_llm.Role.ASSISTANT}


class LlmError(TaskError):
    """A failed LLM call, as a task error of kind ``llm-<case>``: ``llm-rate-limited``,
    ``llm-timeout``, ``llm-unavailable``, ``llm-invalid-response`` and
    ``llm-circuit-open`` are retryable; ``llm-invalid-request`` and
    ``llm-budget-exceeded`` are not. ``error`` is the host's raw ``llm-error``."""

    def __init__(self, error: Any) -> None:
        self.error = error
        detail = getattr(error, "value", None)
        self.retry_after_ms: int | None = detail if isinstance(error, wit_llm.LlmError_RateLimited) else None
        kind, message, retryable = _describe(error, detail)
        super().__init__(kind, message, retryable=retryable)


def _describe(error: Any, detail: Any) -> tuple[str, str, bool]:
    if isinstance(error, wit_llm.LlmError_RateLimited):
        wait = f"; it asks to wait {detail} ms" if detail is not None else ""
        return "llm-rate-limited", f"the LLM provider is rate limiting{wait}", True
    if isinstance(error, wit_llm.LlmError_Timeout):
        return "llm-timeout", "the LLM provider did not answer in time", True
    if isinstance(error, wit_llm.LlmError_Unavailable):
        return "llm-unavailable", f"the LLM provider is unavailable: {detail}", True
    if isinstance(error, wit_llm.LlmError_InvalidRequest):
        return "llm-invalid-request", f"the LLM request is invalid: {detail}", False
    if isinstance(error, wit_llm.LlmError_InvalidResponse):
        return "llm-invalid-response", f"the LLM's answer could not be used: {detail}", True
    if isinstance(error, wit_llm.LlmError_BudgetExceeded):
        return "llm-budget-exceeded", "the LLM token budget is used up", False
    if isinstance(error, wit_llm.LlmError_CircuitOpen):
        return "llm-circuit-open", "the LLM provider's circuit breaker is open", True
    return "llm-error", f"the LLM call failed: {error!r}", True


def call_llm(prompt: str, system: str, json_mode: bool = False) -> str:
    """Sends ``prompt`` with system prompt ``system`` and returns the answer's text.
    With ``json_mode`` the provider is asked for one JSON document. Raises
    :class:`LlmError`."""
    try:
        return wit_llm.call_llm(prompt, system, json_mode)
    except Err as e:
        raise LlmError(e.value) from None


def complete(
    messages: list[dict[str, str]],
    *,
    model: str | None = None,
    json_mode: bool = False,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> Response:
    """Sends a chat conversation (``[{"role": "system" | "user" | "assistant",
    "content": ...}, ...]``, oldest first) and returns the full :data:`Response`.
    Raises :class:`LlmError`, or ``ValueError`` for an unknown role."""
    converted = []
    for message in messages:
        role = _ROLES.get(message["role"])
        if role is None:
            raise ValueError(f"unknown message role {message['role']!r}; use system, user or assistant")
        converted.append(wit_llm.Message(role=role, content=message["content"]))
    request = wit_llm.Request(
        model=model,
        messages=converted,
        response_format=wit_llm.ResponseFormat.JSON if json_mode else wit_llm.ResponseFormat.TEXT,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    try:
        return wit_llm.complete(request)
    except Err as e:
        raise LlmError(e.value) from None


def call_llm_json(prompt: str, system: str, schema: type[T] | Callable[[Any], T], attempts: int = 3) -> T:
    """Asks for JSON and returns it validated by ``schema``: a :class:`Model`
    subclass, or a function that takes the parsed JSON and returns the value to
    use (raising ``ValueError`` to reject it).

    When the answer does not parse or is rejected, asks again (up to
    ``attempts`` asks in all), adding to the prompt why the previous answer was
    rejected. Each ask is journaled by the host, so a replayed run follows the
    same path. When every ask fails, raises :class:`InvalidOutput` (retryable);
    other LLM errors are raised at once as :class:`LlmError`.
    """
    if isinstance(schema, type) and issubclass(schema, Model):
        check: Callable[[Any], Any] = schema.model_validate
    else:
        check = schema
    attempts = max(1, attempts)
    problem, last = "", ""
    for ask in range(1, attempts + 1):
        text_prompt = prompt if ask == 1 else (
            f"{prompt}\n\nYour previous answer was rejected: {problem}\n"
            "Answer again with a single JSON document of the requested shape."
        )
        try:
            text = call_llm(text_prompt, system, True)
        except LlmError as e:
            if not isinstance(e.error, wit_llm.LlmError_InvalidResponse):
                raise
            problem = str(e.error.value)
            continue
        last = text[:600]
        try:
            return check(json.loads(text))
        except ValidationError as e:
            problem = "; ".join(f"{loc}: {why}" if loc else why for loc, why in e.problems)
        except ValueError as e:
            problem = f"it is not JSON of the expected shape ({e})"
        # Journaled, but not to be replayed: a retry asks again.
        wit_llm.reject(problem)
    # The answer itself tells an author what came back (the mock's default says how to change it).
    answer = f"; the last answer began: {last}" if last else ""
    raise InvalidOutput(f"the model gave no valid JSON answer in {attempts} attempt(s); last problem: {problem}{answer}")
