//! The run driver: attempts of the task and then of its fallbacks, each
//! under its retry policy and circuit breaker, with the decision after each
//! failure made by [`crate::policy::decide::next_step`].

use std::sync::Arc;

use tracing::Instrument;

use super::attempt::AttemptPlan;
use super::lease::Heartbeat;
use super::{Host, RunnerError};
use crate::clock::random_unit;
use crate::events::EventKind;
use crate::imports::{HostState, TaskPre};
use crate::journal::JournalMode;
use crate::llm::LlmProvider;
use crate::manifest::TaskSpec;
use crate::model::{AttemptRecord, Failure, FailureKind, RunRecord, now_ms};
use crate::policy::breaker::Admission;
use crate::policy::decide::{MemoryGrowth, Rules, Standing, Step, next_step};
use crate::services::children::Lineage;

impl Host {
    /// Runs the task, then its fallbacks in order, each under its own retry
    /// policy and circuit breaker, until one succeeds. A run whose every
    /// option failed lands in the dead-letter queue. Interrupted attempts,
    /// open breakers and parking on an open provider breaker do not count as
    /// retries. `stub` answers the first LLM call that misses the journal.
    pub(super) async fn drive(
        &self,
        run: RunRecord,
        task: &TaskSpec,
        pre: TaskPre<HostState>,
        stub: Option<String>,
    ) -> Result<RunRecord, RunnerError> {
        let span = tracing::info_span!("run", run_id = %run.id, task = %task.name);
        self.drive_options(run, task, pre, stub).instrument(span).await
    }

