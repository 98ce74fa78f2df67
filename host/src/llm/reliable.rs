//! Provider-level reliability: JSON validation and retries with backoff.
//!
//! [`Reliable`] wraps any [`LlmProvider`]. When a request asks for JSON, an
//! answer whose content does not parse as one JSON value becomes
//! [`LlmError::InvalidResponse`]. Retryable errors
//! ([`LlmError::is_retryable`]) are retried up to [`RetryConfig::max_retries`]
//! times: the k-th retry waits `base_delay · 2^(k-1)`, capped by `max_delay`,
//! or the provider's `retry_after` (also capped) for a rate limit that gives
//! one. After the last retry the last error is returned.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{ChatRequest, ChatResponse, LlmError, LlmProvider};
use crate::clock::random_unit;
use crate::model::Failure;
use crate::policy::retry::RetryPolicy;

/// How [`Reliable`] retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first call; 0 disables retrying.
    pub max_retries: u32,
    /// Wait before the first retry; doubles for each further one.
    pub base_delay: Duration,
    /// Upper bound on any wait, including a provider's `retry_after`.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    /// 2 retries, 200 ms base delay, 5 s cap.
    fn default() -> Self {
        RetryConfig { max_retries: 2, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(5) }
    }
}

impl RetryConfig {
    /// No retries (JSON validation still applies).
    pub fn none() -> Self {
        RetryConfig { max_retries: 0, ..RetryConfig::default() }
    }

    /// The wait before retry number `retry` (1-based) after `error`.
    pub fn delay_for(&self, retry: u32, error: &LlmError) -> Duration {
        if let LlmError::RateLimited { retry_after: Some(wait) } = error {
            return (*wait).min(self.max_delay);
        }
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// A provider with JSON validation and retries around another one.
pub struct Reliable<P: ?Sized = dyn LlmProvider> {
    inner: Arc<P>,
    config: RetryConfig,
    /// A manifest retry policy (strategy, jitter, retry_on) that replaces the default backoff.
    policy: Option<RetryPolicy>,
    /// Retries made so far, for `cairn status`.
    retries: Arc<AtomicU64>,
}

impl<P: ?Sized> Clone for Reliable<P> {
    fn clone(&self) -> Self {
        Reliable {
            inner: Arc::clone(&self.inner),
            config: self.config,
            policy: self.policy.clone(),
            retries: self.retries.clone(),
        }
    }
}

impl<P: ?Sized> std::fmt::Debug for Reliable<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reliable").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<P: LlmProvider + ?Sized> Reliable<P> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<P>, config: RetryConfig) -> Self {
        Reliable { inner, config, policy: None, retries: Arc::default() }
    }

    /// Wraps `inner` under a manifest retry policy: its count, strategy,
    /// jitter and `retry_on` kinds (`llm-unavailable`, `llm-rate-limited`, …).
    /// A rate limit still waits at least the provider's `retry_after`.
    pub fn with_policy(inner: Arc<P>, policy: RetryPolicy) -> Self {
        let config =
            RetryConfig { max_retries: policy.count, base_delay: policy.base_delay, max_delay: policy.max_delay };
        Reliable { inner, config, policy: Some(policy), retries: Arc::default() }
    }

    /// The counter of retries this provider made.
    pub fn retry_counter(&self) -> Arc<AtomicU64> {
        self.retries.clone()
    }

