"""Files in the task's own directory: the same small API as the Rust and
JavaScript SDKs, over the standard library (WASI gives the task its run's
directory as ``.``, and files handed to the run read-only under ``in/``)::

    from cairn_sdk import files

    files.write_text("out/report.csv", "a,b\\n1,2\\n")   # folders are made as needed
    files.read_text("out/report.csv")                   # 'a,b\\n1,2\\n'
    files.list("out")                                    # ['report.csv']

Paths are relative to the task's directory, with ``/`` between parts; an
absolute path or one that climbs out with ``..`` is refused. Failures raise
:class:`FileError` (kind ``file-error``, not retried: the same call would fail
again), naming the path and the reason.
"""

import errno
import os

from .errors import TaskError

__all__ = [
    "FileError",
    "exists",
    "list",
    "mkdir",
    "read_bytes",
    "read_text",
    "remove",
    "size",
    "write_bytes",
    "write_text",
]

_REASONS = {
    errno.ENOENT: "no such file or directory",
    errno.EEXIST: "it exists already",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EISDIR: "it is a directory",
    errno.EROFS: "it is read-only (files handed to the task under in/ cannot be changed)",
    errno.EPERM: "not permitted (outside the task's directories?)",
    errno.EACCES: "access denied",
    errno.ENOSPC: "no space left (the environment's disk limit?)",
    errno.EDQUOT: "the disk quota is used up",
    errno.ENOTEMPTY: "the directory is not empty",
}


class FileError(TaskError):
    """A failed file operation: kind ``file-error``, not retryable."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__("file-error", f"{path}: {reason}", retryable=False)
        self.path = path
        self.reason = reason


def _checked(path: str) -> str:
    """``path`` as the task gave it, once it is known to stay inside the task's directories."""
    if not isinstance(path, str) or not path:
        raise FileError(str(path), "the path must be a non-empty string")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise FileError(path, "paths are relative to the task's directory and may not climb out of it with '..'")
    return "/".join(parts) or "."


def _failed(path: str, error: OSError) -> FileError:
    return FileError(path, _REASONS.get(error.errno, error.strerror or str(error)))


def read_bytes(path: str) -> bytes:
    """The file's bytes."""
    inner = _checked(path)
    try:
        with open(inner, "rb") as file:
            return file.read()
    except OSError as e:
        raise _failed(path, e) from None


def read_text(path: str) -> str:
    """The file's text, decoded as UTF-8."""
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` as the whole file, making its folders as needed."""
    inner = _checked(path)
    try:
        parent = os.path.dirname(inner)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(inner, "wb") as file:
            file.write(data)
    except OSError as e:
        raise _failed(path, e) from None


def write_text(path: str, text: str) -> None:
    """Writes ``text`` as UTF-8 as the whole file, making its folders as needed."""
    write_bytes(path, str(text).encode("utf-8"))


def exists(path: str) -> bool:
    """Whether ``path`` exists (a file or a folder)."""
    return os.path.exists(_checked(path))


def size(path: str) -> int:
    """The size of a file, in bytes."""
    inner = _checked(path)
    try:
        return os.stat(inner).st_size
    except OSError as e:
        raise _failed(path, e) from None


def list(path: str = ".") -> "list[str]":  # noqa: A001 - the SDKs' shared name
    """The names in folder ``path`` (default: the task's directory), sorted; folders end with ``/``."""
    inner = _checked(path)
    try:
        with os.scandir(inner) as entries:
            return sorted(e.name + "/" if e.is_dir() else e.name for e in entries)
    except OSError as e:
        raise _failed(path, e) from None


def mkdir(path: str) -> None:
    """Makes folder ``path`` and any above it; nothing happens if it exists."""
    inner = _checked(path)
    try:
        os.makedirs(inner, exist_ok=True)
    except OSError as e:
        raise _failed(path, e) from None


def remove(path: str) -> None:
    """Removes a file, or an empty folder."""
    inner = _checked(path)
    try:
        if os.path.isdir(inner):
            os.rmdir(inner)
        else:
            os.remove(inner)
    except OSError as e:
        raise _failed(path, e) from None
