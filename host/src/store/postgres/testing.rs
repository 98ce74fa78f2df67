//! For tests (the crate's and the end-to-end suite's): a fresh database per
//! test on the PostgreSQL server the test run provides (`./x test` starts a
//! private cluster and sets [`ENV`]).

use super::PgStore;

/// The server's admin URL (no password; the password, if any, in
/// `CAIRN_STORE_PASSWORD`).
pub const ENV: &str = "CAIRN_TEST_POSTGRES";

/// The admin URL, or a panic that says how to get one.
pub fn server_url() -> String {
    std::env::var(ENV).unwrap_or_else(|_| {
        panic!(
            "the PostgreSQL tests need a server: run them through `./x test` (it starts a private cluster), or start one with `./x postgres` and set {ENV}"
        )
    })
}

/// A client configuration for `url`, with the password from the
/// environment as the store takes it.
pub fn config(url: &str) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    if config.get_password().is_none()
        && let Some(password) = super::PASSWORD_VARS.iter().find_map(|var| std::env::var(var).ok())
    {
        config.password(password);
    }
    config
}

/// Creates an empty database on the test server; returns its URL.
pub fn fresh_database() -> String {
    let admin = server_url();
    let name = format!("cairn_t_{}", uuid::Uuid::new_v4().simple());
    let config = config(&admin);
    // On a thread of its own: the caller may be inside a runtime.
    let create = format!("CREATE DATABASE {name}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        runtime.block_on(async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("the test server answers");
            let driver = tokio::spawn(connection);
            client.batch_execute(&create).await.expect("a test database");
            drop(client);
            drop(driver.await);
        });
    })
    .join()
    .expect("the test database is made");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// A store on a fresh database.
pub fn fresh_store() -> PgStore {
    PgStore::connect(&fresh_database(), true).expect("the test database opens")
}
