"""System prompts and the critique model of the report refiner.

The prompt texts are the Rust refiner's (guest-examples/report-refiner), word
for word, so both send the same requests. The host's mock LLM picks its answer
from words of the system prompt ("critic", "executive summary", "revis"), so
each prompt keeps its word and the generator uses none of them.
"""

from cairn_sdk import Field, Model, model_validator

GENERATOR_SYSTEM_PROMPT = (
    "You are a skilled writer of clear, well-researched reports. "
    "Given a topic, write a report in Markdown that opens by explaining why the topic matters, "
    "then covers it in several sections with descriptive headings, backs its points with "
    "concrete facts, examples or figures, and closes with the main takeaways. Keep the tone "
    "professional and easy to read, and aim for 500 to 800 words."
)

CRITIC_SYSTEM_PROMPT = (
    "You are a demanding but fair critic of written reports. "
    "Judge the draft you are given on clarity, organisation, depth, accuracy and how engaging "
    "it is. Be specific: every point you raise should say what to change and where. A score "
    "of 8 or more means the report is ready to publish."
)

REVISER_SYSTEM_PROMPT = (
    "You are an editor who revises report drafts using a "
    "reviewer's feedback. Work through every requested improvement, keep what already works, "
    "keep the author's voice and the overall structure unless the feedback asks otherwise, "
    "and make the result read as one coherent piece. Reply with the revised report in "
    "Markdown only, with no preface or commentary."
)

SUMMARY_SYSTEM_PROMPT = (
    "Write an executive summary of the report you are given: "
    "two or three short paragraphs with its key points and conclusions, for busy readers who "
    "need the essentials quickly. Keep a professional tone."
)


class Critique(Model):
    """Structured critique response from the LLM."""

    score: int = Field(
        ge=1,
        le=10,
        description="Quality score from 1-10, where 10 is publication-ready",
    )
    strengths: list[str] = Field(
        description="List of strengths in the current draft",
    )
    improvements: list[str] = Field(
        description="Specific improvements needed",
    )
    summary: str = Field(
        description="Brief summary of the critique",
    )

    @model_validator(mode="after")
    def summary_is_not_blank(self) -> "Critique":
        """Rejects a critique whose summary is empty or only whitespace."""
        if not self.summary.strip():
            raise ValueError('"summary" must not be empty')
        return self
