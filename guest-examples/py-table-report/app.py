"""py-table-report: writes a CSV table and has a child summarise it, passing
the table by reference (``File``), never through JSON.

Input ``{"topics": ["Tides", "Glaciers"]}``; for each topic a row of the words,
letters and vowels of its name. The table goes to ``js-table-summary`` (a
JavaScript task) as ``File.from_path("out/topics.csv")``: the host stores it
in its blob store and the child finds it read-only under ``in/``. The output
holds the table (a reference: ``cairn blobs get`` fetches its bytes) and the
child's summary.
"""

from cairn_sdk import File, InvalidInput, export_task, files, tasks


def report(topics: list[str]) -> dict:
    """The task: one row per topic, then the child's summary of the table."""
    if not topics:
        raise InvalidInput("`topics` must name at least one topic")
    rows = ["topic,words,letters,vowels"]
    for topic in topics:
        letters = [c for c in topic.lower() if c.isalpha()]
        vowels = sum(c in "aeiou" for c in letters)
        rows.append(f"{topic.replace(',', ' ')},{len(topic.split())},{len(letters)},{vowels}")
    files.write_text("out/topics.csv", "\n".join(rows) + "\n")
    table = File.from_path("out/topics.csv")
    summary = tasks.call_json("js-table-summary", {"table": table})
    return {"table": table, "summary": summary}


WitWorld = export_task(report)
