//! Who may do what, and what tenants spend, in the embedded store: API
//! tokens, quotas, the budget ledger and usage records.

use super::*;
use crate::model::{ApiToken, LedgerLine, LedgerTotals, Quotas, UsageRecord};
use crate::store::commit::Tables;
use crate::store::{LedgerStore, TokenStore};

/// Token id → JSON [`ApiToken`] (made on first use: no schema change).
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

#[async_trait::async_trait]
impl TokenStore for RedbStore {
    async fn put_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let value = encode("token", token)?;
        self.committer.write_async(put_op("write token", TOKENS, token.id.clone(), value)).await
    }

    fn get_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        self.get("read token", TOKENS, id)?.map(|bytes| decode("token", &bytes)).transpose()
    }

    fn list_tokens(&self, tenant: Option<&Tenant>) -> Result<Vec<ApiToken>, StoreError> {
        let all = self.scan("list tokens", TOKENS, "")?;
        let tokens = all.iter().map(|(_, bytes)| decode::<ApiToken>("token", bytes)).collect::<Result<Vec<_>, _>>()?;
        Ok(tokens.into_iter().filter(|t| tenant.is_none_or(|tenant| t.tenant == *tenant)).collect())
    }

    async fn delete_token(&self, id: &str) -> Result<bool, StoreError> {
        self.remove_key("delete token", TOKENS, id.to_owned()).await
    }
}

/// `project/domain\x01<line>` → JSON [`LedgerTotals`] (made on first use).
pub(super) const LEDGER: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger");
/// `project/domain\x01<at ms, 16 digits>\x01<id>` → JSON [`UsageRecord`] (made on first use).
pub(super) const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// `project/domain` → JSON [`Quotas`] (made on first use).
pub(super) const QUOTAS: TableDefinition<&str, &[u8]> = TableDefinition::new("quotas");

fn totals(tables: &mut Tables<'_>, key: &str) -> Result<LedgerTotals, StoreError> {
    let table = tables.get(LEDGER)?;
    let found = table.get(key).map_err(|e| io("read ledger")(e.into()))?;
    found.map(|bytes| decode("ledger line", bytes.value())).transpose().map(Option::unwrap_or_default)
}

fn put_totals(tables: &mut Tables<'_>, key: &str, totals: &LedgerTotals) -> Result<(), StoreError> {
    let bytes = encode("ledger line", totals)?;
    tables.get(LEDGER)?.insert(key, bytes.as_slice()).map_err(|e| io("write ledger")(e.into()))?;
    Ok(())
}

#[async_trait::async_trait]
impl LedgerStore for RedbStore {
    async fn reserve(&self, tenant: &Tenant, lines: &[LedgerLine]) -> Result<Option<String>, StoreError> {
        let (tenant, lines) = (tenant.clone(), lines.to_vec());
        // In the single writer: the check and the reservation are one step.
        self.write_returning(move |tables| {
            let mut next = Vec::with_capacity(lines.len());
            for line in &lines {
                let key = scoped(&tenant, &line.key);
                let mut now = totals(tables, &key)?;
                let after = now.spent.saturating_add(now.reserved).saturating_add(line.amount);
                if line.limit.is_some_and(|limit| after > limit) {
                    return Ok(Some(line.key.clone()));
                }
                now.reserved = now.reserved.saturating_add(line.amount);
                next.push((key, now));
            }
            for (key, now) in &next {
                put_totals(tables, key, now)?;
            }
            Ok(None)
        })
        .await
    }

    async fn settle(
        &self,
        tenant: &Tenant,
        lines: &[(String, u64, u64)],
        usage: Option<&UsageRecord>,
    ) -> Result<(), StoreError> {
        let (tenant, lines) = (tenant.clone(), lines.to_vec());
        let usage = usage.map(|u| encode("usage", u).map(|bytes| (u.at_ms, bytes))).transpose()?;
        self.write_returning(move |tables| {
            for (line, reserved, spent) in &lines {
                let key = scoped(&tenant, line);
                let mut now = totals(tables, &key)?;
                now.reserved = now.reserved.saturating_sub(*reserved);
                now.spent = now.spent.saturating_add(*spent);
                put_totals(tables, &key, &now)?;
            }
            if let Some((at_ms, bytes)) = &usage {
                let key = format!("{tenant}{SEP}{at_ms:016}{SEP}{}", uuid::Uuid::now_v7().simple());
                tables.get(USAGE)?.insert(key.as_str(), bytes.as_slice()).map_err(|e| io("write usage")(e.into()))?;
            }
            Ok(())
        })
        .await
    }

    fn ledger(&self, tenant: &Tenant, prefix: &str) -> Result<Vec<(String, LedgerTotals)>, StoreError> {
        let scope = format!("{tenant}{SEP}");
        self.scan("read ledger", LEDGER, &format!("{scope}{prefix}"))?
            .into_iter()
            .map(|(key, bytes)| Ok((key[scope.len()..].to_owned(), decode("ledger line", &bytes)?)))
            .collect()
    }

    fn usage_since(&self, tenant: &Tenant, since_ms: u64) -> Result<Vec<UsageRecord>, StoreError> {
        const OP: &str = "read usage";
        let txn = self.db.begin_read().map_err(|e| io(OP)(e.into()))?;
        let table = match txn.open_table(USAGE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(io(OP)(e.into())),
        };
        let start = format!("{tenant}{SEP}{since_ms:016}");
        let (_, end) = prefix_range(&format!("{tenant}{SEP}"));
        let mut found = Vec::new();
        for item in table.range(start.as_str()..end.as_str()).map_err(|e| io(OP)(e.into()))? {
            let (_, value) = item.map_err(|e| io(OP)(e.into()))?;
            found.push(decode("usage", value.value())?);
        }
        Ok(found)
    }

    async fn put_quotas(&self, tenant: &Tenant, quotas: &Quotas) -> Result<(), StoreError> {
        let bytes = encode("quotas", quotas)?;
        self.committer.write_async(put_op("write quotas", QUOTAS, tenant.to_string(), bytes)).await
    }

    fn get_quotas(&self, tenant: &Tenant) -> Result<Option<Quotas>, StoreError> {
        self.get("read quotas", QUOTAS, &tenant.to_string())?.map(|bytes| decode("quotas", &bytes)).transpose()
    }
}
