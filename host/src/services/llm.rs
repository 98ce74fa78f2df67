//! Journaled LLM calls: a recorded answer is returned without calling the
//! provider; a live answer is recorded durably before the guest sees it.
//! Errors are not recorded, so a later attempt asks again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ServiceError;
use super::budget::Budget;
use crate::journal::Journal;
use crate::llm::{ChatRequest, ChatResponse, LlmError, LlmProvider, Role};
use crate::model::Usage;
use crate::progress::Progress;

/// The journal name of LLM calls.
pub const LLM_CALL_NAME: &str = "complete";

/// What one call's LLM use came to.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct LlmStats {
    /// LLM calls made live.
    pub live: u32,
    /// LLM calls answered from the journal.
    pub replayed: u32,
    /// Tokens of live calls.
    pub usage: Usage,
    /// Whether a fallback LLM provider answered a call.
    pub degraded: bool,
    /// The wait the provider asked for when it last rate-limited the call.
    pub retry_after: Option<Duration>,
    /// Whether the host answered a call with `circuit-open`.
    pub circuit_open: bool,
    /// The quota a call would have passed, if the budget refused one.
    pub budget_exceeded: Option<crate::model::LedgerQuota>,
}

/// LLM calls of one guest call: the task's provider, its time limit, an
/// optional stub answer, and counters.
pub struct LlmCalls {
    /// The task's provider (a chain with retries and breakers).
    pub provider: Arc<dyn LlmProvider>,
    /// Upper bound on one call, provider retries included.
    pub timeout: Duration,
    /// Answers the first call that misses the journal with this text instead
    /// of calling the provider (a dead-letter retry's stub).
    pub stub: Option<String>,
    /// What live calls may spend; `None` where nothing is counted.
    pub budget: Option<Arc<Budget>>,
    /// Counters since the last [`LlmCalls::take_stats`].
    pub stats: LlmStats,
    /// The key of the last answer the guest got in this call, which `reject` names.
    pub last: Option<crate::model::ReplayKey>,
    progress: Arc<Progress>,
}

/// The provider of calls made before one is set: it answers nothing.
struct NoProvider;

#[async_trait::async_trait]
impl LlmProvider for NoProvider {
    fn name(&self) -> &str {
        "none"
    }

    async fn complete(&self, _request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        Err(LlmError::Unavailable("no LLM provider is set for this call".into()))
    }
}

impl LlmCalls {
    /// Calls with no provider yet (set [`LlmCalls::provider`] before the first call).
    pub fn unset(progress: Arc<Progress>) -> Self {
        static NONE: std::sync::LazyLock<Arc<dyn LlmProvider>> = std::sync::LazyLock::new(|| Arc::new(NoProvider));
        LlmCalls::new(NONE.clone(), Duration::ZERO, progress)
    }

    /// Calls through `provider`, counting into `progress`.
    pub fn new(provider: Arc<dyn LlmProvider>, timeout: Duration, progress: Arc<Progress>) -> Self {
        LlmCalls { provider, timeout, stub: None, budget: None, stats: LlmStats::default(), last: None, progress }
    }

    /// The counters since the last take, leaving zeros.
    pub fn take_stats(&mut self) -> LlmStats {
        std::mem::take(&mut self.stats)
    }

