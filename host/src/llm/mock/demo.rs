//! The demo: built-in rules and texts that make the report refiner (draft →
//! critique → revise → critique → executive summary) converge on the mock,
//! and the answer when no rule matches.

use super::MockRule;

/// The built-in rules, in order: passing critique of a revised draft,
/// critique asking for work, executive summary, revised report, report draft
/// (the last one only when JSON is not requested).
pub(super) fn rules() -> Vec<MockRule> {
    vec![
        MockRule::always(CRITIQUE_PASS).when_system("critic").when_prompt(REVISED_MARKER),
        MockRule::always(CRITIQUE_NEEDS_WORK).when_system("critic"),
        MockRule::always(EXECUTIVE_SUMMARY).when_system("executive summary"),
        MockRule::always(revised_report()).when_system("revis"),
        MockRule::always(REPORT_DRAFT).when_json(false),
    ]
}

/// The answer when no rule matches.
pub(super) fn fallback_reply(prompt: &str, json: bool) -> String {
    let snippet: String = prompt.chars().take(200).collect();
    if json {
        serde_json::json!({
            "mock": true,
            "answer": format!("mock reply to: {snippet}"),
            "hint": FALLBACK_HINT,
        })
        .to_string()
    } else {
        format!("mock reply to: {snippet}")
    }
}

/// What the default JSON answer says to an author whose task expected
/// another shape (a validation error quotes it).
pub const FALLBACK_HINT: &str = "the embedded mock's default JSON answer: no rule matched this request; for the answer your task expects, add a [[llm.providers.mock.rules]] entry (prompt_contains, json = true, reply) to cairn.toml";

/// The marker a revised report carries; a critique of such a report passes.
pub const REVISED_MARKER: &str = "[REVISED]";

/// The report draft: the answer to a plain-text request no other rule takes.
const REPORT_DRAFT: &str = "\
# Report

## Introduction

This report gives a structured overview of the requested topic. It explains why the \
subject matters now, describes the forces that shape it, and points to the questions \
that deserve attention over the next few years. The aim is a balanced picture that a \
newcomer can follow and a specialist can still find useful.

## Background

Every field carries a history that explains its present shape. Early efforts tended to \
be small and experimental; as results accumulated, practices were standardised, tools \
matured and a community formed around shared methods. That path left strengths, such as \
proven techniques and a body of evidence, and weaknesses, such as habits that outlived \
the conditions that once justified them.

## Current State

Today the topic sits where technology, economics and policy meet. Adoption is uneven: \
some organisations have invested heavily and report measurable gains, while others \
remain cautious because of cost, scarce skills or unclear rules. Three trends stand out:

- **Scale**: more data and cheaper computing make ambitious projects feasible.
- **Integration**: isolated pilots are giving way to complete, connected systems.
- **Accountability**: stakeholders expect transparency and outcomes they can measure.

## Challenges and Opportunities

The main obstacles are practical rather than conceptual. Reliable measurement is hard, \
incentives are not always aligned, and those who carry the costs are not always those \
who reap the benefits. These gaps are also where the largest opportunities lie: better \
metrics, shared infrastructure and clear governance can unlock value that no single \
actor reaches alone.

## Conclusion

The topic is moving from promise to practice. Progress will depend less on sudden \
breakthroughs than on steady execution: building skills, measuring results honestly and \
learning from early adopters. Readers who follow these principles will be well placed \
to benefit from the changes ahead.
";

/// What the revision adds before the conclusion.
const RECOMMENDATIONS: &str = "\
## Recommendations

1. Start with one well-scoped initiative and define its success metric before work begins.
2. Publish results, including failures, so that others can learn from them.
3. Review incentives every year so that costs and benefits stay with the same people.

";

/// The draft with the marker, evidence and recommendations the critique asks for.
fn revised_report() -> String {
    REPORT_DRAFT
        .replace("## Introduction", &format!("{REVISED_MARKER}\n\n## Introduction"))
        .replace(
            "Three trends stand out:",
            "Surveys of practitioners repeatedly rank cost and skills as the two largest \
             barriers, ahead of technical limits. Three trends stand out:",
        )
        .replace("## Conclusion", &format!("{RECOMMENDATIONS}## Conclusion"))
}

