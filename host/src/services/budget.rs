//! The LLM budget of a run. Before a live call the worst case it can cost
//! is reserved against the tenant's and the run's quotas, in one atomic
//! step of the store (so concurrent calls can never overshoot a quota
//! between them); after it, the reservation is settled with what the call
//! really cost, and a usage record is kept. Replayed and cached calls make
//! no call, and cost nothing.
//!
//! The worst case: every byte of the prompt as a token (no tokenizer makes
//! more; plus a little per message for the chat template) and the answer's
//! `max_tokens`, which the host sets on a call that names none, for every
//! request the call may send (each provider of the chain, with its retries)
//! at that provider's price. A call that fails after its requests may have
//! been billed (an answer refused as invalid, a timeout), or that is
//! abandoned (cancelled, out of time), is booked at its worst case.

use std::sync::Arc;

use crate::llm::{ChatRequest, ChatResponse};
use crate::model::{LedgerLine, LedgerQuota, Price, Quotas, Tenant, UsageRecord, day_and_month, now_ms};
use crate::store::{LedgerStore, StoreError};

/// Tokens allowed for a message's chat template around its text.
const TEMPLATE_TOKENS: u64 = 16;

/// A provider of the run's chain, as the budget sees it.
#[derive(Debug, Clone)]
pub struct PricedProvider {
    /// Its name (a response names the provider that answered).
    pub name: String,
    /// What its model costs, if a price is set.
    pub price: Option<Price>,
    /// The answer length asked for when a call names none.
    pub max_tokens: u32,
    /// The most requests one call may send it (its retries, plus one).
    pub attempts: u32,
}

/// What a run's live LLM calls may spend.
pub struct Budget {
    /// The ledger.
    pub store: Arc<dyn LedgerStore>,
    /// Whose budget it is.
    pub tenant: Tenant,
    /// The run.
    pub run_id: String,
    /// Its task (for usage records).
    pub task: String,
    /// The tenant's quotas.
    pub quotas: Quotas,
    /// The task's providers, primary first.
    pub providers: Vec<PricedProvider>,
}

/// A reservation held for one call. Dropped unsettled (the call's future
/// was dropped: a cancel, a time limit), it is settled at its worst case, so
/// an abandoned call neither holds a budget until the period ends nor goes
/// uncounted.
pub struct Hold {
    lines: Vec<(String, u64)>,
    /// Whose ledger, while the hold is not settled.
    unsettled: Option<(Arc<dyn LedgerStore>, Tenant)>,
}

impl Hold {
    fn take_lines(&mut self) -> Vec<(String, u64)> {
        self.unsettled = None;
        std::mem::take(&mut self.lines)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some((store, tenant)) = self.unsettled.take() else { return };
        // Its requests may have been sent, and billed: booked at the worst case.
        let lines: Vec<(String, u64, u64)> = self.lines.drain(..).map(|(key, held)| (key, held, held)).collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.settle(&tenant, &lines, None).await {
                    tracing::warn!("cannot give back the reservation of an abandoned LLM call: {e}");
                }
            });
        }
    }
}

impl Budget {
    /// Whether calls go through the ledger: a quota or a price applies.
    pub fn active(&self) -> bool {
        LedgerQuota::ALL.iter().any(|q| q.limit(&self.quotas).is_some())
            || self.providers.iter().any(|p| p.price.is_some())
    }

    /// The request as it is sent: with `max_tokens` when it names none, so
    /// that the reserved worst case bounds the answer.
    pub fn bounded(&self, request: &ChatRequest) -> Option<ChatRequest> {
        if request.max_tokens.is_some() {
            return None;
        }
        let max_tokens = self.providers.first().map_or(crate::llm::DEFAULT_MAX_TOKENS, |p| p.max_tokens);
        Some(ChatRequest { max_tokens: Some(max_tokens), ..request.clone() })
    }

    /// The most a call of `request` can use and cost: (tokens, micros).
    fn worst_case(&self, request: &ChatRequest) -> (u64, u64) {
        let prompt: u64 = request.messages.iter().map(|m| m.content.len() as u64 + TEMPLATE_TOKENS).sum::<u64>();
        let answer = u64::from(request.max_tokens.unwrap_or(crate::llm::DEFAULT_MAX_TOKENS));
        let sends = |p: &PricedProvider| u64::from(p.attempts.max(1));
        let tokens = self.providers.iter().map(|p| sends(p) * (prompt + answer)).sum::<u64>();
        let cost =
            self.providers.iter().map(|p| sends(p) * p.price.map_or(0, |price| price.cost_micros(prompt, answer)));
        (tokens, cost.sum())
    }

    /// Reserves the worst case of `request` (as sent). The inner error is
    /// the quota it would pass.
    pub async fn reserve(&self, request: &ChatRequest) -> Result<Result<Hold, LedgerQuota>, StoreError> {
        let (tokens, cost) = self.worst_case(request);
        let (day, month) = day_and_month(now_ms());
        let mut lines = Vec::new();
        for quota in LedgerQuota::ALL {
            let (suffix, amount) = match quota {
                LedgerQuota::TokensPerRun => (self.run_id.as_str(), tokens),
                LedgerQuota::TokensPerDay => (day.as_str(), tokens),
                LedgerQuota::CostPerDay => (day.as_str(), cost),
                LedgerQuota::CostPerMonth => (month.as_str(), cost),
            };
            let limit = quota.limit(&self.quotas);
            // Run lines are kept only where a quota needs them; the others add up usage.
            if quota == LedgerQuota::TokensPerRun && limit.is_none() {
                continue;
            }
            lines.push(LedgerLine { key: format!("{}{suffix}", quota.prefix()), amount, limit });
        }
        match self.store.reserve(&self.tenant, &lines).await? {
            Some(key) => Ok(Err(LedgerQuota::of_key(&key).unwrap_or(LedgerQuota::CostPerDay))),
            None => Ok(Ok(Hold {
                lines: lines.into_iter().map(|l| (l.key, l.amount)).collect(),
                unsettled: Some((self.store.clone(), self.tenant.clone())),
            })),
        }
    }

