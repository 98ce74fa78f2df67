//! What every store does for many tenants: finds them, keeps them apart,
//! keeps their tokens, their secrets' sealed documents, their quotas and
//! their budget ledgers.

use std::sync::Arc;

use super::super::prelude::*;
use super::super::{RunFilter, StoreError};
use super::{entry, finished, run};
use crate::model::{
    ApiToken, CacheEntry, DeadLetter, Failure, FailureKind, LedgerLine, LedgerTotals, Quotas, Role, RunRecord,
    RunStatus, Tenant, UsageRecord,
};

fn tenant(project: &str) -> Tenant {
    Tenant::new(project, "prod").unwrap()
}

fn run_of(tenant: &Tenant, n: u32) -> RunRecord {
    RunRecord { tenant: tenant.clone(), ..run(n, "t") }
}

pub async fn tenants_are_found_with_and_without_work(store: Arc<dyn Store>) {
    let (a, b, c) = (tenant("a"), tenant("b"), tenant("c"));
    assert!(store.tenants(true).unwrap().is_empty());
    let mut pending = run_of(&a, 1);
    pending.status = RunStatus::Pending;
    pending.lease = None;
    store.create_run(&pending).await.unwrap();
    store.create_run(&run_of(&b, 2)).await.unwrap();
    store.create_run(&finished(run_of(&c, 3), RunStatus::Succeeded)).await.unwrap();
    store.create_run(&finished(run_of(&a, 4), RunStatus::Failed)).await.unwrap();
    assert_eq!(store.tenants(true).unwrap(), [a.clone(), b.clone()]);
    assert_eq!(store.tenants(false).unwrap(), [a, b, c]);
}

pub async fn a_tenant_sees_nothing_of_another(store: Arc<dyn Store>) {
    let (a, b) = (tenant("a"), tenant("b"));
    let mine = finished(run_of(&a, 1), RunStatus::Failed);
    store.create_run(&mine).await.unwrap();
    store.journal_put(&entry(&mine.id, "call", 0, "answer"), None).await.unwrap();
    assert!(matches!(store.get_run(&b, &mine.id), Err(StoreError::NoSuchRun(_))));
    assert!(store.list_runs(&b, &RunFilter::default()).unwrap().is_empty());
    assert!(store.finished_among(&b, std::slice::from_ref(&mine.id)).unwrap()[0].1.is_none());
    assert!(store.task_stats(&b).unwrap().is_empty());
    assert!(!store.delete_run(&b, &mine.id).await.unwrap(), "another tenant cannot delete it");
    assert!(matches!(store.request_cancel(&b, &mine.id).await, Err(StoreError::NoSuchRun(_))));
    let letter = DeadLetter {
        run_id: mine.id.clone(),
        task: "t".into(),
        input: "{}".into(),
        failed_at_ms: 1,
        error: Failure::new(FailureKind::Trap, "no", false),
        attempts: Vec::new(),
    };
    store.dlq_put(&a, &letter).await.unwrap();
    assert!(store.dlq_get(&b, &mine.id).unwrap().is_none() && store.dlq_list(&b).unwrap().is_empty());
    assert!(!store.dlq_remove(&b, &mine.id).await.unwrap());
    let entry = CacheEntry { task: "t".into(), run_id: mine.id.clone(), output: "{}".into(), created_at_ms: 1 };
    store.cache_put(&a, "k", &entry).await.unwrap();
    assert!(store.cache_get(&b, "k").unwrap().is_none());
    assert_eq!(store.cache_clear(&b, None).await.unwrap(), 0);
    assert!(store.cache_get(&a, "k").unwrap().is_some() && store.dlq_get(&a, &mine.id).unwrap().is_some());
    assert_eq!(store.get_run(&a, &mine.id).unwrap().id, mine.id);
    assert_eq!(store.journal_of(&mine.id).unwrap().len(), 1, "another tenant's delete left the journal");
}

fn token(id: &str, tenant: &Tenant, role: Role) -> ApiToken {
    ApiToken {
        id: id.into(),
        tenant: tenant.clone(),
        role,
        secret_sha256: format!("hash-of-{id}"),
        created_at_ms: 1,
        expires_at_ms: None,
    }
}