    /// Whether to retry after `error` as retry number `retry`, and after how long.
    fn next_retry(&self, retry: u32, error: &LlmError) -> Option<Duration> {
        match &self.policy {
            None => {
                (error.is_retryable() && retry <= self.config.max_retries).then(|| self.config.delay_for(retry, error))
            }
            Some(policy) => {
                let failure = Failure { kind: error.kind(), message: String::new(), retryable: error.is_retryable() };
                policy.should_retry(&failure, retry).then(|| {
                    let wait = policy.wait(retry, &mut random_unit);
                    match error {
                        LlmError::RateLimited { retry_after: Some(asked) } => wait.max((*asked).min(policy.max_delay)),
                        _ => wait,
                    }
                })
            }
        }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &Arc<P> {
        &self.inner
    }

    /// The retry settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// One call of the inner provider, with the JSON check.
    async fn attempt(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let response = self.inner.complete(request).await?;
        if request.json
            && let Err(e) = serde_json::from_str::<serde_json::Value>(&response.content)
        {
            return Err(LlmError::InvalidResponse(format!(
                "{}: JSON was requested but the answer is not JSON ({e})",
                self.inner.name()
            )));
        }
        Ok(response)
    }
}

#[async_trait::async_trait]
impl<P: LlmProvider + ?Sized> LlmProvider for Reliable<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut retry = 0u32;
        loop {
            let error = match self.attempt(request).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            retry += 1;
            let Some(delay) = self.next_retry(retry, &error) else { return Err(error) };
            self.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                provider = self.inner.name(),
                // The kind only: a provider's message may quote the prompt, and the host's log
                // is not scrubbed of a run's secrets (the run's record is).
                kind = %error.kind(),
                retry,
                max_retries = self.config.max_retries,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "LLM call failed; retrying"
            );
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;
    use crate::llm::Usage;

    /// Answers from a script, one entry per call; records when it was called.
    struct Scripted {
        script: Mutex<VecDeque<Result<&'static str, LlmError>>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(script: Vec<Result<&'static str, LlmError>>) -> Arc<Self> {
            Arc::new(Scripted { script: Mutex::new(script.into()), calls: Mutex::new(Vec::new()) })
        }

        fn calls(&self) -> Vec<Instant> {
            self.calls.lock().unwrap().clone()
        }

        /// Gaps between consecutive calls.
        fn gaps(&self) -> Vec<Duration> {
            self.calls().windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    #[async_trait::async_trait]
    impl LlmProvider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }

