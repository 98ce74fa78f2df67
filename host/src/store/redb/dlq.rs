//! The dead-letter queue on redb, with the two writes that move a run in or
//! out of it together with the run's record.

use super::*;
use crate::model::Fence;
use crate::store::DlqStore;
use crate::store::fencing::{fenced_update, offers_work};

#[async_trait::async_trait]
impl DlqStore for RedbStore {
    async fn dlq_put(&self, tenant: &Tenant, letter: &DeadLetter) -> Result<(), StoreError> {
        self.committer
            .write_async(put_op("dead letter", DLQ, scoped(tenant, &letter.run_id), encode("dead letter", letter)?))
            .await
    }

    fn dlq_list(&self, tenant: &Tenant) -> Result<Vec<DeadLetter>, StoreError> {
        self.scan("list dead letters", DLQ, &format!("{tenant}{SEP}"))?
            .into_iter()
            .rev()
            .map(|(_, bytes)| decode("dead letter", &bytes))
            .collect()
    }

    fn dlq_get(&self, tenant: &Tenant, run_id: &str) -> Result<Option<DeadLetter>, StoreError> {
        self.get("read dead letter", DLQ, &scoped(tenant, run_id))?
            .map(|bytes| decode("dead letter", &bytes))
            .transpose()
    }

    fn dlq_count(&self, tenant: &Tenant) -> Result<usize, StoreError> {
        const OP: &str = "count dead letters";
        let txn = self.db.begin_read().map_err(|e| io(OP)(e.into()))?;
        let letters = txn.open_table(DLQ).map_err(|e| io(OP)(e.into()))?;
        let (start, end) = prefix_range(&format!("{tenant}{SEP}"));
        Ok(letters.range(start.as_str()..end.as_str()).map_err(|e| io(OP)(e.into()))?.count())
    }

    async fn dlq_remove(&self, tenant: &Tenant, run_id: &str) -> Result<bool, StoreError> {
        self.remove_key("dead letter", DLQ, scoped(tenant, run_id)).await
    }

    async fn dlq_file(&self, run: &RunRecord, fence: &Fence, letter: &DeadLetter) -> Result<(), StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let value = encode("dead letter", letter)?;
        let (run, fence) = (run.clone(), fence.clone());
        self.committer
            .write_async(Box::new(move |tables: &mut Tables<'_>| {
                let current = read_run(tables, &key, &run.id)?;
                let run = fenced_update(&current, &run, &fence)?;
                write_run(tables, &key, Some(&current), &run)?;
                tables.get(DLQ)?.insert(key.as_str(), value.as_slice()).map_err(|e| io("dead letter")(e.into()))?;
                Ok(())
            }))
            .await
    }

    async fn dlq_reopen(
        &self,
        run: &RunRecord,
        fence: &Fence,
        letter_required: bool,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let key = scoped(&run.tenant, &run.id);
        let released = offers_work(run);
        let (run, fence) = (run.clone(), fence.clone());
        let taken = self
            .write_returning(move |tables| {
                // Every check comes before the first write: a write that fails
                // must have written nothing.
                let letters = tables.get(DLQ)?;
                let letter = letters.get(key.as_str()).map_err(|e| io("dead letter")(e.into()))?;
                let letter = letter.map(|bytes| bytes.value().to_vec());
                if letter.is_none() && letter_required {
                    return Ok((false, None));
                }
                let current = read_run(tables, &key, &run.id)?;
                let run = fenced_update(&current, &run, &fence)?;
                tables.get(DLQ)?.remove(key.as_str()).map_err(|e| io("dead letter")(e.into()))?;
                write_run(tables, &key, Some(&current), &run)?;
                Ok((true, letter))
            })
            .await?;
        let (written, letter) = taken;
        if written && released {
            self.work.notify_waiters();
        }
        letter.map(|bytes| decode("dead letter", &bytes)).transpose()
    }
}
