//! `cairn serve`: one long-running host that owns the project's store, with
//! an HTTP API (`/api/v1`, described at `/openapi.json`), server-sent event
//! streams, Prometheus metrics (`/metrics`) and a dashboard (`/`). A leaf:
//! nothing in the crate depends on it.
//!
//! At start it writes `.cairn/serve.token` (0600) and `.cairn/serve.json`
//! (`{url, pid, token_file}`), so that the CLI finds it; it resumes the runs
//! a stopped host left behind. On SIGTERM or SIGINT it takes no new runs,
//! lets the runs under way finish for the grace period, then stops the rest
//! so that they resume when a server starts again, and exits.

pub mod dashboard;

/// The API's request bodies and query strings as the handlers decode them
/// (their fields stay the handlers'): for checking decoders against them.
pub mod requests {
    pub use super::admin::{CacheClear, Gc, Retry, SecretValue};
    pub use super::runs::{JournalArgs, ListArgs, Resume, Submit};
    pub use super::tokens::NewToken;
    pub use super::usage::{SetQuota, UsageArgs};
}

mod admin;
mod auth;
mod error;
mod extract;
mod metrics;
mod runs;
mod tokens;
mod usage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use self::error::ApiError;
use crate::runner::Host;

/// Largest request body (a run's input is in it).
pub const MAX_BODY: usize = 8 << 20;

/// Where a running server is, as `.cairn/serve.json` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServeInfo {
    /// `http://ADDR`.
    pub url: String,
    /// The server's process id.
    pub pid: u32,
    /// The file holding its bearer token.
    pub token_file: PathBuf,
}

/// The file naming the project's server.
pub const INFO_FILE: &str = "serve.json";
/// The file holding its token.
pub const TOKEN_FILE: &str = "serve.token";

/// Errors of the server itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another with --listen ADDR")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file of the server could not be written.
    #[error("cannot write {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// How long runs under way may go on after a stop signal.
    pub grace: Duration,
    /// Claim and work on the store's runnable runs too (unless `--no-work`).
    pub work: Option<crate::runner::worker::WorkOptions>,
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    host: Arc<Host>,
    token: Arc<str>,
    /// Turns true when the server stops (event streams end then).
    closing: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<metrics::Metrics>,
}

#[derive(OpenApi)]
#[openapi(info(title = "Cairn", description = "Runs of WebAssembly tasks: submit, follow, inspect, cancel, resume."))]
struct ApiDoc;

/// The API's routes with their OpenAPI document, built from the same list.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(runs::submit, runs::list))
        .routes(routes!(runs::show))
        .routes(routes!(runs::journal))
        .routes(routes!(runs::logs))
        .routes(routes!(runs::report))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::resume))
        .routes(routes!(runs::import))
        .routes(routes!(runs::run_events))
        .routes(routes!(runs::all_events))
        .routes(routes!(admin::tasks))
        .routes(routes!(admin::status))
        .routes(routes!(admin::breakers))
        .routes(routes!(admin::pools))
        .routes(routes!(admin::dlq_list, admin::dlq_purge))
        .routes(routes!(admin::dlq_show, admin::dlq_remove))
        .routes(routes!(admin::dlq_retry))
        .routes(routes!(admin::cache_clear))
        .routes(routes!(admin::gc))
        .routes(routes!(admin::secrets_list))
        .routes(routes!(admin::secrets_put, admin::secrets_delete))
        .routes(routes!(tokens::create, tokens::list))
        .routes(routes!(tokens::revoke))
        .routes(routes!(usage::usage))
        .routes(routes!(usage::quota, usage::set))
        .routes(routes!(metrics::metrics))
        .split_for_parts()
}

/// The whole application over `state`.
fn app(state: AppState) -> Router {
    let (api, doc) = api();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    let protected = api.layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .merge(protected)
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc.to_string()) }),
        )
        .fallback(static_or_missing)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The dashboard's files; anything else is a JSON 404.