        async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
            self.calls.lock().unwrap().push(Instant::now());
            let next = self.script.lock().unwrap().pop_front().expect("script exhausted");
            next.map(|content| ChatResponse {
                content: content.to_owned(),
                model: "fake".into(),
                usage: Usage { prompt_tokens: 1, completion_tokens: 1, cost_micros: 0 },
                provider: None,
            })
        }
    }

    fn config(max_retries: u32) -> RetryConfig {
        RetryConfig { max_retries, base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(350) }
    }

    fn unavailable() -> LlmError {
        LlmError::Unavailable("down".into())
    }

    #[test]
    fn default_config() {
        let c = RetryConfig::default();
        assert_eq!((c.max_retries, c.base_delay, c.max_delay), (2, Duration::from_millis(200), Duration::from_secs(5)));
    }

    #[test]
    fn delays_double_and_are_capped() {
        let c = config(10);
        let e = unavailable();
        let delays: Vec<_> = (1..=5).map(|k| c.delay_for(k, &e).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350, 350]);
        assert_eq!(c.delay_for(u32::MAX, &e), c.max_delay);
        let limited = LlmError::RateLimited { retry_after: Some(Duration::from_millis(120)) };
        assert_eq!(c.delay_for(3, &limited), Duration::from_millis(120));
        let long = LlmError::RateLimited { retry_after: Some(Duration::from_secs(60)) };
        assert_eq!(c.delay_for(1, &long), c.max_delay);
        let bare = LlmError::RateLimited { retry_after: None };
        assert_eq!(c.delay_for(2, &bare), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn success_passes_through_without_retry() {
        let fake = Scripted::new(vec![Ok("hello")]);
        let reliable = Reliable::new(fake.clone(), config(3));
        let r = reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap();
        assert_eq!(r.content, "hello");
        assert_eq!(fake.calls().len(), 1);
        assert_eq!(reliable.name(), "scripted");
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_errors_are_retried_with_backoff() {
        let fake = Scripted::new(vec![Err(unavailable()), Err(LlmError::Timeout), Err(unavailable()), Ok("ok")]);
        let reliable = Reliable::new(fake.clone(), config(3));
        let r = reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap();
        assert_eq!(r.content, "ok");
        assert_eq!(fake.gaps(), [100, 200, 350].map(Duration::from_millis));
    }

    #[tokio::test(start_paused = true)]
    async fn a_manifest_policy_sets_strategy_and_retry_on_and_counts_retries() {
        use crate::policy::retry::{RetryPolicy, Strategy};
        let policy = RetryPolicy {
            count: 3,
            strategy: Strategy::Linear,
            base_delay: Duration::from_millis(100),
            retry_on: Some(vec!["llm-unavailable".into(), "llm-rate-limited".into()]),
            ..RetryPolicy::default()
        };
        let fake = Scripted::new(vec![
            Err(unavailable()),
            Err(LlmError::RateLimited { retry_after: Some(Duration::from_millis(500)) }),
            Ok("ok"),
        ]);
        let reliable = Reliable::with_policy(fake.clone(), policy.clone());
        let counter = reliable.retry_counter();
        assert_eq!(reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap().content, "ok");
        // Linear: 100 ms, then 200 ms raised to the 500 ms the provider asked for.
        assert_eq!(fake.gaps(), [100, 500].map(Duration::from_millis));
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 2);

        let fake = Scripted::new(vec![Err(LlmError::Timeout), Ok("never")]);
        let reliable = Reliable::with_policy(fake.clone(), policy);
        assert_eq!(reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap_err(), LlmError::Timeout);
        assert_eq!(fake.calls().len(), 1, "llm-timeout is not in retry_on");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries_with_the_last_error() {
        let fake = Scripted::new(vec![Err(unavailable()), Err(unavailable()), Err(LlmError::Timeout), Ok("late")]);
        let reliable = Reliable::new(fake.clone(), config(2));
        let err = reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap_err();
        assert_eq!(err, LlmError::Timeout);
        assert_eq!(fake.calls().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_fail_at_once() {
        let fake = Scripted::new(vec![Err(LlmError::InvalidRequest("bad".into())), Ok("never")]);
        let reliable = Reliable::new(fake.clone(), config(5));
        let err = reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap_err();
        assert_eq!(err, LlmError::InvalidRequest("bad".into()));
        assert_eq!(fake.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_honours_retry_after_capped() {
        let fake = Scripted::new(vec![
            Err(LlmError::RateLimited { retry_after: Some(Duration::from_millis(30)) }),
            Err(LlmError::RateLimited { retry_after: Some(Duration::from_secs(30)) }),
            Ok("ok"),
        ]);
        let reliable = Reliable::new(fake.clone(), config(2));
        reliable.complete(&ChatRequest::simple("p", "s", false)).await.unwrap();
        assert_eq!(fake.gaps(), [30, 350].map(Duration::from_millis));
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_json_is_rejected_and_retried() {
        let fake = Scripted::new(vec![Ok("not json {"), Ok(r#"{"score": 9}"#)]);
        let reliable = Reliable::new(fake.clone(), config(2));
        let r = reliable.complete(&ChatRequest::simple("p", "s", true)).await.unwrap();
        assert_eq!(r.content, r#"{"score": 9}"#);
        assert_eq!(fake.calls().len(), 2);

        // Without retries the error surfaces as InvalidResponse.
        let fake = Scripted::new(vec![Ok("```json\n{}\n```")]);
        let reliable = Reliable::new(fake, RetryConfig::none());
        let err = reliable.complete(&ChatRequest::simple("p", "s", true)).await.unwrap_err();
        assert!(matches!(err, LlmError::InvalidResponse(m) if m.contains("scripted")));
    }

    #[tokio::test(start_paused = true)]
    async fn plain_text_is_not_validated() {
        let fake = Scripted::new(vec![Ok("not json {")]);
        let reliable = Reliable::new(fake, config(2));
        assert!(reliable.complete(&ChatRequest::simple("p", "s", false)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn works_over_a_trait_object() {
        let fake: Arc<dyn LlmProvider> = Scripted::new(vec![Err(unavailable()), Ok("ok")]);
        let reliable: Reliable = Reliable::new(fake, config(1));
        let shared: Arc<dyn LlmProvider> = Arc::new(reliable.clone());
        assert_eq!(shared.complete(&ChatRequest::simple("p", "s", false)).await.unwrap().content, "ok");
        assert!(format!("{reliable:?}").contains("max_retries"));
    }
}
