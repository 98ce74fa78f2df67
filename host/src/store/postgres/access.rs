//! Who may do what, and what tenants spend, on PostgreSQL: API tokens,
//! quotas, the budget ledger and usage records.

use std::sync::Arc;

use super::rows::{decode, encode, first, read_texts, tenant_key, write_texts};
use super::{Failed, PgStore};
use crate::model::{ApiToken, LedgerLine, LedgerTotals, Quotas, Tenant, UsageRecord};
use crate::store::{LedgerStore, StoreError, TokenStore};

#[async_trait::async_trait]
impl TokenStore for PgStore {
    async fn put_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let params = vec![token.id.clone(), tenant_key(&token.tenant), encode("token", token)?];
        let sql = "INSERT INTO tokens (id, tenant, record) VALUES ($1, $2, $3)
                   ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, record = EXCLUDED.record";
        write_texts(self, "write token", sql, params).await?;
        Ok(())
    }

    fn get_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        let rows = read_texts(self, "read token", "SELECT record FROM tokens WHERE id = $1", vec![id.to_owned()])?;
        first(rows).map(|text| decode("token", &text)).transpose()
    }

    fn list_tokens(&self, tenant: Option<&Tenant>) -> Result<Vec<ApiToken>, StoreError> {
        let rows = match tenant {
            Some(tenant) => read_texts(
                self,
                "list tokens",
                "SELECT record FROM tokens WHERE tenant = $1 ORDER BY id",
                vec![tenant_key(tenant)],
            )?,
            None => read_texts(self, "list tokens", "SELECT record FROM tokens ORDER BY id", Vec::new())?,
        };
        rows.into_iter().filter_map(|row| row.into_iter().next()).map(|text| decode("token", &text)).collect()
    }

    async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        let removed =
            write_texts(self, "delete token", "DELETE FROM tokens WHERE id = $1", vec![id.to_owned()]).await?;
        Ok(removed > 0)
    }
}