/// The critique of a draft without the marker: it asks for work.
const CRITIQUE_NEEDS_WORK: &str = r#"{"score": 6, "strengths": ["Clear structure with descriptive headings", "Professional, accessible tone"], "improvements": ["Support the claims in 'Current State' with concrete examples or figures", "Give at least one specific case in 'Challenges and Opportunities'", "Add actionable recommendations before the conclusion"], "summary": "A readable, well-organised draft that needs more evidence and concrete recommendations before it is ready."}"#;

/// The critique of a revised draft: it passes.
const CRITIQUE_PASS: &str = r#"{"score": 9, "strengths": ["Claims are now backed by evidence", "Concrete, actionable recommendations", "Logical flow from context to conclusion"], "improvements": ["Optionally add a short glossary for newcomers"], "summary": "The revision addresses the earlier feedback; the report is ready for publication."}"#;

/// The executive summary: two paragraphs, no heading.
const EXECUTIVE_SUMMARY: &str = "\
The report finds that the topic is moving from early experimentation to everyday \
practice. Adoption is uneven: organisations that invested early report measurable \
gains, while others hold back because of cost, scarce skills and unclear rules. Scale, \
integration and accountability are the trends shaping the next few years.

The main risks are practical: weak measurement, misaligned incentives and costs that \
fall on those who do not benefit. The recommended course is to start with one \
well-scoped initiative, define its success metric up front, share results openly and \
review incentives regularly. Organisations that execute steadily on these points will \
be best placed to capture the value ahead.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatRequest;
    use crate::llm::mock::MockProvider;

    const GENERATOR: &str = "You are an expert report writer. Generate a well-structured report.";
    const CRITIC: &str = "You are a demanding but fair critic of reports. Answer as JSON: \
                          {\"score\": .., \"summary\": \"brief overall assessment\"}";
    const REVISER: &str = "You are an expert editor revising a report based on feedback.";
    const SUMMARY: &str = "Create a concise executive summary (2-3 paragraphs) of the following report.";

    fn ask(provider: &MockProvider, prompt: &str, system: &str, json: bool) -> String {
        provider.answer(&ChatRequest::simple(prompt, system, json)).content
    }

    #[test]
    fn builtin_rules_route_the_report_refiner() {
        let p = MockProvider::default();
        let draft = ask(&p, "Write a report on tidal energy", GENERATOR, false);
        assert!(draft.contains("## Introduction") && draft.contains("## Conclusion"));
        assert!(!draft.contains(REVISED_MARKER));
        let words = draft.split_whitespace().count();
        assert!((250..=450).contains(&words), "draft has {words} words");

        let critique: serde_json::Value =
            serde_json::from_str(&ask(&p, &format!("Critique this:\n{draft}"), CRITIC, true)).unwrap();
        assert_eq!(critique["score"], 6);
        assert!(!critique["improvements"].as_array().unwrap().is_empty());
        assert!(critique["strengths"].is_array() && critique["summary"].is_string());

        let revised = ask(&p, &format!("Report:\n{draft}\nFeedback:\n{critique}"), REVISER, false);
        assert!(revised.contains(REVISED_MARKER));
        assert!(revised.contains("## Recommendations"));

        let critique: serde_json::Value =
            serde_json::from_str(&ask(&p, &format!("Critique this:\n{revised}"), CRITIC, true)).unwrap();
        assert_eq!(critique["score"], 9);
        assert!(critique["strengths"].is_array() && critique["summary"].is_string());

        let summary = ask(&p, &revised, SUMMARY, false);
        assert_eq!(summary.split("\n\n").count(), 2);
        assert!(!summary.contains('#'));
    }

    #[test]
    fn critic_is_matched_case_insensitively_and_before_summary() {
        let p = MockProvider::default();
        // The critic prompt mentions "summary" too; the critic rule comes first.
        let reply = ask(&p, "draft [revised]", "CRITIC. Include a summary.", true);
        assert!(reply.contains("\"score\": 9"));
    }
}
