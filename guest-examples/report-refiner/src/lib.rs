//! `report-refiner`: writes a report on a topic, has it critiqued as JSON,
//! revises it until the critique's score reaches the target (or the rounds run
//! out), then writes an executive summary.
//!
//! Every step is `traced`, so a retried or resumed run replays the finished
//! steps from the journal and only does the rest.

use cairn_sdk::{Task, TaskError, report, traced};
use serde::{Deserialize, Serialize};
use serde_json::json;

// The host's mock LLM picks its answer from words of the system prompt
// ("critic", "executive summary", "revis"), so each prompt keeps its word and
// the generator uses none of them.

const WRITER_SYSTEM: &str = "You are a skilled writer of clear, well-researched reports. \
Given a topic, write a report in Markdown that opens by explaining why the topic matters, \
then covers it in several sections with descriptive headings, backs its points with \
concrete facts, examples or figures, and closes with the main takeaways. Keep the tone \
professional and easy to read, and aim for 500 to 800 words.";

const CRITIC_SYSTEM: &str = "You are a demanding but fair critic of written reports. \
Judge the draft you are given on clarity, organisation, depth, accuracy and how engaging \
it is. Be specific: every point you raise should say what to change and where. A score \
of 8 or more means the report is ready to publish.";

const REVISER_SYSTEM: &str = "You are an editor who revises report drafts using a \
reviewer's feedback. Work through every requested improvement, keep what already works, \
keep the author's voice and the overall structure unless the feedback asks otherwise, \
and make the result read as one coherent piece. Reply with the revised report in \
Markdown only, with no preface or commentary.";

const SUMMARY_SYSTEM: &str = "Write an executive summary of the report you are given: \
two or three short paragraphs with its key points and conclusions, for busy readers who \
need the essentials quickly. Keep a professional tone.";

/// How many times the critic may be asked before its answers count as invalid.
const CRITIQUE_ATTEMPTS: u32 = 3;

/// The task's input.
#[derive(Deserialize)]
pub struct Input {
    topic: String,
    #[serde(default = "default_max_rounds")]
    max_rounds: u32,
    #[serde(default = "default_target_score")]
    target_score: u32,
}

fn default_max_rounds() -> u32 {
    3
}

fn default_target_score() -> u32 {
    8
}

/// One critique of a draft, as the critic returns it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Critique {
    score: i64,
    strengths: Vec<String>,
    improvements: Vec<String>,
    summary: String,
}

/// The task's output.
#[derive(Serialize)]
pub struct Output {
    topic: String,
    report: String,
    summary: String,
    rounds: u32,
    final_score: i64,
    critiques: Vec<Critique>,
}

/// The refinement loop.
pub struct ReportRefiner;

impl Task for ReportRefiner {
    type Input = Input;
    type Output = Output;

    fn run(input: Input) -> Result<Output, TaskError> {
        let topic = input.topic.trim().to_string();
        if topic.is_empty() {
            return Err(TaskError::invalid_input("`topic` must not be empty"));
        }
        if input.max_rounds == 0 {
            return Err(TaskError::invalid_input("`max_rounds` must be at least 1"));
        }
        if !(1..=10).contains(&input.target_score) {
            return Err(TaskError::invalid_input("`target_score` must be between 1 and 10"));
        }
        let target = i64::from(input.target_score);

        println!("drafting a report on {topic:?}");
        let mut report = traced("draft", &json!({ "topic": topic }), || write_draft(&topic))?;
        println!("draft ready ({} characters)", report.len());

        let mut critiques: Vec<Critique> = Vec::new();
        let mut rounds = 0;
        for round in 1..=input.max_rounds {
            rounds = round;
            println!("round {round}: asking the critic");
            let critique = traced("critique", &json!({ "topic": topic, "draft": report }), || critique(&report))?;
            println!("round {round}: score {}/10 (target {target})", critique.score);
            report_round(round, &report, &critique);
            critiques.push(critique.clone());
            if critique.score >= target {
                println!("round {round}: target reached");
                break;
            }
            println!("round {round}: revising ({} improvements)", critique.improvements.len());
            report = traced(
                "revise",
                &json!({ "draft": report, "improvements": critique.improvements, "strengths": critique.strengths }),
                || revise(&report, &critique),
            )?;
        }

        println!("writing the executive summary");
        let summary = traced("summary", &json!({ "report": report }), || summarise(&report))?;
        let final_score = critiques.last().map_or(0, |c| c.score);
        report::replace(
            "Summary",
            &format!(
                "<h2>{}</h2><p>Final score {final_score}/10 after {rounds} round(s).</p>{}",
                report::escape(&topic),
                paragraphs(&summary)
            ),
        );
        report::flush();
        println!("done: {rounds} round(s), final score {final_score}");

        Ok(Output { topic, report, summary, rounds, final_score, critiques })
    }
}

