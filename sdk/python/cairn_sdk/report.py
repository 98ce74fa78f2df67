"""The run's HTML report, organised in named tabs (``cairn report RUN``)."""

from wit_world.imports import report as wit_report

__all__ = ["append", "escape", "flush", "log", "replace"]


def log(html_text: str) -> None:
    """Appends ``html_text`` to the default tab, ``main``."""
    wit_report.log(html_text)


def replace(tab: str, html_text: str) -> None:
    """Replaces the whole content of tab ``tab`` with ``html_text``."""
    wit_report.replace(tab, html_text)


def append(tab: str, html_text: str) -> None:
    """Appends ``html_text`` to tab ``tab``, creating the tab if needed."""
    wit_report.append(tab, html_text)


def flush() -> None:
    """Stores the report as it stands, so it can be read while the run goes on."""
    wit_report.flush()


def escape(text: str) -> str:
    """``text`` escaped for use inside HTML (``&``, ``<``, ``>``, ``"``, ``'``)."""
    return text.translate(_HTML_ESCAPES)


_HTML_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})
