"""py-report-refiner: the seed's refinement loop in Python.

Writes a report on a topic, has it critiqued as JSON, revises it until the
critique's score reaches the target (or the rounds run out), then writes an
executive summary. Same prompts, validation, input and output as the Rust
refiner. Every step is ``@trace``d, so a retried or resumed run replays the
finished steps from the journal and only does the rest.
"""

from cairn_sdk import InvalidInput, call_llm, call_llm_json, export_task, report, trace
from prompts import (
    CRITIC_SYSTEM_PROMPT,
    GENERATOR_SYSTEM_PROMPT,
    REVISER_SYSTEM_PROMPT,
    SUMMARY_SYSTEM_PROMPT,
    Critique,
)

CRITIQUE_ATTEMPTS = 3
"""How many times the critic may be asked before its answers count as invalid."""


@trace
def generate_initial_draft(topic: str) -> str:
    """Generate the initial report draft."""
    print(f"Generating initial draft for topic: {topic}")
    prompt = f"Topic: {topic}\n\nWrite the report."
    draft = call_llm(prompt, GENERATOR_SYSTEM_PROMPT)
    print(f"Generated initial draft ({len(draft)} characters)")
    return draft


@trace
def critique_report(topic: str, draft: str) -> Critique:
    """Have the critic score the draft; its JSON answer is validated as a Critique."""
    # The JSON shape goes in the user prompt, so that the system prompt's only
    # routing word is "critic".
    prompt = (
        f"Review this draft report.\n\n---\n{draft}\n---\n\n"
        "Answer with one JSON object and nothing else, with exactly these fields:\n"
        '"score": an integer from 1 (poor) to 10 (excellent);\n'
        '"strengths": a list of strings, what the draft does well;\n'
        '"improvements": a list of strings, specific changes that would make it better;\n'
        '"summary": one or two sentences with your overall verdict.'
    )
    return call_llm_json(prompt, CRITIC_SYSTEM_PROMPT, Critique, attempts=CRITIQUE_ATTEMPTS)


@trace
def revise_report(draft: str, critique: Critique) -> str:
    """Revise the draft along the critique's improvements, keeping its strengths."""
    prompt = (
        f"Current draft:\n\n---\n{draft}\n---\n\n"
        f"Improvements the reviewer asks for:\n{bullets(critique.improvements)}\n\n"
        f"Strengths to keep:\n{bullets(critique.strengths)}\n\n"
        "Write the improved report."
    )
    return call_llm(prompt, REVISER_SYSTEM_PROMPT)


@trace
def generate_summary(report_text: str) -> str:
    """Write the executive summary of the final report."""
    return call_llm(f"Report:\n\n---\n{report_text}\n---", SUMMARY_SYSTEM_PROMPT)


def refine_report(topic: str, max_rounds: int = 3, target_score: int = 8) -> dict:
    """Draft, critique and revise until the score reaches ``target_score`` or
    ``max_rounds`` critiques were made, then summarise."""
    topic = topic.strip()
    if not topic:
        raise InvalidInput("`topic` must not be empty")
    if max_rounds < 1:
        raise InvalidInput("`max_rounds` must be at least 1")
    if not 1 <= target_score <= 10:
        raise InvalidInput("`target_score` must be between 1 and 10")

    draft = generate_initial_draft(topic)
    critiques: list[Critique] = []
    rounds = 0
    for round_number in range(1, max_rounds + 1):
        rounds = round_number
        print(f"Round {round_number}: asking the critic")
        critique = critique_report(topic, draft)
        print(f"Round {round_number}: score {critique.score}/10 (target {target_score})")
        report_round(round_number, draft, critique)
        critiques.append(critique)
        if critique.score >= target_score:
            print(f"Round {round_number}: target reached")
            break
        print(f"Round {round_number}: revising ({len(critique.improvements)} improvements)")
        draft = revise_report(draft, critique)

    print("Writing the executive summary")
    summary = generate_summary(draft)
    final_score = critiques[-1].score if critiques else 0
    report.replace(
        "Summary",
        f"<h2>{report.escape(topic)}</h2><p>Final score {final_score}/10 after {rounds} round(s).</p>"
        + paragraphs(summary),
    )
    report.flush()
    print(f"Done: {rounds} round(s), final score {final_score}")
    return {
        "topic": topic,
        "report": draft,
        "summary": summary,
        "rounds": rounds,
        "final_score": final_score,
        "critiques": critiques,
    }


def bullets(items: list[str]) -> str:
    """Markdown bullets of ``items``, or a placeholder when there are none."""
    if not items:
        return "- (none given)"
    return "\n".join(f"- {item}" for item in items)


def report_round(round_number: int, draft: str, critique: Critique) -> None:
    """Adds a tab for the round to the run's report: the critique, then the draft it judged."""

    def items(values: list[str]) -> str:
        return "".join(f"<li>{report.escape(v)}</li>" for v in values)

    report.replace(
        f"Round {round_number}",
        f"<h2>Round {round_number}: score {critique.score}/10</h2><p>{report.escape(critique.summary)}</p>"
        f"<h3>Strengths</h3><ul>{items(critique.strengths)}</ul>"
        f"<h3>Improvements</h3><ul>{items(critique.improvements)}</ul>"
        f"<h3>Draft</h3><pre>{report.escape(draft)}</pre>",
    )
    report.flush()


def paragraphs(text: str) -> str:
    """``text``'s blank-line-separated paragraphs as HTML ``<p>`` elements."""
    return "".join(f"<p>{report.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


WitWorld = export_task(refine_report)