cairn_sdk::export_task!(ReportRefiner);

fn write_draft(topic: &str) -> Result<String, TaskError> {
    let prompt = format!("Topic: {topic}\n\nWrite the report.");
    Ok(cairn_sdk::call_llm(&prompt, WRITER_SYSTEM, false)?)
}

fn critique(draft: &str) -> Result<Critique, TaskError> {
    // The JSON shape goes in the user prompt, so that the system prompt's only
    // routing word is "critic".
    let prompt = format!(
        "Review this draft report.\n\n---\n{draft}\n---\n\n\
         Answer with one JSON object and nothing else, with exactly these fields:\n\
         \"score\": an integer from 1 (poor) to 10 (excellent);\n\
         \"strengths\": a list of strings, what the draft does well;\n\
         \"improvements\": a list of strings, specific changes that would make it better;\n\
         \"summary\": one or two sentences with your overall verdict."
    );
    cairn_sdk::call_llm_json(&prompt, CRITIC_SYSTEM, validate_critique, CRITIQUE_ATTEMPTS)
}

fn validate_critique(c: &Critique) -> Result<(), String> {
    if !(1..=10).contains(&c.score) {
        return Err(format!("\"score\" must be an integer from 1 to 10, not {}", c.score));
    }
    if c.summary.trim().is_empty() {
        return Err("\"summary\" must not be empty".to_string());
    }
    Ok(())
}

fn revise(draft: &str, critique: &Critique) -> Result<String, TaskError> {
    let prompt = format!(
        "Current draft:\n\n---\n{draft}\n---\n\n\
         Improvements the reviewer asks for:\n{}\n\n\
         Strengths to keep:\n{}\n\n\
         Write the improved report.",
        bullets(&critique.improvements),
        bullets(&critique.strengths),
    );
    Ok(cairn_sdk::call_llm(&prompt, REVISER_SYSTEM, false)?)
}

fn summarise(report: &str) -> Result<String, TaskError> {
    let prompt = format!("Report:\n\n---\n{report}\n---");
    Ok(cairn_sdk::call_llm(&prompt, SUMMARY_SYSTEM, false)?)
}

fn bullets(items: &[String]) -> String {
    if items.is_empty() {
        return "- (none given)".to_string();
    }
    items.iter().map(|i| format!("- {i}")).collect::<Vec<_>>().join("\n")
}

/// Adds a tab for `round` to the run's report: the critique, then the draft it judged.
fn report_round(round: u32, draft: &str, c: &Critique) {
    let list = |items: &[String]| items.iter().map(|i| format!("<li>{}</li>", report::escape(i))).collect::<String>();
    let html = format!(
        "<h2>Round {round}: score {}/10</h2><p>{}</p>\
         <h3>Strengths</h3><ul>{}</ul><h3>Improvements</h3><ul>{}</ul>\
         <h3>Draft</h3><pre>{}</pre>",
        c.score,
        report::escape(&c.summary),
        list(&c.strengths),
        list(&c.improvements),
        report::escape(draft),
    );
    report::replace(&format!("Round {round}"), &html);
    report::flush();
}

fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", report::escape(p.trim())))
        .collect()
}