    /// Answers `request` from `journal` or the provider. The outer error
    /// stops the attempt (journal failure, replay miss); the inner one is the
    /// provider's, for the guest to handle.
    pub async fn complete(
        &mut self,
        journal: &mut Journal,
        request: ChatRequest,
    ) -> Result<Result<ChatResponse, LlmError>, ServiceError> {
        let canonical = serde_json::to_string(&request).map_err(ServiceError::record("llm request"))?;
        let key = journal.next_answer_key(LLM_CALL_NAME, &canonical).await?;
        self.last = None;
        if let Some(entry) = journal.lookup(&key).await? {
            let response: ChatResponse =
                serde_json::from_str(&entry.output).map_err(ServiceError::record("llm response"))?;
            self.last = Some(key);
            self.stats.replayed += 1;
            self.note_fallback_provider(&response);
            return Ok(Ok(response));
        }
        if let Some(miss) = journal.replay_miss(&key, format!(", prompt {:?}", prompt_start(&request))) {
            return Err(miss.into());
        }
        let started = Instant::now();
        let outcome = match self.stub.take() {
            Some(content) => Ok(ChatResponse {
                content,
                model: "stub".into(),
                usage: Default::default(),
                provider: Some("stub".into()),
            }),
            None => match self.budget.clone().filter(|b| b.active()) {
                None => self.ask(&request).await,
                Some(budget) => {
                    let bounded = budget.bounded(&request);
                    let sent = bounded.as_ref().unwrap_or(&request);
                    let hold = match budget.reserve(sent).await.map_err(ServiceError::Budget)? {
                        Ok(hold) => hold,
                        Err(quota) => {
                            self.stats.budget_exceeded = Some(quota);
                            return Ok(Err(LlmError::BudgetExceeded));
                        }
                    };
                    let mut outcome = self.ask(sent).await;
                    let cost = budget.settle(hold, outcome.as_ref()).await.map_err(ServiceError::Budget)?;
                    if let Ok(response) = &mut outcome {
                        response.usage.cost_micros = cost;
                    }
                    outcome
                }
            },
        };
        let response = match outcome {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(run = %journal.run_id(), kind = %err.kind(), "llm call failed");
                match &err {
                    LlmError::RateLimited { retry_after } => self.stats.retry_after = *retry_after,
                    LlmError::CircuitOpen => self.stats.circuit_open = true,
                    _ => {}
                }
                return Ok(Err(err));
            }
        };
        self.note_fallback_provider(&response);
        let summary = format!("{}: {}", response.model, prompt_start(&request));
        let output = serde_json::to_string(&response).map_err(ServiceError::record("llm response"))?;
        journal.record(key.clone(), output, summary, started.elapsed(), Some(response.usage)).await?;
        self.last = Some(key);
        self.stats.live += 1;
        self.progress.llm_call(response.usage.total());
        self.stats.usage.add(response.usage);
        Ok(Ok(response))
    }

    /// Records that the guest rejected the last answer it got (a no-op when
    /// it got none since): later attempts ask that call again.
    pub async fn reject(&mut self, journal: &mut Journal, reason: &str) -> Result<(), ServiceError> {
        match self.last.take() {
            Some(key) => Ok(journal.reject(&key, reason).await?),
            None => Ok(()),
        }
    }

    /// Asks the provider, within the call's time limit.
    async fn ask(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        match tokio::time::timeout(self.timeout, self.provider.complete(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(LlmError::Timeout),
        }
    }

    /// Marks the call degraded when a fallback provider gave `response`.
    fn note_fallback_provider(&mut self, response: &ChatResponse) {
        if response.provider.as_deref().is_some_and(|p| p != self.provider.name() && p != "stub") {
            self.stats.degraded = true;
        }
    }
}

