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

    def __init__(self, error: object, key: str = "") -> None:
        self.key = key
        # The host's message names the key and says how to fix it.
        message = str(getattr(error, "value", error))
        if isinstance(error, wit_secrets.SecretError_NotDeclared):
            super().__init__("secret-not-declared", message, retryable=False)
        else:
            super().__init__("secret-not-found", message, retryable=False)


def get(key: str) -> str:
    """The value of secret ``key``; raises :class:`SecretError`."""
    try:
        return wit_secrets.get(key)
    except Err as e:
        raise SecretError(e.value, key) from None
