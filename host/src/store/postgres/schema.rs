//! The database's schema: numbered migrations, each applied once, in order,
//! in one transaction that holds an advisory lock, so hosts starting
//! together never apply one twice. A database migrated by a newer cairn is
//! refused, as the redb store refuses a newer file.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The migrations: (version, name, SQL). Append only; never edit one that shipped.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "runs_journal_and_state", include_str!("migrations/V1__runs_journal_and_state.sql")),
    (2, "cancel_requests", include_str!("migrations/V2__cancel_requests.sql")),
    (3, "tenancy", include_str!("migrations/V3__tenancy.sql")),
];

/// The schema version this build brings a database to.
pub fn current_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Key of the advisory lock migrations hold ("cairn" in ASCII).
const LOCK: i64 = 0x63_61_69_72_6e;

/// Applies the migrations the database lacks; returns the versions applied.
pub async fn migrate(client: &mut Client, server: &str) -> Result<Vec<i32>, StoreError> {
    let failed = |e: tokio_postgres::Error| super::classify("migrate the schema", server, e);
    let txn = client.transaction().await.map_err(failed)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(failed)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS cairn_schema (
            version    integer PRIMARY KEY,
            name       text    NOT NULL,
            applied_at bigint  NOT NULL
        )",
    )
    .await
    .map_err(failed)?;
    let found: Option<i32> = txn.query_one("SELECT max(version) FROM cairn_schema", &[]).await.map_err(failed)?.get(0);
    let found = found.unwrap_or(0);
    if found > current_version() {
        return Err(StoreError::NewerSchema {
            path: server.to_owned(),
            found: found as u64,
            supported: current_version() as u64,
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        txn.batch_execute(sql).await.map_err(|e| StoreError::Io {
            operation: "migrate the schema",
            message: format!("migration {version} ({name}) failed on {server}: {e}"),
        })?;
        txn.execute(
            "INSERT INTO cairn_schema (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &(crate::model::now_ms() as i64)],
        )
        .await
        .map_err(failed)?;
        applied.push(*version);
    }
    txn.commit().await.map_err(failed)?;
    if !applied.is_empty() {
        tracing::info!("schema of {server} migrated to version {}", current_version());
    }
    Ok(applied)
}
