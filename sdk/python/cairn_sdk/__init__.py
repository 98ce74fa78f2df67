"""Write Cairn tasks in Python (componentize-py guests of the ``cairn:task`` world).

A task is a function from JSON input to JSON output, exported once per module::

    from cairn_sdk import call_llm, export_task, trace

    @trace
    def greet(name: str) -> str:
        return call_llm(f"Greet {name}.", "You are kind.")

    def hello(name: str) -> dict:
        return {"greeting": greet(name)}

    WitWorld = export_task(hello)

Imports: :func:`call_llm`, :func:`complete` and :func:`call_llm_json` (LLM,
journaled by the host), :func:`trace` (durable checkpoints for your own steps),
:mod:`~cairn_sdk.tasks` (child runs, fan-out, groups, the current run),
:mod:`~cairn_sdk.secrets`, :mod:`~cairn_sdk.report`, :mod:`~cairn_sdk.files`
(the task's directory), :mod:`~cairn_sdk.http`
(outbound requests, journaled) and :mod:`~cairn_sdk.env`;
errors in :mod:`~cairn_sdk.errors`; Pydantic-style validation in
:mod:`~cairn_sdk.validation`.
"""

from . import env, files, http, report, secrets, tasks
from .errors import InvalidInput, InvalidOutput, TaskError, kebab_case, to_task_error
from .files import FileError
from .llm import LlmError, Response, call_llm, call_llm_json, complete
from .refs import Dir, File
from .secrets import SecretError
from .task import export_task
from .tasks import ChildError, Pending, RunContext
from .tracing import canonical_json, trace
from .validation import Field, Model, ValidationError, model_validator, to_jsonable, validate_as

__all__ = [
    "ChildError",
    "Dir",
    "File",
    "Field",
    "FileError",
    "InvalidInput",
    "InvalidOutput",
    "LlmError",
    "Model",
    "Pending",
    "Response",
    "RunContext",
    "SecretError",
    "TaskError",
    "ValidationError",
    "call_llm",
    "call_llm_json",
    "canonical_json",
    "complete",
    "env",
    "export_task",
    "files",
    "http",
    "kebab_case",
    "model_validator",
    "report",
    "secrets",
    "tasks",
    "to_jsonable",
    "to_task_error",
    "trace",
    "validate_as",
]