async fn static_or_missing(uri: Uri) -> Response {
    match dashboard::asset(uri.path()) {
        Some((content_type, bytes)) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        None if uri.path().starts_with("/api/") => {
            ApiError::not_found(format!("no route {}; the routes are listed at /openapi.json", uri.path()))
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ServerError> {
    let file = |source| ServerError::File { path: path.to_path_buf(), source };
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).map_err(file)?;
    std::fs::rename(&temp, path).map_err(file)
}

/// Reads `.cairn/serve.json` of a project, if a server wrote one.
pub fn read_info(state_dir: &Path) -> Option<ServeInfo> {
    serde_json::from_slice(&std::fs::read(state_dir.join(INFO_FILE)).ok()?).ok()
}

/// Serves `host` until SIGTERM or SIGINT, then stops gracefully. `ready` is
/// told where the server is once it listens.
pub async fn serve(host: Arc<Host>, options: ServeOptions, ready: impl FnOnce(&ServeInfo)) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let state_dir = host.manifest().state_dir();
    std::fs::create_dir_all(&state_dir).map_err(|source| ServerError::File { path: state_dir.clone(), source })?;
    let token = auth::new_token();
    let token_file = state_dir.join(TOKEN_FILE);
    auth::write_token(&token_file, &token).map_err(|source| ServerError::File { path: token_file.clone(), source })?;
    let info = ServeInfo { url: format!("http://{addr}"), pid: std::process::id(), token_file };
    write_file(&state_dir.join(INFO_FILE), &serde_json::to_vec_pretty(&info).unwrap_or_default())?;
    let (close, closing) = tokio::sync::watch::channel(false);
    let metrics = metrics::Metrics::start(&host);
    let state = AppState { host: host.clone(), token: Arc::from(token), closing, metrics };
    // What a stopped host left behind is taken up through claims, as many at once
    // as the server works on (or by the workers, under `--no-work`), so thousands
    // of such runs never keep it from new ones; a killed process's runs at once.
    // (A holder is `HOSTNAME-PID`: hosts sharing a store need names of their own, as
    // the workers' rows already assume.)
    let freeing = host.clone();
    host.spawn(async move {
        match freeing.free_leases_of_gone_hosts().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} run(s) left by a process that is gone are free to be taken up"),
            Err(e) => tracing::warn!("cannot look for runs left by a process that is gone: {e}"),
        }
    });
    ready(&info);
    let (stop_work, work_stopped) = tokio::sync::oneshot::channel::<()>();
    let working = options.work.clone().map(|work| {
        let host = host.clone();
        host.clone().spawn(async move {
            host.work(work, async move { drop(work_stopped.await) }).await;
        })
    });
    let stopping = {
        let host = host.clone();
        let work = options.work.clone();
        async move {
            stop_signal().await;
            let _ = stop_work.send(());
            if let Some(working) = working {
                drop(working.await);
            }
            tracing::info!("stopping: no new runs; runs under way have {:?} to finish", options.grace);
            let stopped = host.shutdown(options.grace).await;
            if let Some(work) = &work {
                host.stop_working(work).await;
            }
            if stopped > 0 {
                tracing::info!("{stopped} run(s) saved to resume when a server starts again");
            }
            let _ = close.send(true);
        }
    };
    // Requests are answered on a runtime of their own: the host's threads run
    // guests, and a spinning guest holds one for up to an epoch tick at a time.
    let api = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cairn-api")
        .enable_all()
        .build()
        .map_err(ServerError::Serve)?;
    let listener = {
        let _in_api = api.enter();
        tokio::net::TcpListener::from_std(listener.into_std().map_err(ServerError::Serve)?)
            .map_err(ServerError::Serve)?
    };
    let served = api.spawn(async move { axum::serve(listener, app(state)).with_graceful_shutdown(stopping).await });
    let served = served.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    api.shutdown_background();
    for file in [INFO_FILE, TOKEN_FILE] {
        let _ = std::fs::remove_file(state_dir.join(file));
    }
    host.save_pool_status(true);
    served.map_err(ServerError::Serve)
}

/// Waits for SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