    async fn drive_options(
        &self,
        mut run: RunRecord,
        task: &TaskSpec,
        pre: TaskPre<HostState>,
        mut stub: Option<String>,
    ) -> Result<RunRecord, RunnerError> {
        let mode = match &run.replay_of {
            // A cassette of the run's own tenant only: journals are filed by run id.
            Some(source) if self.store.get_run(&run.tenant, source).is_err() => {
                let failure = Failure::new(
                    FailureKind::ReplayMiss,
                    format!("the cassette {source} is not a run of {}", run.tenant),
                    false,
                );
                return self.finish(run, Err(failure)).await;
            }
            Some(source) => JournalMode::Replay { source: source.clone() },
            None => JournalMode::Live,
        };
        let breakers = self.breakers_of(&run.tenant);
        let registered = self.stops.register(&run.id, run.parent.as_deref());
        let stop = registered.token.clone();
        let fence = run.fence(&self.host_id);
        let heartbeat = Heartbeat::start(&self.store, run.id.clone(), fence.clone(), self.lease(), stop.clone());
        let mut chain = vec![task.clone()];
        for name in &task.fallback {
            chain.push(self.manifest.task(name).map_err(RunnerError::UnknownTask)?.clone());
        }
        // What the run could read is kept out of all it stores and tells, while it is driven here.
        let _scrubbing = self.services.scrubbers.register(&run.id, self.scrubber_for(&run.tenant, &chain));
        // A resumed run goes on with the option it was on.
        let resume_at = run.attempts[run.retry_from.min(run.attempts.len())..]
            .iter()
            .filter_map(|a| a.task.as_deref())
            .filter_map(|name| chain.iter().position(|t| t.name == name))
            .max()
            .unwrap_or(0);
        let mut last_failure = None;
        for (index, candidate) in chain.iter().enumerate().skip(resume_at) {
            let breaker = format!("task:{}", candidate.name);
            if let Some(config) = candidate.circuit_breaker
                && let Admission::Rejected { retry_at_ms } = breakers.admit(&breaker, config)
            {
                let failure = Failure {
                    kind: FailureKind::CircuitOpen,
                    message: format!(
                        "task {:?}'s circuit breaker is open until {retry_at_ms} ms since the epoch; not attempted",
                        candidate.name
                    ),
                    retryable: true,
                };
                let now = now_ms();
                run.attempts.push(skipped_attempt(&run, candidate, failure.clone(), now));
                last_failure = Some(failure);
                continue;
            }
            let prepared = if index == 0 {
                Ok((pre.clone(), Arc::from(run.component_digest.as_deref().unwrap_or_default())))
            } else {
                self.prepare(candidate).await
            };
            let (candidate_pre, component) = match prepared {
                Ok(prepared) => prepared,
                Err(failure) => {
                    run.attempts.push(skipped_attempt(&run, candidate, failure.clone(), now_ms()));
                    last_failure = Some(failure);
                    continue;
                }
            };
            let chain_provider = match self.provider_for(candidate, &run.tenant) {
                Ok(provider) => provider,
                Err(failure) => {
                    run.attempts.push(skipped_attempt(&run, candidate, failure.clone(), now_ms()));
                    last_failure = Some(failure);
                    continue;
                }
            };
            let provider: Arc<dyn LlmProvider> = chain_provider.clone();
            let pool = self.pool_of(&run.tenant, self.manifest.environment_of(candidate));
            let mut memory = self.manifest.environment_of(candidate).resources.memory;
            // Parks so far, counted from the record: a released park is a new drive.
            let mut parks = run.attempts[run.retry_from.min(run.attempts.len())..]
                .iter()
                .filter(|a| a.task.as_deref() == Some(candidate.name.as_str()) && a.not_counted)
                .filter(|a| a.error.as_ref().is_some_and(|e| e.kind == FailureKind::LlmCircuitOpen))
                .count() as u32;
            loop {
                if let Some(why) = stop.stopped() {
                    return self.stopped(run, why).await;
                }
                // A tenant at its `concurrent_runs` quota, or with no room under its instance
                // quotas, queues (its children run in its share): a worker releases the run for
                // a moment rather than hold one of its own slots. Not a run whose memory an
                // out-of-memory retry grew: the growth lives only in this drive.
                let grown = memory != self.manifest.environment_of(candidate).resources.memory;
                let _slot = match run.parent {
                    Some(_) => None,
                    None => match self.try_tenant_slot(&run.tenant) {
                        slot if self.is_working()
                            && (slot.is_err() || !grown && !self.instance_room(&run.tenant, memory)) =>
                        {
                            drop((heartbeat, registered, slot));
                            return self.release_until(run, now_ms() + QUOTA_RETRY_MS).await;
                        }
                        Ok(slot) => slot,
                        Err(()) => tokio::select! {
                            slot = self.tenant_slot(&run.tenant) => slot,
                            why = stop.wait() => return self.stopped(run, why).await,
                        },
                    },
                };
                let plan = AttemptPlan {
                    number: run.attempts.len() as u32 + 1,
                    mode: mode.clone(),
                    memory,
                    stub: stub.take(),
                    component: component.clone(),
                    parent: run.parent.clone(),
                    pool: pool.clone(),
                    fence: Some(fence.clone()),
                    tenant: run.tenant.clone(),
                    budget: Some(self.budget_for(&run, candidate)),
                    lineage: Lineage::of(&run),
                };
                let started_at_ms = now_ms();
                self.events
                    .emit(&run.id, EventKind::AttemptStarted { attempt: plan.number, task: candidate.name.clone() });
                let (outcome, stats) = tokio::select! {
                    done = self
                        .attempt(candidate, &candidate_pre, &provider, &run.id, &run.input, &plan)
                        .instrument(tracing::info_span!("attempt", run_id = %run.id, attempt = plan.number, task = %candidate.name)) => done,
                    why = stop.wait() => (Err(why.failure()), Default::default()),
                };
                let outcome = self.services.scrubbers.scrub_outcome(&run.id, outcome);
                // A call refused by the budget ends the run, whatever the guest made of it.
                let outcome = match (outcome, stats.llm.budget_exceeded) {
                    (Err(_), Some(quota)) => Err(self.over_quota(&run, quota)),
                    (outcome, _) => outcome,
                };
                self.events.emit(
                    &run.id,
                    EventKind::AttemptEnded {
                        attempt: plan.number,
                        error: outcome.as_ref().err().cloned(),
                        llm_live: stats.llm.live,
                        llm_replayed: stats.llm.replayed,
                    },
                );
                if let Some(halt) = self.store.halted() {
                    // The store stopped taking writes: whatever the attempt got, nothing
                    // more is recorded. On disk the run is still running, and a restart
                    // resumes it from its journal (the attempt then counts as interrupted).
                    tracing::error!(run = %run.id, "attempt {} ends interrupted: {halt}", plan.number);
                    return Err(RunnerError::Store(halt));
                }
                if stop.stopped() == Some(super::cancel::Stop::Lost) {
                    return self.stopped(run, super::cancel::Stop::Lost).await;
                }
                run.usage.add(stats.llm.usage);
                run.attempts.push(AttemptRecord {
                    number: plan.number,
                    started_at_ms,
                    finished_at_ms: now_ms(),
                    error: outcome.as_ref().err().cloned(),
                    llm_live: stats.llm.live,
                    llm_replayed: stats.llm.replayed,
                    trace_replayed: stats.trace_replayed,
                    http_live: stats.http_live,
                    http_replayed: stats.http_replayed,
                    task: Some(candidate.name.clone()),
                    not_counted: false,
                    host: Some(self.host_id.clone()),
                });
                let failure = match outcome {
                    Ok(output) => {
                        if let Some(config) = candidate.circuit_breaker {
                            breakers.record(&breaker, config, true).await;
                        }
                        run.produced_by = Some(candidate.name.clone());
                        run.degraded = index > 0 || stats.llm.degraded;
                        return self.finish(run, Ok(output)).await;
                    }
                    Err(failure) => failure,
                };
                if let Some(why) = stop.stopped() {
                    // Stopped on purpose: no retry, no breaker, no dead letter.
                    if let Some(last) = run.attempts.last_mut() {
                        last.error = Some(why.failure());
                        last.not_counted = true;
                    }
                    return self.stopped(run, why).await;
                }
                let standing = Standing {
                    failures: run.attempts[run.retry_from.min(run.attempts.len())..]
                        .iter()
                        .filter(|a| a.task.as_deref() == Some(candidate.name.as_str()))
                        .filter(|a| a.counts_as_retry())
                        .count() as u32,
                    parks,
                    memory,
                    replay: run.replay_of.is_some(),
                    provider_circuit_open: stats.llm.circuit_open,
                    provider_retry_at_ms: chain_provider.primary_retry_at(),
                    retry_after: stats.llm.retry_after,
                    has_fallback: index + 1 < chain.len(),
                };
                let rules = Rules {
                    retry: &candidate.retry,
                    on_oom: candidate.on_oom.map(|oom| MemoryGrowth { grow: oom.grow, max: oom.max }),
                };
                let mut counted = false;
                let step = next_step(
                    rules,
                    &standing,
                    &failure,
                    self.clock.now_ms(),
                    || match candidate.circuit_breaker {
                        Some(config) => {
                            counted = true;
                            breakers.note(&breaker, config, false);
                            matches!(breakers.admit(&breaker, config), Admission::Rejected { .. })
                        }
                        None => false,
                    },
                    &mut random_unit,
                );
                if counted && let Some(config) = candidate.circuit_breaker {
                    breakers.publish(&breaker, config, false).await;
                }
                match step {
                    Step::Park { wait } => {
                        if let Some(last) = run.attempts.last_mut() {
                            last.not_counted = true;
                        }
                        // Release the instance and wait for the provider's breaker to let a probe through.
                        parks += 1;
                        tracing::warn!(run = %run.id, "parked until the llm provider's circuit breaker half-opens");
                        if self.is_working() {
                            // Not driven here any more before it is claimable again.
                            drop((heartbeat, registered));
                            return self.release_until(run, now_ms() + wait.as_millis() as u64).await;
                        }
                        self.store.update_run(&run, &run.fence(&self.host_id)).await?;
                        tokio::select! {
                            _ = self.clock.sleep(wait) => {}
                            _ = stop.wait() => {}
                        }
                        continue;
                    }
                    Step::Retry { wait, memory: next } => {
                        memory = next;
                        tracing::warn!(run = %run.id, attempt = plan.number, "attempt failed, retrying in {wait:?}: {}", failure.for_log());
                        // Memory grown for an out-of-memory retry lives only in this drive.
                        let grown = memory != self.manifest.environment_of(candidate).resources.memory;
                        if self.is_working() && !grown {
                            drop((heartbeat, registered));
                            return self.release_until(run, now_ms() + wait.as_millis() as u64).await;
                        }
                        self.store.update_run(&run, &run.fence(&self.host_id)).await?;
                        let child = run.parent.is_some();
                        if child {
                            self.progress.child_retrying(true);
                        }
                        tokio::select! {
                            _ = self.clock.sleep(wait) => {}
                            _ = stop.wait() => {}
                        }
                        if child {
                            self.progress.child_retrying(false);
                        }
                        continue;
                    }
                    Step::Fallback | Step::GiveUp => {}
                }
                last_failure = Some(failure);
                break;
            }
            if index + 1 < chain.len() {
                tracing::warn!(run = %run.id, "task {} is spent; falling back to {}", candidate.name, chain[index + 1].name);
            }
        }
        let failure = last_failure.unwrap_or_else(|| Failure::host("no task could be attempted"));
        self.dead_letter(run, failure).await
    }
}

/// How long a worker leaves a run released when its tenant is at its
/// `concurrent_runs` quota or has no room under its instance quotas, before
/// any worker claims it again.
const QUOTA_RETRY_MS: u64 = 250;

/// The record of an option that was not attempted (breaker open, component unusable).
fn skipped_attempt(run: &RunRecord, task: &TaskSpec, failure: Failure, now: u64) -> AttemptRecord {
    AttemptRecord::not_attempted(run.attempts.len() as u32 + 1, Some(task.name.clone()), failure, now, now)
}
