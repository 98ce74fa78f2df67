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
//! critique asks for work. They and their texts live in `demo.rs`.
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
//!
//! `latency` takes any duration of [`crate::config::units::parse_duration`].

mod demo;
mod script;

use std::time::Duration;

use serde::Deserialize;

use super::{ChatRequest, ChatResponse, LlmError, LlmProvider, Role, Usage};
pub use demo::REVISED_MARKER;
pub use script::MockConfigError;

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
#[serde(from = "script::MockFile")]
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
        demo::rules()
    }

    /// A configuration with the given rules tried before the built-in ones.
    pub fn with_rules(rules: Vec<MockRule>) -> Self {
        let mut config = MockConfig { rules, ..MockConfig::default() };
        config.rules.extend(MockConfig::builtin_rules());
        config
    }
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
        let mut content = match self.config.rules.iter().find(|r| r.matches(&system, &prompt, request.json)) {
            Some(rule) => rule.reply.clone(),
            None => demo::fallback_reply(&prompt_text, request.json),
        };
        // Like a real model, it stops at `max_tokens`.
        if let Some(max) = request.max_tokens {
            let words = (max as usize).saturating_mul(3) / 4;
            if content.split_whitespace().count() > words {
                content = content.split_whitespace().take(words).collect::<Vec<_>>().join(" ");
            }
        }
        let prompt_words: usize = request.messages.iter().map(|m| m.content.split_whitespace().count()).sum();
        let usage = Usage {
            prompt_tokens: estimate_tokens(prompt_words),
            completion_tokens: estimate_tokens(content.split_whitespace().count()),
            cost_micros: 0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::ChatMessage;

    fn ask(provider: &MockProvider, prompt: &str, system: &str, json: bool) -> String {
        provider.answer(&ChatRequest::simple(prompt, system, json)).content
    }

    #[test]
    fn unmatched_json_request_gets_a_json_object() {
        let p = MockProvider::default();
        let reply = ask(&p, "List three colours", "You are helpful.", true);
        let value: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(value["mock"], true);
        assert_eq!(value["answer"], "mock reply to: List three colours");
        assert!(value["hint"].as_str().unwrap().contains("[[llm.providers.mock.rules]]"), "{value}");
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
}