/// The start of a request's user prompt, on one line.
fn prompt_start(request: &ChatRequest) -> String {
    let prompt: String = request.text_of(Role::User).chars().take(60).collect();
    prompt.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{JournalError, JournalMode};
    use crate::llm::mock::MockProvider;
    use crate::model::CallKind;
    use crate::store::JournalStore;
    use crate::store::redb::RedbStore;

    fn calls(progress: &Arc<Progress>) -> LlmCalls {
        LlmCalls::new(Arc::new(MockProvider::default()), Duration::from_secs(5), progress.clone())
    }

    #[tokio::test]
    async fn a_second_attempt_replays_what_the_first_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let progress = Arc::new(Progress::default());
        let request = ChatRequest::simple("Write about tides", "You are a writer", false);

        let mut first = Journal::new(store.clone(), "run-1", 1, JournalMode::Live);
        let mut llm = calls(&progress);
        let live = llm.complete(&mut first, request.clone()).await.unwrap().unwrap();
        let again = llm.complete(&mut first, request.clone()).await.unwrap().unwrap();
        assert_eq!((llm.stats.live, llm.stats.replayed), (2, 0), "the same request twice is two calls");
        assert!(llm.stats.usage.total() > 0);

        let mut second = Journal::new(store.clone(), "run-1", 2, JournalMode::Live);
        let mut llm = calls(&progress);
        assert_eq!(llm.complete(&mut second, request.clone()).await.unwrap().unwrap(), live);
        assert_eq!(llm.complete(&mut second, request.clone()).await.unwrap().unwrap(), again);
        assert_eq!(llm.take_stats(), LlmStats { replayed: 2, ..Default::default() });
        assert_eq!(store.journal_of("run-1").unwrap().len(), 2);
        assert_eq!(progress.snapshot().llm_calls, 2, "only live calls count");
    }

    #[tokio::test]
    async fn a_rejected_answer_is_asked_again_by_the_next_attempt_and_replayed_after() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let progress = Arc::new(Progress::default());
        let request = ChatRequest::simple("Give JSON", "You are a critic", true);
        let attempt = |n: u32| Journal::new(store.clone(), "run-1", n, JournalMode::Live);

        let mut first = attempt(1);
        let mut llm = calls(&progress);
        llm.complete(&mut first, request.clone()).await.unwrap().unwrap();
        llm.reject(&mut first, "missing field `score`").await.unwrap();
        llm.reject(&mut first, "a second reject of the same answer does nothing").await.unwrap();
        assert_eq!(llm.take_stats().live, 1);

        // The next attempt asks again, under the next occurrence.
        let mut second = attempt(2);
        let mut llm = calls(&progress);
        llm.complete(&mut second, request.clone()).await.unwrap().unwrap();
        let stats = llm.take_stats();
        assert_eq!((stats.live, stats.replayed), (1, 0), "asked again");
        let journal = store.journal_of("run-1").unwrap();
        let kinds: Vec<(CallKind, u32)> = journal.iter().map(|e| (e.key.kind, e.key.occurrence)).collect();
        assert_eq!(kinds, [(CallKind::Llm, 1), (CallKind::Reject, 1), (CallKind::Llm, 2)]);
        assert!(journal[1].output.contains("missing field"));

        // One after that gets the answer it did not reject back.
        let mut third = attempt(3);
        let mut llm = calls(&progress);
        llm.complete(&mut third, request.clone()).await.unwrap().unwrap();
        let stats = llm.take_stats();
        assert_eq!((stats.live, stats.replayed), (0, 1));
    }

    #[tokio::test]
    async fn a_stub_answers_the_first_miss_and_a_replay_never_calls_live() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn JournalStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let progress = Arc::new(Progress::default());
        let mut journal = Journal::new(store.clone(), "run-1", 1, JournalMode::Live);
        let mut llm = calls(&progress);
        llm.stub = Some("stubbed".into());
        let request = ChatRequest::simple("p", "s", false);
        assert_eq!(llm.complete(&mut journal, request.clone()).await.unwrap().unwrap().content, "stubbed");
        assert_ne!(llm.complete(&mut journal, request.clone()).await.unwrap().unwrap().content, "stubbed");

        let mut replay = Journal::new(store, "run-2", 1, JournalMode::Replay { source: "run-1".into() });
        let mut llm = calls(&progress);
        let other = ChatRequest::simple("never recorded", "s", false);
        match llm.complete(&mut replay, other).await {
            Err(ServiceError::Journal(JournalError::ReplayMiss { .. })) => {}
            other => panic!("expected a replay miss, got {other:?}"),
        }
    }
}
