//! Who may do what, in the embedded store: API tokens.

use super::*;
use crate::model::ApiToken;
use crate::store::TokenStore;

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
