// TEMPORARY STUB (replaced by the real mock provider)
use super::*;
use serde::Deserialize;
use std::time::Duration;
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MockRule {
    pub system_contains: Option<String>,
    pub prompt_contains: Option<String>,
    pub json: Option<bool>,
    pub reply: String,
}
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    pub latency: Duration,
    pub model: String,
    pub rules: Vec<MockRule>,
}
impl Default for MockConfig {
    fn default() -> Self {
        MockConfig { latency: Duration::ZERO, model: "mock-1".into(), rules: vec![] }
    }
}
impl MockConfig {
    pub fn from_file(_p: &std::path::Path) -> Result<Self, String> {
        Ok(Self::default())
    }
}
pub struct MockProvider(MockConfig);
impl MockProvider {
    pub fn new(c: MockConfig) -> Self {
        MockProvider(c)
    }
}
#[async_trait::async_trait]
impl LlmProvider for MockProvider {
    fn name(&self) -> &str {
        "mock"
    }
    async fn complete(&self, r: &ChatRequest) -> Result<ChatResponse, LlmError> {
        Ok(ChatResponse {
            content: if r.json { "{}".into() } else { "x".into() },
            model: self.0.model.clone(),
            usage: Usage::default(),
        })
    }
}
