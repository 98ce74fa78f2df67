// TEMPORARY STUB (replaced by the real wrapper)
use super::*;
use std::sync::Arc;
use std::time::Duration;
pub struct RetryConfig {
    pub max_retries: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}
impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { max_retries: 2, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5) }
    }
}
pub struct Reliable(Arc<dyn LlmProvider>, RetryConfig);
impl Reliable {
    pub fn new(p: Arc<dyn LlmProvider>, c: RetryConfig) -> Self {
        Reliable(p, c)
    }
}
#[async_trait::async_trait]
impl LlmProvider for Reliable {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn complete(&self, r: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.0.complete(r).await
    }
}
