// TEMPORARY STUB (replaced by the real provider)
use super::*;
use std::time::Duration;
pub struct OpenAiConfig {
    pub name: String,
    pub base_url: String,
    pub model: String,
    pub timeout: Duration,
    pub api_key: Option<String>,
}
pub struct OpenAiProvider(OpenAiConfig);
impl OpenAiProvider {
    pub fn new(c: OpenAiConfig) -> Result<Self, LlmError> {
        Ok(OpenAiProvider(c))
    }
}
#[async_trait::async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.0.name
    }
    async fn complete(&self, _r: &ChatRequest) -> Result<ChatResponse, LlmError> {
        Err(LlmError::Timeout)
    }
}
