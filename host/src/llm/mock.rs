//! The embedded, deterministic provider: no network, no key.
//!
//! A [`MockProvider`] answers from an ordered list of [`MockRule`]s: the first
//! rule whose every given condition holds wins. Conditions are case-insensitive
//! substrings of the joined system messages (`system_contains`) and of the
//! joined user messages (`prompt_contains`), plus the request's JSON mode
//! (`json`). The same request always gets the same answer and the same usage.
//!
//! [`MockConfig::default`] carries built-in rules that make the report refiner
//! (draft → critique → revise → critique → executive summary) converge: a
//! critique of a draft that carries the `[REVISED]` marker passes, any other
//! critique asks for work.
//!
//! A rules file (see [`MockConfig::from_file`]) looks like this:
//!
//! ```toml
//! latency = "250ms"        # or an integer number of milliseconds; default 0
//! model = "mock-1"         # default "mock-1"
//! builtin_rules = true     # append the built-in rules after these; default true
//!
//! [[rules]]
//! system_contains = "translator"
//! prompt_contains = "bonjour"
//! json = false
//! reply = "hello"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ChatRequest, ChatResponse, LlmError, LlmProvider, Role, Usage};

/// The default model name the mock reports.
pub const DEFAULT_MODEL: &str = "mock-1";

/// One scripted answer. Every condition that is given must hold; a rule with
/// no condition matches every request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRule {
    /// Case-insensitive substring of the joined system messages.
    #[serde(default)]
    pub system_contains: Option<String>,
    /// Case-insensitive substring of the joined user messages.
    #[serde(default)]
    pub prompt_contains: Option<String>,
    /// Whether the request must (`true`) or must not (`false`) ask for JSON.
    #[serde(default)]
    pub json: Option<bool>,
    /// The answer's text, returned verbatim.
    pub reply: String,
}

impl MockRule {
    /// A rule with no condition: it matches everything.
    pub fn always(reply: impl Into<String>) -> Self {
        MockRule { system_contains: None, prompt_contains: None, json: None, reply: reply.into() }
    }

    /// Adds a condition on the system messages.
    pub fn when_system(mut self, needle: impl Into<String>) -> Self {
        self.system_contains = Some(needle.into());
        self
    }

    /// Adds a condition on the user messages.
    pub fn when_prompt(mut self, needle: impl Into<String>) -> Self {
        self.prompt_contains = Some(needle.into());
        self
    }

    /// Adds a condition on the request's JSON mode.
    pub fn when_json(mut self, json: bool) -> Self {
        self.json = Some(json);
        self
    }

    /// Whether this rule answers a request whose joined, lowercased system and
    /// user texts are given.
    fn matches(&self, system_lower: &str, prompt_lower: &str, json: bool) -> bool {
        let contains = |hay: &str, needle: &Option<String>| match needle {
            Some(n) => hay.contains(&n.to_lowercase()),
            None => true,
        };
        contains(system_lower, &self.system_contains)
            && contains(prompt_lower, &self.prompt_contains)
            && self.json.is_none_or(|j| j == json)
    }
}

/// How a [`MockProvider`] behaves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "MockFile")]
pub struct MockConfig {
    /// Simulated latency of every call; zero means none.
    pub latency: Duration,
    /// The model reported when the request names none.
    pub model: String,
    /// Rules, tried in order.
    pub rules: Vec<MockRule>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig { latency: Duration::ZERO, model: DEFAULT_MODEL.to_owned(), rules: MockConfig::builtin_rules() }
    }
}

impl MockConfig {
    /// The built-in rules of [`MockConfig::default`], in order: passing
    /// critique of a revised draft, critique asking for work, executive
    /// summary, revised report, report draft (the last one only when JSON is
    /// not requested).
    pub fn builtin_rules() -> Vec<MockRule> {
        vec![
            MockRule::always(CRITIQUE_PASS).when_system("critic").when_prompt(REVISED_MARKER),
            MockRule::always(CRITIQUE_NEEDS_WORK).when_system("critic"),
            MockRule::always(EXECUTIVE_SUMMARY).when_system("executive summary"),
            MockRule::always(revised_report()).when_system("revis"),
            MockRule::always(REPORT_DRAFT).when_json(false),
        ]
    }

    /// A configuration with the given rules tried before the built-in ones.
    pub fn with_rules(rules: Vec<MockRule>) -> Self {
        let mut config = MockConfig { rules, ..MockConfig::default() };
        config.rules.extend(MockConfig::builtin_rules());
        config
    }

    /// Reads a TOML rules file (format in the module docs).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, MockConfigError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| MockConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses the text of a rules file; `path` only names it in errors.
    pub fn from_toml_str(text: &str, path: impl AsRef<Path>) -> Result<Self, MockConfigError> {
        toml::from_str::<MockConfig>(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            MockConfigError::Parse {
                path: path.as_ref().to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })
    }
}

