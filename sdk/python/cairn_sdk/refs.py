"""``File`` and ``Dir``: files that pass between tasks by reference, never
through JSON.

A task writes a file in its directory and returns (or gives a child)
``File.from_path("out/report.csv")``; the host stores it in its blob store and
puts ``{"$file": "sha256:…", "name": "report.csv", "size": 123}`` in its place.
A task that receives such a reference (a parameter annotated ``File``, or
``File.from_json(value)``) finds the file read-only at :attr:`File.path`
(``in/<16 hex digits>/report.csv``)::

    from cairn_sdk import File, export_task, files, tasks

    def report(rows: int) -> dict:
        files.write_text("out/table.csv", "n\\n" + "\\n".join(map(str, range(rows))))
        summary = tasks.call_json("summarise", {"table": File.from_path("out/table.csv")})
        return {"table": File.from_path("out/table.csv"), "summary": summary}

    def summarise(table: File) -> dict:
        return {"lines": table.read_text().count("\\n")}
"""

from typing import Any

from . import files

__all__ = ["Dir", "File"]


class _Ref:
    """What :class:`File` and :class:`Dir` share."""

    KEY = ""

    def __init__(self, target: str, name: "str | None" = None, size: "int | None" = None, count: "int | None" = None):
        self._target = target
        self._name = name
        self._size = size
        self._count = count

    @classmethod
    def from_path(cls, path: str, name: "str | None" = None):
        """A reference to ``path`` in the task's own directory, stored by the host
        when it leaves the task (in its output, or a child's input); staged
        under ``name`` if given, else the path's last part."""
        return cls(path, name)

    @classmethod
    def from_json(cls, value: Any):
        """The reference in ``value`` (a dict as the host writes it)."""
        if not isinstance(value, dict) or not isinstance(value.get(cls.KEY), str):
            raise ValueError(f"expected a reference, an object with a string under {cls.KEY!r}")
        return cls(value[cls.KEY], value.get("name"), value.get("size"), value.get("files"))

    # The SDK's validation converts a parameter annotated File or Dir through this.
    _cairn_from_json = from_json

    def to_json(self) -> dict:
        """The reference as JSON."""
        out: dict = {self.KEY: self._target}
        if self._name is not None:
            out["name"] = self._name
        if self._size is not None:
            out["size"] = self._size
        if self._count is not None:
            out["files"] = self._count
        return out

    @property
    def digest(self) -> "str | None":
        """Its content address, once stored."""
        return self._target if self._target.startswith("sha256:") else None

    @property
    def name(self) -> str:
        """The name it is staged under (for a stored one without a name, the first
        16 hex digits of its digest, as the host stages it)."""
        if self._name:
            return self._name
        if self._target.startswith("sha256:"):
            return self._target[len("sha256:"):][:16]
        return self._target.rsplit("/", 1)[-1]

    @property
    def size(self) -> "int | None":
        """Its bytes (of all its files, for a directory), once stored."""
        return self._size

    @property
    def path(self) -> str:
        """Where it is in the task's directory: under ``in/`` for one the task was
        given, its own path for one it wrote."""
        digest = self.digest
        if digest is None:
            return self._target
        return f"in/{digest[len('sha256:'):][:16]}/{self.name}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_json() == self.to_json()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_json()!r})"


class File(_Ref):
    """A file passed by reference: ``{"$file": "sha256:…", "name", "size"}``."""

    KEY = "$file"

    def read_bytes(self) -> bytes:
        """Its bytes."""
        return files.read_bytes(self.path)

    def read_text(self) -> str:
        """Its text (UTF-8)."""
        return files.read_text(self.path)

    def open(self, mode: str = "rb"):
        """The file, opened (read-only if it was given to the task)."""
        return open(self.path, mode)  # noqa: SIM115 - the caller closes it


class Dir(_Ref):
    """A directory passed by reference: ``{"$dir": "sha256:…", "name", "size", "files"}``."""

    KEY = "$dir"

    @property
    def file_count(self) -> "int | None":
        """How many files it holds, once stored."""
        return self._count

    def list(self, sub: str = ".") -> "list[str]":  # noqa: A003 - the SDKs' shared name
        """The names in it (or in ``sub``, a folder inside it), as :func:`files.list` gives them."""
        return files.list(self.path if sub in ("", ".") else f"{self.path}/{sub}")
