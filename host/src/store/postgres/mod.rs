//! The store on PostgreSQL: what a deployment moves to when it outgrows
//! one machine. Any number of hosts (`cairn worker`, `cairn serve`) share
//! one database: they claim runs with `FOR UPDATE SKIP LOCKED` under fenced
//! leases (see [`crate::model::Fence`]), and every run's journal, breaker,
//! dead letter and cached result is one row that all of them see.
//!
//! The parts: [`schema`] (versioned migrations, applied on open), [`runs`]
//! (runs, claims and leases) and [`roles`] (the other role traits, one impl each), [`journal`] (journal records from many
//! concurrent attempts batched into one transaction, the way the redb store's
//! group commit batches them), [`listen`] (LISTEN/NOTIFY: idle hosts wake
//! when work appears) and [`rows`] (how records map to rows).
//!
//! The store runs its client on a small tokio runtime of its own. Async
//! writes are spawned there and awaited from any runtime; the role traits'
//! synchronous reads send their query there and wait for the answer on a
//! channel, so they work from inside and outside any runtime, a
//! single-threaded one included. A lost connection (a restarted server, a
//! network blip) is retried with backoff for up to [`RECONNECT_FOR`], so a
//! restart of PostgreSQL costs the hosts a pause, not their runs.

mod access;
mod dlq;
mod journal;
mod listen;
mod roles;
mod rows;
mod runs;
pub mod schema;
pub mod testing;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use super::StoreError;

/// How long a failing connection is retried before an operation gives up
/// with [`StoreError::Unavailable`].
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// Connections a host keeps open at most.
pub const POOL_SIZE: usize = 16;
/// Environment variables the password is read from, in order (the
/// manifest's store URL must not carry one).
pub const PASSWORD_VARS: [&str; 2] = ["CAIRN_STORE_PASSWORD", "PGPASSWORD"];

/// The store on a PostgreSQL database.
pub struct PgStore {
    /// The client's runtime (see the module's documentation).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// `host:port/database`, for messages (never the password).
    server: Arc<str>,
    /// Journal records waiting for the batcher.
    journal: journal::Batcher,
    /// Woken by NOTIFY (see [`crate::store::ExecutorStore::work_signal`]).
    work: Arc<tokio::sync::Notify>,
    /// Cancel requests heard (see [`crate::store::ExecutorStore::cancel_requests`]).
    cancels: tokio::sync::broadcast::Sender<String>,
    /// How long a lost connection is retried ([`RECONNECT_FOR`] unless told otherwise).
    patience: Duration,
    /// Keeps the LISTEN connection alive.
    _listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self._listener.abort();
        // A runtime may not be dropped (blocking) inside another's context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`),
    /// with the password from [`PASSWORD_VARS`] when the URL has none, and
    /// brings its schema up to date. `allow_password_in_url` is false for a
    /// URL from the manifest, which is a file and must not hold a secret.
    pub fn connect(url: &str, allow_password_in_url: bool) -> Result<Self, StoreError> {
        Self::connect_with_patience(url, allow_password_in_url, RECONNECT_FOR)
    }

