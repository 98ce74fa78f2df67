//! Who may do what, on PostgreSQL: API tokens.

use super::PgStore;
use super::rows::{decode, encode, first, read_texts, tenant_key, write_texts};
use crate::model::{ApiToken, Tenant};
use crate::store::{StoreError, TokenStore};

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
