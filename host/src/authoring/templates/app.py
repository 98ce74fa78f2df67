"""`@task@`, a Cairn task: ``{"name": "Ada"}`` in, ``{"greeting": "..."}`` out.

Build and run it from the project's folder::

    cairn build @task@ && cairn run @task@ --input '{"name": "Ada"}'
"""

from cairn_sdk import InvalidInput, call_llm, export_task, trace


@trace
def greet(name: str) -> str:
    """A durable step: a retried or resumed run gets the recorded greeting back."""
    return call_llm(f"Write a one-line greeting for {name}.", "You are a friendly assistant.")


def @function@(name: str) -> dict:
    """The input's keys are the parameters; the return value is the output."""
    if not name.strip():
        raise InvalidInput("`name` must not be empty")  # not retried
    greeting = greet(name)
    print(f"greeted {name}")  # stdout goes to the run's log (`cairn runs logs RUN`)
    return {"greeting": greeting}


WitWorld = export_task(@function@)