pub async fn tokens_are_kept_by_id_and_listed_by_tenant(store: Arc<dyn Store>) {
    let (a, b) = (tenant("a"), tenant("b"));
    assert_eq!(store.get_token("t1").unwrap(), None);
    store.put_token(&token("t1", &a, Role::Viewer)).await.unwrap();
    store.put_token(&token("t2", &b, Role::Admin)).await.unwrap();
    store.put_token(&token("t3", &a, Role::Operator)).await.unwrap();
    assert_eq!(store.get_token("t2").unwrap(), Some(token("t2", &b, Role::Admin)));
    let ids = |tenant: Option<&Tenant>| -> Vec<String> {
        store.list_tokens(tenant).unwrap().into_iter().map(|t| t.id).collect()
    };
    assert_eq!(ids(Some(&a)), ["t1", "t3"]);
    assert_eq!(ids(Some(&b)), ["t2"]);
    assert_eq!(ids(None), ["t1", "t2", "t3"]);
    assert!(store.delete_token("t1").await.unwrap());
    assert!(!store.delete_token("t1").await.unwrap());
    assert_eq!(store.get_token("t1").unwrap(), None);
    assert_eq!(ids(Some(&a)), ["t3"]);
}

pub async fn every_tenants_secrets_are_listed(store: Arc<dyn Store>) {
    let (a, b) = (tenant("a"), tenant("b"));
    store.put_secret(&a, "k", "{\"sealed\":1}").await.unwrap();
    store.put_secret(&b, "k", "{\"sealed\":2}").await.unwrap();
    store.put_secret(&a, "z", "{\"sealed\":3}").await.unwrap();
    let mut all = store.all_secrets().unwrap();
    all.sort();
    assert_eq!(
        all,
        [
            (a.clone(), "k".to_owned(), "{\"sealed\":1}".to_owned()),
            (a, "z".to_owned(), "{\"sealed\":3}".to_owned()),
            (b, "k".to_owned(), "{\"sealed\":2}".to_owned()),
        ]
    );
}

pub async fn concurrent_reservations_never_pass_a_limit(store: Arc<dyn Store>) {
    let t = tenant("a");
    let line = |amount: u64| LedgerLine { key: "cost:day:2026-11-29".into(), amount, limit: Some(1_000) };
    let run_line = |amount: u64| LedgerLine { key: "tokens:run:r".into(), amount, limit: None };
    // 40 reservations of 100 race for a limit of 1,000: exactly ten get it.
    let mut racing = Vec::new();
    for _ in 0..40 {
        let (store, t) = (store.clone(), t.clone());
        racing.push(tokio::spawn(async move { store.reserve(&t, &[run_line(7), line(100)]).await.unwrap() }));
    }
    let mut granted = 0;
    for race in racing {
        match race.await.unwrap() {
            None => granted += 1,
            Some(key) => assert_eq!(key, "cost:day:2026-11-29", "the refusal names the line"),
        }
    }
    assert_eq!(granted, 10);
    let totals = |prefix: &str| store.ledger(&t, prefix).unwrap()[0].1;
    assert_eq!((totals("cost:").reserved, totals("tokens:").reserved), (1_000, 70), "all or nothing per reservation");
    // Settling gives back the worst case and keeps what was spent.
    for _ in 0..10 {
        let lines = [("cost:day:2026-11-29".to_owned(), 100, 30), ("tokens:run:r".to_owned(), 7, 5)];
        store.settle(&t, &lines, None).await.unwrap();
    }
    assert_eq!(totals("cost:"), LedgerTotals { spent: 300, reserved: 0 });
    assert_eq!(store.reserve(&t, &[line(700)]).await.unwrap(), None);
    assert_eq!(store.reserve(&t, &[line(1)]).await.unwrap(), Some("cost:day:2026-11-29".into()));
    assert!(store.ledger(&tenant("b"), "").unwrap().is_empty(), "ledgers are per tenant");
}

pub async fn usage_records_and_quotas_are_kept_per_tenant(store: Arc<dyn Store>) {
    let (a, b) = (tenant("a"), tenant("b"));
    let record = |at_ms: u64, task: &str| UsageRecord {
        at_ms,
        run_id: "r".into(),
        task: task.into(),
        provider: "p".into(),
        model: "m".into(),
        prompt_tokens: 3,
        completion_tokens: 4,
        cost_micros: 5,
    };
    for (at, task) in [(100, "old"), (200, "x"), (300, "y")] {
        store.settle(&a, &[], Some(&record(at, task))).await.unwrap();
    }
    store.settle(&b, &[], Some(&record(250, "theirs"))).await.unwrap();
    let tasks: Vec<String> = store.usage_since(&a, 200).unwrap().into_iter().map(|r| r.task).collect();
    assert_eq!(tasks, ["x", "y"]);
    assert_eq!(store.usage_since(&b, 0).unwrap().len(), 1);
    assert_eq!(store.get_quotas(&a).unwrap(), None);
    let quotas = Quotas { tokens_per_day: Some(9), ..Quotas::default() };
    store.put_quotas(&a, &quotas).await.unwrap();
    assert_eq!(store.get_quotas(&a).unwrap(), Some(quotas));
    assert_eq!(store.get_quotas(&b).unwrap(), None);
}
