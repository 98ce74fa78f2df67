"""Secrets declared by the task's environment (``secrets = [...]`` in cairn.toml).
Their values never enter the journal, the logs or the reports; keep them out of
your output too."""

from componentize_py_types import Err
from wit_world.imports import secrets as wit_secrets

from .errors import TaskError

__all__ = ["SecretError", "get"]


class SecretError(TaskError):
    """A secret that cannot be read, not retryable: kind ``secret-not-declared``
    (add the key to the environment's ``secrets``) or ``secret-not-found``
    (store it with ``cairn secret create``). ``key`` is the secret's key."""

    def __init__(self, error: object) -> None:
        self.key = str(getattr(error, "value", ""))
        if isinstance(error, wit_secrets.SecretError_NotDeclared):
            super().__init__(
                "secret-not-declared",
                f"secret `{self.key}` is not declared by this task's environment; list it under `secrets` in cairn.toml",
                retryable=False,
            )
        else:
            super().__init__(
                "secret-not-found",
                f"secret `{self.key}` has no stored value; create it with `cairn secret create {self.key} VALUE`",
                retryable=False,
            )


def get(key: str) -> str:
    """The value of secret ``key``; raises :class:`SecretError`."""
    try:
        return wit_secrets.get(key)
    except Err as e:
        raise SecretError(e.value) from None