fn amount(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl LedgerStore for PgStore {
    async fn reserve(&self, tenant: &Tenant, lines: &[LedgerLine]) -> Result<Option<String>, StoreError> {
        // Rows are made and locked in key order, so concurrent reservations never deadlock.
        let mut lines = lines.to_vec();
        lines.sort_by(|a, b| a.key.cmp(&b.key));
        let (tenant, lines) = (tenant_key(tenant), Arc::new(lines));
        self.write("reserve budget", move |mut client| {
            let (tenant, lines) = (tenant.clone(), lines.clone());
            async move {
                let keys: Vec<&str> = lines.iter().map(|l| l.key.as_str()).collect();
                let txn = client.transaction().await?;
                let make = txn
                    .prepare_cached(
                        "INSERT INTO ledger (tenant, key) SELECT $1, k FROM unnest($2::text[]) AS k
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                txn.execute(&make, &[&tenant, &keys]).await?;
                let lock = txn
                    .prepare_cached(
                        "SELECT key, spent, reserved FROM ledger WHERE tenant = $1 AND key = ANY($2)
                         ORDER BY key FOR UPDATE",
                    )
                    .await?;
                let rows = txn.query(&lock, &[&tenant, &keys]).await?;
                for line in lines.iter() {
                    let Some(row) = rows.iter().find(|row| row.get::<_, &str>(0) == line.key) else {
                        return Err(Failed::from(StoreError::Corrupt {
                            what: "ledger line",
                            message: format!("the line {} was made and is missing", line.key),
                        }));
                    };
                    let (spent, reserved): (i64, i64) = (row.get(1), row.get(2));
                    let after = spent.saturating_add(reserved).saturating_add(amount(line.amount));
                    if line.limit.is_some_and(|limit| after > amount(limit)) {
                        return Ok(Some(line.key.clone()));
                    }
                }
                let amounts: Vec<i64> = lines.iter().map(|l| amount(l.amount)).collect();
                let hold = txn
                    .prepare_cached(
                        "UPDATE ledger SET reserved = ledger.reserved + a.amount
                         FROM unnest($2::text[], $3::bigint[]) AS a(key, amount)
                         WHERE ledger.tenant = $1 AND ledger.key = a.key",
                    )
                    .await?;
                txn.execute(&hold, &[&tenant, &keys, &amounts]).await?;
                txn.commit().await?;
                Ok(None)
            }
        })
        .await
    }

    async fn settle(
        &self,
        tenant: &Tenant,
        lines: &[(String, u64, u64)],
        usage: Option<&UsageRecord>,
    ) -> Result<(), StoreError> {
        let mut lines = lines.to_vec();
        lines.sort();
        let usage = usage.map(|u| encode("usage", u).map(|text| (amount(u.at_ms), text))).transpose()?;
        let (tenant, lines, usage) = (tenant_key(tenant), Arc::new(lines), Arc::new(usage));
        self.write("settle budget", move |mut client| {
            let (tenant, lines, usage) = (tenant.clone(), lines.clone(), usage.clone());
            async move {
                let keys: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
                let reserved: Vec<i64> = lines.iter().map(|l| amount(l.1)).collect();
                let spent: Vec<i64> = lines.iter().map(|l| amount(l.2)).collect();
                let txn = client.transaction().await?;
                let settle = txn
                    .prepare_cached(
                        "UPDATE ledger SET reserved = GREATEST(ledger.reserved - a.held, 0), spent = ledger.spent + a.used
                         FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS a(key, held, used)
                         WHERE ledger.tenant = $1 AND ledger.key = a.key",
                    )
                    .await?;
                txn.execute(&settle, &[&tenant, &keys, &reserved, &spent]).await?;
                if let Some((at, record)) = usage.as_ref() {
                    let put = txn.prepare_cached("INSERT INTO usage (tenant, at, record) VALUES ($1, $2, $3)").await?;
                    txn.execute(&put, &[&tenant, at, record]).await?;
                }
                txn.commit().await?;
                Ok(())
            }
        })
        .await
    }

    fn ledger(&self, tenant: &Tenant, prefix: &str) -> Result<Vec<(String, LedgerTotals)>, StoreError> {
        let (tenant, pattern) = (tenant_key(tenant), format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_")));
        self.read("read ledger", move |client| {
            let (tenant, pattern) = (tenant.clone(), pattern.clone());
            async move {
                let statement = client
                    .prepare_cached(
                        "SELECT key, spent, reserved FROM ledger WHERE tenant = $1 AND key LIKE $2 ORDER BY key",
                    )
                    .await?;
                let rows = client.query(&statement, &[&tenant, &pattern]).await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        let totals = LedgerTotals {
                            spent: row.get::<_, i64>(1).max(0) as u64,
                            reserved: row.get::<_, i64>(2).max(0) as u64,
                        };
                        (row.get::<_, String>(0), totals)
                    })
                    .collect())
            }
        })
    }

    fn usage_since(&self, tenant: &Tenant, since_ms: u64) -> Result<Vec<UsageRecord>, StoreError> {
        let (tenant, since) = (tenant_key(tenant), amount(since_ms));
        let texts = self.read("read usage", move |client| {
            let tenant = tenant.clone();
            async move {
                let statement = client
                    .prepare_cached("SELECT record FROM usage WHERE tenant = $1 AND at >= $2 ORDER BY at, id")
                    .await?;
                let rows = client.query(&statement, &[&tenant, &since]).await?;
                Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>())
            }
        })?;
        texts.iter().map(|text| decode("usage", text)).collect()
    }

    async fn put_quotas(&self, tenant: &Tenant, quotas: &Quotas) -> Result<(), StoreError> {
        let params = vec![tenant_key(tenant), encode("quotas", quotas)?];
        let sql = "INSERT INTO quotas (tenant, record) VALUES ($1, $2)
                   ON CONFLICT (tenant) DO UPDATE SET record = EXCLUDED.record";
        write_texts(self, "write quotas", sql, params).await?;
        Ok(())
    }

    fn get_quotas(&self, tenant: &Tenant) -> Result<Option<Quotas>, StoreError> {
        let rows =
            read_texts(self, "read quotas", "SELECT record FROM quotas WHERE tenant = $1", vec![tenant_key(tenant)])?;
        first(rows).map(|text| decode("quotas", &text)).transpose()
    }
}