    /// Settles `hold` with what the call spent (its worst case if it failed
    /// after requests that may have been billed, nothing if it failed before)
    /// and records its usage; returns its cost in millionths of a dollar.
    pub async fn settle(
        &self,
        mut hold: Hold,
        outcome: Result<&ChatResponse, &crate::llm::LlmError>,
    ) -> Result<u64, StoreError> {
        use crate::llm::LlmError;
        let billed = matches!(outcome, Err(LlmError::InvalidResponse(_) | LlmError::Timeout));
        let (tokens, cost, usage) = match outcome.ok() {
            None if billed => {
                let held = |prefix: &str| hold.lines.iter().find(|(k, _)| k.starts_with(prefix)).map_or(0, |l| l.1);
                (held("tokens:"), held("cost:"), None)
            }
            None => (0, 0, None),
            Some(response) => {
                let answered_by = response.provider.as_deref();
                let provider = self
                    .providers
                    .iter()
                    .find(|p| Some(p.name.as_str()) == answered_by)
                    .or_else(|| self.providers.first());
                let (input, output) =
                    (u64::from(response.usage.prompt_tokens), u64::from(response.usage.completion_tokens));
                let cost = provider.and_then(|p| p.price).map_or(0, |p| p.cost_micros(input, output));
                let record = UsageRecord {
                    at_ms: now_ms(),
                    run_id: self.run_id.clone(),
                    task: self.task.clone(),
                    provider: provider.map(|p| p.name.clone()).unwrap_or_default(),
                    model: response.model.clone(),
                    prompt_tokens: input,
                    completion_tokens: output,
                    cost_micros: cost,
                };
                (input + output, cost, Some(record))
            }
        };
        let lines: Vec<(String, u64, u64)> = hold
            .take_lines()
            .into_iter()
            .map(|(key, reserved)| {
                let spent = if key.starts_with("cost:") { cost } else { tokens };
                (key, reserved, spent)
            })
            .collect();
        self.store.settle(&self.tenant, &lines, usage.as_ref()).await?;
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::RedbStore;

    fn budget(store: Arc<dyn LedgerStore>, quotas: Quotas) -> Budget {
        Budget {
            store,
            tenant: Tenant::default(),
            run_id: "run-1".into(),
            task: "t".into(),
            quotas,
            providers: vec![PricedProvider {
                name: "p".into(),
                price: Some(Price { input: 1.0, output: 2.0 }),
                max_tokens: 100,
                attempts: 1,
            }],
        }
    }

    #[tokio::test]
    async fn the_worst_case_is_held_and_the_real_cost_settled() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn LedgerStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let quotas = Quotas { tokens_per_run: Some(1_000), ..Quotas::default() };
        let budget = budget(store.clone(), quotas);
        let request = budget.bounded(&ChatRequest::simple("four", "", false)).unwrap();
        assert_eq!(request.max_tokens, Some(100));
        // Prompt: 4 + 0 bytes and two templates; answer: 100.
        assert_eq!(budget.worst_case(&request), (4 + 32 + 100, (4 + 32) + 200));
        let hold = budget.reserve(&request).await.unwrap().unwrap();
        let held = store.ledger(&Tenant::default(), "tokens:run:").unwrap();
        assert_eq!(held[0].1.reserved, 136);
        let response = ChatResponse {
            content: "x".into(),
            model: "m".into(),
            usage: crate::model::Usage { prompt_tokens: 3, completion_tokens: 5, cost_micros: 0 },
            provider: None,
        };
        assert_eq!(budget.settle(hold, Ok(&response)).await.unwrap(), 3 + 10);
        let line = &store.ledger(&Tenant::default(), "tokens:run:").unwrap()[0].1;
        assert_eq!((line.spent, line.reserved), (8, 0));
        assert_eq!(store.ledger(&Tenant::default(), "cost:day:").unwrap()[0].1.spent, 13);
        let usage = store.usage_since(&Tenant::default(), 0).unwrap();
        assert_eq!((usage.len(), usage[0].cost_micros, usage[0].prompt_tokens), (1, 13, 3));
        // 8 spent and 136 held per call: 8 + 7 × 136 = 960, and an eighth would pass 1,000 tokens.
        let mut held = Vec::new();
        for _ in 0..7 {
            held.push(budget.reserve(&request).await.unwrap().unwrap());
        }
        assert!(matches!(budget.reserve(&request).await.unwrap(), Err(LedgerQuota::TokensPerRun)));
    }

    #[tokio::test]
    async fn a_hold_dropped_unsettled_is_booked_at_its_worst_case() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn LedgerStore> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
        let budget = budget(store.clone(), Quotas { tokens_per_run: Some(1_000), ..Quotas::default() });
        let request = budget.bounded(&ChatRequest::simple("four", "", false)).unwrap();
        drop(budget.reserve(&request).await.unwrap().unwrap());
        let held = || store.ledger(&Tenant::default(), "tokens:run:").unwrap()[0].1;
        for _ in 0..100 {
            if held().reserved == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!((held().reserved, held().spent), (0, 136));
    }
}
