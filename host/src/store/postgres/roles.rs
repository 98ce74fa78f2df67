//! The store's other roles on PostgreSQL (runs are in [`super::runs`]):
//! journals (written through the batcher), outputs, cache (dead letters are
//! in [`super::dlq`]), breakers and counters, secrets and executors, one impl per role trait.

use std::sync::Arc;

use tokio::sync::Notify;

use super::PgStore;
use super::rows::{decode, encode, first, ms, read_texts, tenant_from_key, tenant_key, write_texts};
use crate::model::{AttemptLog, CacheEntry, Executor, Fence, JournalEntry, ReplayKey, Report, Tenant};
use crate::store::{
    CacheStore, ExecutorStore, JournalStore, OutputStore, SecretReader, SecretStore, StateStore, StoreError, Transition,
};

#[async_trait::async_trait]
impl JournalStore for PgStore {
    async fn journal_put(&self, entry: &JournalEntry, fence: Option<&Fence>) -> Result<(), StoreError> {
        self.journal.put(vec![entry.clone()], fence.cloned()).await
    }

    async fn journal_put_all(&self, entries: &[JournalEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.journal.put(entries.to_vec(), None).await
    }

    fn journal_get(&self, key: &ReplayKey) -> Result<Option<JournalEntry>, StoreError> {
        let (run_id, key) = (key.run_id.clone(), key.encode());
        self.read("journal lookup", move |client| {
            let (run_id, key) = (run_id.clone(), key.clone());
            async move {
                let statement =
                    client.prepare_cached("SELECT entry FROM journal WHERE run_id = $1 AND key = $2").await?;
                match client.query_opt(&statement, &[&run_id, &key]).await? {
                    Some(row) => Ok(Some(decode("journal", row.get::<_, &str>(0))?)),
                    None => Ok(None),
                }
            }
        })
    }

    fn journal_of(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let run_id = run_id.to_owned();
        self.read("journal read", move |client| {
            let run_id = run_id.clone();
            async move {
                let statement =
                    client.prepare_cached("SELECT entry FROM journal WHERE run_id = $1 ORDER BY seq, key").await?;
                let rows = client.query(&statement, &[&run_id]).await?;
                Ok(rows.iter().map(|row| decode("journal", row.get::<_, &str>(0))).collect::<Result<Vec<_>, _>>()?)
            }
        })
    }
}

#[async_trait::async_trait]
impl OutputStore for PgStore {
    async fn put_log(&self, run_id: &str, attempt: u32, log: &AttemptLog) -> Result<(), StoreError> {
        let (run_id, log) = (run_id.to_owned(), Arc::new(encode("log", log)?));
        self.write("write log", move |client| {
            let (run_id, log) = (run_id.clone(), log.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO logs (run_id, attempt, log) VALUES ($1, $2, $3)
                         ON CONFLICT (run_id, attempt) DO UPDATE SET log = EXCLUDED.log",
                        &[&run_id, &(attempt as i32), &*log],
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn logs_of(&self, run_id: &str) -> Result<Vec<(u32, AttemptLog)>, StoreError> {
        let run_id = run_id.to_owned();
        self.read("read logs", move |client| {
            let run_id = run_id.clone();
            async move {
                let rows = client
                    .query("SELECT attempt, log FROM logs WHERE run_id = $1 ORDER BY attempt", &[&run_id])
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| Ok((row.get::<_, i32>(0) as u32, decode("log", row.get::<_, &str>(1))?)))
                    .collect::<Result<Vec<_>, StoreError>>()?)
            }
        })
    }

    async fn put_report(&self, run_id: &str, report: &Report) -> Result<(), StoreError> {
        write_texts(
            self,
            "write report",
            "INSERT INTO reports (run_id, report) VALUES ($1, $2)
             ON CONFLICT (run_id) DO UPDATE SET report = EXCLUDED.report",
            vec![run_id.to_owned(), encode("report", report)?],
        )
        .await?;
        Ok(())
    }

    fn get_report(&self, run_id: &str) -> Result<Option<Report>, StoreError> {
        let rows =
            read_texts(self, "read report", "SELECT report FROM reports WHERE run_id = $1", vec![run_id.to_owned()])?;
        first(rows).map(|text| decode("report", &text)).transpose()
    }
}

#[async_trait::async_trait]
impl CacheStore for PgStore {
    fn cache_get(&self, tenant: &Tenant, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        let rows = read_texts(
            self,
            "cache lookup",
            "SELECT entry FROM cache WHERE tenant = $1 AND key = $2",
            vec![tenant_key(tenant), key.to_owned()],
        )?;
        first(rows).map(|text| decode("cache", &text)).transpose()
    }

    async fn cache_put(&self, tenant: &Tenant, key: &str, entry: &CacheEntry) -> Result<(), StoreError> {
        write_texts(
            self,
            "cache write",
            "INSERT INTO cache (tenant, key, task, entry) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, key) DO UPDATE SET task = EXCLUDED.task, entry = EXCLUDED.entry",
            vec![tenant_key(tenant), key.to_owned(), entry.task.clone(), encode("cache", entry)?],
        )
        .await?;
        Ok(())
    }

    async fn cache_clear(&self, tenant: &Tenant, task: Option<&str>) -> Result<usize, StoreError> {
        let removed = match task {
            Some(task) => {
                write_texts(
                    self,
                    "cache clear",
                    "DELETE FROM cache WHERE tenant = $1 AND task = $2",
                    vec![tenant_key(tenant), task.to_owned()],
                )
                .await?
            }
            None => {
                write_texts(self, "cache clear", "DELETE FROM cache WHERE tenant = $1", vec![tenant_key(tenant)])
                    .await?
            }
        };
        Ok(removed as usize)
    }
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    async fn update_breaker(&self, tenant: &Tenant, name: &str, transition: Transition) -> Result<Vec<u8>, StoreError> {
        // Optimistic: read, compute, then one compare-and-set statement that
        // writes only if the row still holds what was read; on a conflict
        // (another host moved the breaker first) read again.
        let (tenant, name) = (tenant_key(tenant), name.to_owned());
        self.write("breaker", move |client| {
            let (tenant, name, transition) = (tenant.clone(), name.clone(), transition.clone());
            async move {
                loop {
                    let current: Option<Vec<u8>> = client
                        .query_opt("SELECT state FROM breakers WHERE tenant = $1 AND name = $2", &[&tenant, &name])
                        .await?
                        .map(|row| row.get(0));
                    let next = transition(current.as_deref());
                    let written = match &current {
                        None => {
                            client
                                .execute(
                                    "INSERT INTO breakers (tenant, name, state) VALUES ($1, $2, $3)
                                     ON CONFLICT (tenant, name) DO NOTHING",
                                    &[&tenant, &name, &next],
                                )
                                .await?
                        }
                        Some(current) => {
                            client
                                .execute(
                                    "UPDATE breakers SET state = $3 WHERE tenant = $1 AND name = $2 AND state = $4",
                                    &[&tenant, &name, &next, current],
                                )
                                .await?
                        }
                    };
                    if written == 1 {
                        return Ok(next);
                    }
                }
            }
        })
        .await
    }

    fn breakers(&self, tenant: &Tenant) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tenant = tenant_key(tenant);
        self.read("list breakers", move |client| {
            let tenant = tenant.clone();
            async move {
                let rows = client
                    .query("SELECT name, state FROM breakers WHERE tenant = $1 ORDER BY name", &[&tenant])
                    .await?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            }
        })
    }

    async fn add_counters(&self, tenant: &Tenant, deltas: &[(String, u64)]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let tenant = tenant_key(tenant);
        let names: Arc<Vec<String>> = Arc::new(deltas.iter().map(|(name, _)| name.clone()).collect());
        let values: Arc<Vec<i64>> = Arc::new(deltas.iter().map(|(_, n)| ms(*n)).collect());
        self.write("counter", move |client| {
            let (tenant, names, values) = (tenant.clone(), names.clone(), values.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO counters AS c (tenant, name, value)
                         SELECT $1, name, sum(value)::bigint FROM unnest($2::text[], $3::int8[]) AS d(name, value) GROUP BY name
                         ON CONFLICT (tenant, name) DO UPDATE SET value = c.value + EXCLUDED.value",
                        &[&tenant, &*names, &*values],
                    )
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn counters(&self, tenant: &Tenant) -> Result<Vec<(String, u64)>, StoreError> {
        let tenant = tenant_key(tenant);
        self.read("list counters", move |client| {
            let tenant = tenant.clone();
            async move {
                let rows = client
                    .query("SELECT name, value FROM counters WHERE tenant = $1 ORDER BY name", &[&tenant])
                    .await?;
                Ok(rows.iter().map(|row| (row.get(0), row.get::<_, i64>(1).max(0) as u64)).collect())
            }
        })
    }
}

#[async_trait::async_trait]
impl SecretStore for PgStore {
    async fn put_secret(&self, tenant: &Tenant, key: &str, sealed: &str) -> Result<(), StoreError> {
        write_texts(
            self,
            "write secret",
            "INSERT INTO secrets (tenant, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value",
            vec![tenant_key(tenant), key.to_owned(), sealed.to_owned()],
        )
        .await?;
        Ok(())
    }

    fn all_secrets(&self) -> Result<Vec<(Tenant, String, String)>, StoreError> {
        let rows = read_texts(
            self,
            "list secrets",
            "SELECT tenant, key, value FROM secrets ORDER BY tenant, key",
            Vec::new(),
        )?;
        let mut all = Vec::with_capacity(rows.len());
        for row in rows {
            let [tenant, key, value]: [String; 3] =
                row.try_into().map_err(|_| StoreError::Corrupt { what: "secret", message: "a short row".into() })?;
            all.push((tenant_from_key(&tenant)?, key, value));
        }
        Ok(all)
    }

    fn list_secrets(&self, tenant: &Tenant) -> Result<Vec<String>, StoreError> {
        Ok(read_texts(
            self,
            "list secrets",
            "SELECT key FROM secrets WHERE tenant = $1 ORDER BY key",
            vec![tenant_key(tenant)],
        )?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .collect())
    }

    async fn delete_secret(&self, tenant: &Tenant, key: &str) -> Result<bool, StoreError> {
        let removed = write_texts(
            self,
            "delete secret",
            "DELETE FROM secrets WHERE tenant = $1 AND key = $2",
            vec![tenant_key(tenant), key.to_owned()],
        )
        .await?;
        Ok(removed > 0)
    }
}

impl SecretReader for PgStore {
    fn get_secret(&self, tenant: &Tenant, key: &str) -> Result<Option<String>, StoreError> {
        Ok(first(read_texts(
            self,
            "read secret",
            "SELECT value FROM secrets WHERE tenant = $1 AND key = $2",
            vec![tenant_key(tenant), key.to_owned()],
        )?))
    }
}

#[async_trait::async_trait]
impl ExecutorStore for PgStore {
    async fn put_executor(&self, executor: &Executor) -> Result<(), StoreError> {
        let stopping = executor.stopped_at_ms.is_some();
        let (id, seen, record) =
            (executor.id.clone(), ms(executor.seen_at_ms), Arc::new(encode("executor", executor)?));
        self.write("record executor", move |client| {
            let (id, record) = (id.clone(), record.clone());
            async move {
                client
                    .execute(
                        "INSERT INTO executors (id, seen_at, stopped, record) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (id) DO UPDATE SET seen_at = EXCLUDED.seen_at, stopped = EXCLUDED.stopped,
                            record = EXCLUDED.record",
                        &[&id, &seen, &stopping, &*record],
                    )
                    .await?;
                Ok(())
            }
        })
        .await?;
        if stopping {
            // Its runs are free for the others at once.
            self.announce_work();
        }
        Ok(())
    }

    fn executors(&self) -> Result<Vec<Executor>, StoreError> {
        read_texts(self, "list executors", "SELECT record FROM executors ORDER BY id", Vec::new())?
            .into_iter()
            .filter_map(|row| row.into_iter().next())
            .map(|text| decode("executor", &text))
            .collect()
    }

    async fn forget_executors(&self, before_ms: u64) -> Result<usize, StoreError> {
        let before = ms(before_ms);
        let removed = self
            .write("forget executors", move |client| async move {
                Ok(client.execute("DELETE FROM executors WHERE seen_at < $1", &[&before]).await?)
            })
            .await?;
        Ok(removed as usize)
    }

    fn work_signal(&self) -> Arc<Notify> {
        self.work.clone()
    }

    fn cancel_requests(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.cancels.subscribe()
    }
}
