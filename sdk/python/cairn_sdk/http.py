"""Outbound HTTP through the host (``cairn:task/http``), journaled like an LLM
call: a request that got its response is answered from the run's journal on a
retry or resume (and from a cassette on replay), never sent twice. Responses
with status 429 or 5xx are not journaled, so the next attempt asks again.

Off by default: the environment must list the destination in
``allowed_outbound_hosts``. Secrets go into headers as placeholders
(:func:`secret`), which the host fills in on the way out; the task never holds
the value::

    from cairn_sdk import http

    weather = http.get(
        "https://api.example.com/v1/weather?city=Oslo",
        headers={"authorization": f"Bearer {http.secret('WEATHER_KEY')}"},
    ).json()
"""

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from componentize_py_types import Err
from wit_world.imports import http as wit_http

from .errors import TaskError

__all__ = ["HttpError", "Response", "get", "post", "request", "secret"]

_KINDS = {
    wit_http.HttpError_Denied: ("denied", False),
    wit_http.HttpError_Prohibited: ("prohibited", False),
    wit_http.HttpError_TooLarge: ("too-large", False),
    wit_http.HttpError_Timeout: ("timeout", True),
    wit_http.HttpError_Failed: ("failed", True),
}


class HttpError(TaskError):
    """A request that got no response, as a task error of kind ``http-<case>``:
    ``http-denied`` (not in ``allowed_outbound_hosts``), ``http-prohibited`` (a
    name resolving to a private address) and ``http-too-large`` are not
    retryable; ``http-timeout`` and ``http-failed`` are. :meth:`Response.raise_for_status`
    raises kind ``http-status`` (retryable for 429 and 5xx)."""


@dataclass
class Response:
    """A whole response: ``status``, ``headers`` (lowercase names, in order) and ``body`` (bytes)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case)."""
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    @property
    def text(self) -> str:
        """The body as text (invalid UTF-8 replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; raises kind ``http-invalid-response`` if it is not."""
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise HttpError("http-invalid-response", f"the response body is not JSON: {e}", retryable=True) from None

    def raise_for_status(self) -> "Response":
        """This response if its status is 2xx; else raises kind ``http-status``."""
        if 200 <= self.status < 300:
            return self
        raise HttpError(
            "http-status",
            f"the server answered {self.status}: {self.text[:200]}",
            retryable=self.status == 429 or self.status >= 500,
        )


def secret(name: str) -> str:
    """The placeholder the host replaces with secret ``name``'s value in a header
    of a request to an allowed destination. The environment must declare the secret."""
    return "{{secret:" + name + "}}"


def request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    json_body: Any = None,
) -> Response:
    """Sends a request (or gets its journaled response back); raises :class:`HttpError`.
    ``json_body`` sends JSON with its ``content-type``."""
    pairs = [(str(k), str(v)) for k, v in (headers or {}).items()]
    if json_body is not None:
        body = json.dumps(json_body)
        pairs.append(("content-type", "application/json"))
    data = body.encode() if isinstance(body, str) else (body or b"")
    try:
        answer = wit_http.send(wit_http.Request(method=method.upper(), url=url, headers=pairs, body=data))
    except Err as e:
        kind, retryable = _KINDS.get(type(e.value), ("failed", True))
        raise HttpError(f"http-{kind}", str(getattr(e.value, "value", e.value)), retryable=retryable) from None
    return Response(status=answer.status, headers=list(answer.headers), body=bytes(answer.body))


def get(url: str, headers: Mapping[str, str] | None = None) -> Response:
    """``GET url``."""
    return request("GET", url, headers=headers)


def post(url: str, body: bytes | str | None = None, headers: Mapping[str, str] | None = None, json_body: Any = None) -> Response:
    """``POST url`` with ``body`` (or ``json_body``)."""
    return request("POST", url, headers=headers, body=body, json_body=json_body)