    /// [`PgStore::connect`], retrying a server that cannot be reached for
    /// `patience` (at the open and at every operation) instead of [`RECONNECT_FOR`].
    pub fn connect_with_patience(
        url: &str,
        allow_password_in_url: bool,
        patience: Duration,
    ) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Open {
            path: redact(url),
            message: format!("not a PostgreSQL URL ({e}); write it as postgres://USER@HOST:PORT/DATABASE"),
        })?;
        if config.get_password().is_some() && !allow_password_in_url {
            return Err(StoreError::Open {
                path: redact(url),
                message: format!(
                    "the store URL in the manifest carries a password; remove it and set {} in the environment instead",
                    PASSWORD_VARS[0]
                ),
            });
        }
        if config.get_password().is_none()
            && let Some(password) = PASSWORD_VARS.iter().find_map(|var| std::env::var(var).ok())
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("cairn");
        let server: Arc<str> = Arc::from(describe(&config).as_str());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Open {
                path: server.to_string(),
                message: format!("cannot start a runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = {
            let _inside = handle.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(Duration::from_secs(5)))
                .wait_timeout(Some(Duration::from_secs(30)))
                .build()
                .map_err(|e| StoreError::Open { path: server.to_string(), message: e.to_string() })?
        };
        // The schema first: a server that cannot be reached fails the open at once.
        let migrate = retrying(pool.clone(), server.clone(), patience, "open the store", {
            let server = server.clone();
            move |mut client| {
                let server = server.clone();
                async move { schema::migrate(&mut client, &server).await.map_err(Failed::Store) }
            }
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move { drop(tx.send(migrate.await)) });
        rx.recv().map_err(|_| stopped(&server))??;
        let work = Arc::new(tokio::sync::Notify::new());
        let (cancels, _) = tokio::sync::broadcast::channel(1024);
        let listener = handle.spawn(listen::run(config, work.clone(), cancels.clone(), server.clone()));
        let journal = journal::Batcher::start(&handle, pool.clone(), server.clone(), patience);
        Ok(PgStore {
            runtime: Some(runtime),
            handle,
            pool,
            server,
            journal,
            work,
            cancels,
            patience,
            _listener: listener,
        })
    }

    /// Where the server is, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Runs `op` (with a pooled client) on the store's runtime and waits for
    /// it from this thread, retrying a lost connection. For the synchronous reads.
    fn read<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(deadpool_postgres::Object) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Failed>> + Send + 'static,
    {
        let work = retrying(self.pool.clone(), self.server.clone(), self.patience, what, op);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move { drop(tx.send(work.await)) });
        rx.recv().map_err(|_| stopped(&self.server))?
    }

    /// Runs `op` (with a pooled client) on the store's runtime, retrying a
    /// lost connection. For the async writes.
    async fn write<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(deadpool_postgres::Object) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, Failed>> + Send + 'static,
    {
        let work = retrying(self.pool.clone(), self.server.clone(), self.patience, what, op);
        self.handle.spawn(work).await.map_err(|_| stopped(&self.server))?
    }

    /// Tells every host listening (this one through [`listen`]) that run `id`
    /// is to be cancelled. Sent after the write's commit, not awaited.
    fn announce_cancel(&self, id: &str) {
        let (pool, id) = (self.pool.clone(), id.to_owned());
        self.handle.spawn(async move {
            if let Ok(client) = pool.get().await {
                drop(client.execute("SELECT pg_notify($1, $2)", &[&listen::CANCEL_CHANNEL, &id]).await);
            }
        });
    }

    /// Tells every host listening that runnable work may have appeared. Sent
    /// after the write's commit, on a connection of its own, not awaited.
    fn announce_work(&self) {
        self.work.notify_waiters();
        let pool = self.pool.clone();
        self.handle.spawn(async move {
            if let Ok(client) = pool.get().await {
                drop(client.execute("SELECT pg_notify($1, '')", &[&listen::WORK_CHANNEL]).await);
            }
        });
    }
}

/// How an operation on a client failed: in the database (maybe to be
/// retried), or for a reason of the store's own (a fence, a decode), final.
#[derive(Debug)]
pub(crate) enum Failed {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Failed::Pg(e)
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Store(e)
    }
}

/// Runs `op` with a pooled client, retrying for up to [`RECONNECT_FOR`]
/// while the server cannot be reached (or a transaction lost a
/// serialization race). Every `op` is safe to repeat: a write whose commit
/// was lost with the connection is written again, to the same effect.
async fn retrying<T, F, Fut>(
    pool: Pool,
    server: Arc<str>,
    patience: Duration,
    what: &'static str,
    op: F,
) -> Result<T, StoreError>
where
    F: Fn(deadpool_postgres::Object) -> Fut,
    Fut: Future<Output = Result<T, Failed>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(20);
    loop {
        let error = match pool.get().await {
            Ok(client) => match op(client).await {
                Ok(value) => return Ok(value),
                Err(Failed::Pg(e)) => classify(what, &server, e),
                Err(Failed::Store(e)) => return Err(e),
            },
            Err(e) => pool_error(what, &server, e),
        };
        let again = matches!(error, StoreError::Unavailable { .. });
        if !again || started.elapsed() >= patience {
            return Err(error);
        }
        tracing::warn!("{what}: {error}; retrying in {wait:?}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// Maps a client error: a lost or refused connection (or a lost
/// serialization race) is [`StoreError::Unavailable`], to be retried; the
/// rest is the statement's failure.
fn classify(what: &'static str, server: &str, e: tokio_postgres::Error) -> StoreError {
    let transient = match e.code() {
        None => true,
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
    };
    let message = match e.as_db_error() {
        Some(db) => db.to_string(),
        None => e.to_string(),
    };
    if transient {
        StoreError::Unavailable { server: server.to_owned(), message: format!("{what}: {message}") }
    } else {
        StoreError::Io { operation: what, message: format!("{message} (on {server})") }
    }
}

fn pool_error(what: &'static str, server: &str, e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(what, server, e),
        other => StoreError::Unavailable { server: server.to_owned(), message: format!("{what}: {other}") },
    }
}

fn stopped(server: &str) -> StoreError {
    StoreError::Io { operation: "reach the store", message: format!("the client of {server} has stopped") }
}

/// `host:port/database` of a configuration.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("postgres"))
}

/// A URL with any password masked, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}