/// Why a mock rules file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MockConfigError {
    /// The file could not be read.
    #[error("cannot read mock LLM rules {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid rules file.
    #[error("invalid mock LLM rules {}{}: {message}", path.display(), position(*line, *column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column of the error, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The on-disk shape of a rules file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MockFile {
    #[serde(default)]
    latency: Option<Latency>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    rules: Vec<MockRule>,
    #[serde(default)]
    builtin_rules: Option<bool>,
}

impl From<MockFile> for MockConfig {
    fn from(file: MockFile) -> Self {
        let mut rules = file.rules;
        if file.builtin_rules.unwrap_or(true) {
            rules.extend(MockConfig::builtin_rules());
        }
        MockConfig {
            latency: file.latency.map_or(Duration::ZERO, |l| l.0),
            model: file.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            rules,
        }
    }
}

/// A latency: an integer number of milliseconds or a string such as
/// `"250ms"`, `"1.5s"` or `"1m"`.
struct Latency(Duration);

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Latency;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("milliseconds as an integer, or a duration such as \"250ms\" or \"2s\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Latency, E> {
                u64::try_from(v)
                    .map(|ms| Latency(Duration::from_millis(ms)))
                    .map_err(|_| E::custom("latency must not be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Latency, E> {
                Ok(Latency(Duration::from_millis(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Latency, E> {
                parse_duration(v).map(Latency).ok_or_else(|| {
                    E::custom(format!("invalid latency {v:?}: expected e.g. \"250ms\", \"1.5s\" or \"1m\""))
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"250ms"`, `"1.5s"`, `"2m"` (also `us`, `h`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds_per_unit = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).ok()
}

/// The embedded, deterministic provider.
#[derive(Debug, Clone)]
pub struct MockProvider {
    name: String,
    config: MockConfig,
}

impl MockProvider {
    /// A provider named `mock` with the given behaviour.
    pub fn new(config: MockConfig) -> Self {
        MockProvider { name: "mock".to_owned(), config }
    }

    /// The same provider under the manifest's name for it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Its behaviour.
    pub fn config(&self) -> &MockConfig {
        &self.config
    }

    /// The answer the provider gives, without latency.
    pub fn answer(&self, request: &ChatRequest) -> ChatResponse {
        let system = request.text_of(Role::System).to_lowercase();
        let prompt_text = request.text_of(Role::User);
        let prompt = prompt_text.to_lowercase();
        let content = match self.config.rules.iter().find(|r| r.matches(&system, &prompt, request.json)) {
            Some(rule) => rule.reply.clone(),
            None => fallback_reply(&prompt_text, request.json),
        };
        let prompt_words: usize = request.messages.iter().map(|m| m.content.split_whitespace().count()).sum();
        let usage = Usage {
            prompt_tokens: estimate_tokens(prompt_words),
            completion_tokens: estimate_tokens(content.split_whitespace().count()),
        };
        ChatResponse {
            content,
            model: request.model.clone().unwrap_or_else(|| self.config.model.clone()),
            usage,
            provider: None,
        }
    }
}

impl Default for MockProvider {
    fn default() -> Self {
        MockProvider::new(MockConfig::default())
    }
}

#[async_trait::async_trait]
impl LlmProvider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        Ok(self.answer(request))
    }
}

/// ceil(words × 4 / 3), saturating.
fn estimate_tokens(words: usize) -> u32 {
    let tokens = words.saturating_mul(4).div_ceil(3);
    u32::try_from(tokens).unwrap_or(u32::MAX)
}

/// The answer when no rule matches.
fn fallback_reply(prompt: &str, json: bool) -> String {
    let snippet: String = prompt.chars().take(200).collect();
    if json {
        serde_json::json!({ "mock": true, "answer": format!("mock reply to: {snippet}") }).to_string()
    } else {
        format!("mock reply to: {snippet}")
    }
}

/// The marker a revised report carries; a critique of such a report passes.
pub const REVISED_MARKER: &str = "[REVISED]";

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

const RECOMMENDATIONS: &str = "\
## Recommendations

1. Start with one well-scoped initiative and define its success metric before work begins.
2. Publish results, including failures, so that others can learn from them.
3. Review incentives every year so that costs and benefits stay with the same people.

";

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

const CRITIQUE_NEEDS_WORK: &str = r#"{"score": 6, "strengths": ["Clear structure with descriptive headings", "Professional, accessible tone"], "improvements": ["Support the claims in 'Current State' with concrete examples or figures", "Give at least one specific case in 'Challenges and Opportunities'", "Add actionable recommendations before the conclusion"], "summary": "A readable, well-organised draft that needs more evidence and concrete recommendations before it is ready."}"#;

const CRITIQUE_PASS: &str = r#"{"score": 9, "strengths": ["Claims are now backed by evidence", "Concrete, actionable recommendations", "Logical flow from context to conclusion"], "improvements": ["Optionally add a short glossary for newcomers"], "summary": "The revision addresses the earlier feedback; the report is ready for publication."}"#;

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
    use crate::llm::ChatMessage;

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

    #[test]
    fn unmatched_json_request_gets_a_json_object() {
        let p = MockProvider::default();
        let reply = ask(&p, "List three colours", "You are helpful.", true);
        let value: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert!(value.is_object());
    }

    #[test]
    fn custom_rules_come_first_and_all_conditions_must_hold() {
        let config = MockConfig::with_rules(vec![
            MockRule::always("BONJOUR-JSON").when_system("translator").when_prompt("Hello").when_json(true),
            MockRule::always("bonjour").when_system("translator").when_prompt("hello"),
        ]);
        let p = MockProvider::new(config).with_name("m");
        assert_eq!(ask(&p, "say HELLO", "You are a Translator", true), "BONJOUR-JSON");
        assert_eq!(ask(&p, "say hello", "You are a translator", false), "bonjour");
        // Only one condition holds: falls through to the built-in draft.
        assert!(ask(&p, "say goodbye", "You are a translator", false).contains("## Introduction"));
    }

    #[test]
    fn no_rule_plain_text_fallback_is_deterministic() {
        let p = MockProvider::new(MockConfig { rules: vec![], ..MockConfig::default() });
        assert_eq!(ask(&p, "ping", "sys", false), "mock reply to: ping");
    }

    #[test]
    fn answers_and_usage_are_deterministic() {
        let p = MockProvider::default();
        let request = ChatRequest {
            model: None,
            messages: vec![
                ChatMessage { role: Role::System, content: "one two three".into() },
                ChatMessage { role: Role::User, content: "four five six".into() },
            ],
            json: false,
            max_tokens: None,
            temperature: None,
        };
        let a = p.answer(&request);
        let b = p.answer(&request);
        assert_eq!(a, b);
        assert_eq!(a.usage.prompt_tokens, 8); // ceil(6 * 4 / 3)
        assert_eq!(a.usage.completion_tokens, estimate_tokens(a.content.split_whitespace().count()));
        assert_eq!(a.model, "mock-1");
        let named = p.answer(&ChatRequest { model: Some("other".into()), ..request });
        assert_eq!(named.model, "other");
        assert_eq!(estimate_tokens(1), 2);
        assert_eq!(estimate_tokens(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_simulated() {
        let config = MockConfig { latency: Duration::from_millis(500), ..MockConfig::default() };
        let p = MockProvider::new(config).with_name("m");
        let start = tokio::time::Instant::now();
        let response = p.complete(&ChatRequest::simple("x", "y", false)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert_eq!(p.name(), "m");
        assert!(response.content.contains("## Introduction"));
    }

    #[test]
    fn rules_file_parses() {
        let text = r#"
latency = "1.5s"
model = "scripted"

[[rules]]
prompt_contains = "ping"
reply = "pong"

[[rules]]
system_contains = "judge"
json = true
reply = '{"ok": true}'
"#;
        let config = MockConfig::from_toml_str(text, "rules.toml").unwrap();
        assert_eq!(config.latency, Duration::from_millis(1500));
        assert_eq!(config.model, "scripted");
        assert_eq!(config.rules.len(), 2 + MockConfig::builtin_rules().len());
        assert_eq!(config.rules[0], MockRule::always("pong").when_prompt("ping"));

        let only = MockConfig::from_toml_str("latency = 20\nbuiltin_rules = false\n", "r.toml").unwrap();
        assert_eq!(only.latency, Duration::from_millis(20));
        assert!(only.rules.is_empty());
        assert_eq!(only.model, DEFAULT_MODEL);
    }

    #[test]
    fn rules_file_errors_name_file_line_and_column() {
        let text = "model = \"m\"\n\n[[rules]]\nprompt = \"typo\"\nreply = \"x\"\n";
        let err = MockConfig::from_toml_str(text, "dir/rules.toml").unwrap_err();
        match &err {
            MockConfigError::Parse { line, column, message, .. } => {
                assert_eq!(*line, Some(4));
                assert_eq!(*column, Some(1));
                assert!(message.contains("prompt"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.contains("dir/rules.toml") && shown.contains("line 4"), "{shown}");

        let err = MockConfig::from_toml_str("\nlatency = \"fast\"\n", "r.toml").unwrap_err();
        assert!(matches!(err, MockConfigError::Parse { line: Some(2), column: Some(11), .. }), "{err}");

        let err = MockConfig::from_file("/nonexistent/cairn/rules.toml").unwrap_err();
        assert!(matches!(err, MockConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/cairn/rules.toml"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5 parsecs"), None);
    }
}
