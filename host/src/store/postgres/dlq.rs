//! The dead-letter queue on PostgreSQL, with the two writes that move a run
//! in or out of it together with the run's row, in one transaction.

use std::sync::Arc;

use super::PgStore;
use super::rows::{decode, encode, first, read_texts, restat, tenant_key, write_texts};
use super::runs::{locked_run, write_run};
use crate::model::{DeadLetter, Fence, RunRecord, Tenant};
use crate::store::fencing::{fenced_update, offers_work};
use crate::store::{DlqStore, StoreError};

const PUT_LETTER: &str = "INSERT INTO dlq (tenant, run_id, letter) VALUES ($1, $2, $3)
     ON CONFLICT (tenant, run_id) DO UPDATE SET letter = EXCLUDED.letter";

#[async_trait::async_trait]
impl DlqStore for PgStore {
    async fn dlq_put(&self, tenant: &Tenant, letter: &DeadLetter) -> Result<(), StoreError> {
        write_texts(
            self,
            "dead letter",
            PUT_LETTER,
            vec![tenant_key(tenant), letter.run_id.clone(), encode("dead letter", letter)?],
        )
        .await?;
        Ok(())
    }

    fn dlq_list(&self, tenant: &Tenant) -> Result<Vec<DeadLetter>, StoreError> {
        read_texts(
            self,
            "list dead letters",
            "SELECT letter FROM dlq WHERE tenant = $1 ORDER BY run_id DESC",
            vec![tenant_key(tenant)],
        )?
        .into_iter()
        .filter_map(|row| row.into_iter().next())
        .map(|text| decode("dead letter", &text))
        .collect()
    }

    fn dlq_get(&self, tenant: &Tenant, run_id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let rows = read_texts(
            self,
            "read dead letter",
            "SELECT letter FROM dlq WHERE tenant = $1 AND run_id = $2",
            vec![tenant_key(tenant), run_id.to_owned()],
        )?;
        first(rows).map(|text| decode("dead letter", &text)).transpose()
    }

    fn dlq_count(&self, tenant: &Tenant) -> Result<usize, StoreError> {
        let rows = read_texts(
            self,
            "count dead letters",
            "SELECT count(*)::text FROM dlq WHERE tenant = $1",
            vec![tenant_key(tenant)],
        )?;
        Ok(first(rows).and_then(|n| n.parse().ok()).unwrap_or(0))
    }

    async fn dlq_remove(&self, tenant: &Tenant, run_id: &str) -> Result<bool, StoreError> {
        let removed = write_texts(
            self,
            "dead letter",
            "DELETE FROM dlq WHERE tenant = $1 AND run_id = $2",
            vec![tenant_key(tenant), run_id.to_owned()],
        )
        .await?;
        Ok(removed > 0)
    }

    async fn dlq_file(&self, run: &RunRecord, fence: &Fence, letter: &DeadLetter) -> Result<(), StoreError> {
        let letter = encode("dead letter", letter)?;
        let (run, fence) = (Arc::new(run.clone()), Arc::new(fence.clone()));
        self.write("file dead letter", move |mut client| {
            let (run, fence, letter) = (run.clone(), fence.clone(), letter.clone());
            async move {
                let txn = client.transaction().await?;
                let tenant = tenant_key(&run.tenant);
                let current = locked_run(&txn, &tenant, &run.id).await?;
                let run = fenced_update(&current, &run, &fence)?;
                write_run(&txn, &run).await?;
                restat(&txn, Some(&current), Some(&run)).await?;
                let put = txn.prepare_cached(PUT_LETTER).await?;
                txn.execute(&put, &[&tenant, &run.id, &letter]).await?;
                txn.commit().await?;
                Ok(())
            }
        })
        .await
    }

    async fn dlq_reopen(
        &self,
        run: &RunRecord,
        fence: &Fence,
        letter_required: bool,
    ) -> Result<Option<DeadLetter>, StoreError> {
        let announce = offers_work(run);
        let (run, fence) = (Arc::new(run.clone()), Arc::new(fence.clone()));
        let taken = self
            .write("reopen dead letter", move |mut client| {
                let (run, fence) = (run.clone(), fence.clone());
                async move {
                    let txn = client.transaction().await?;
                    let tenant = tenant_key(&run.tenant);
                    // The run's row lock orders this against every other write of the run.
                    let current = locked_run(&txn, &tenant, &run.id).await?;
                    let take = txn
                        .prepare_cached("DELETE FROM dlq WHERE tenant = $1 AND run_id = $2 RETURNING letter")
                        .await?;
                    let letter: Option<String> = txn.query_opt(&take, &[&tenant, &run.id]).await?.map(|row| row.get(0));
                    if letter.is_none() && letter_required {
                        return Ok((false, None));
                    }
                    let run = fenced_update(&current, &run, &fence)?;
                    write_run(&txn, &run).await?;
                    restat(&txn, Some(&current), Some(&run)).await?;
                    txn.commit().await?;
                    Ok((true, letter))
                }
            })
            .await?;
        let (written, letter) = taken;
        if written && announce {
            self.announce_work();
        }
        letter.map(|text| decode("dead letter", &text)).transpose()
    }
}
