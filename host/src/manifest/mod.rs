//! `cairn.toml`: the project's manifest, parsed into typed, validated config.
//!
//! Every error names the file, the line and the key at fault. Settings that a
//! later version of Cairn will support (per-task `resources`) are recognised
//! and rejected with "not supported yet" rather than silently ignored.
//!
//! The manifest is checked section by section, each against the ones before:
//! the LLM providers (`providers`), then the environments (`environments`),
//! then the tasks (`tasks`); the `retries`, `circuit_breaker` and `cache`
//! values they share are read in `policies`.

mod environments;
mod policies;
mod providers;
mod retention;
pub mod reuse;
mod tasks;
pub mod tenants;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::locate::{Location, Locator};
use crate::llm::mock::MockConfig;
use crate::model::{Tenant, TenantError};
use crate::policy::breaker::BreakerConfig;
use crate::policy::retry::RetryPolicy;
pub use retention::Retention;
pub use reuse::ReusePolicy;

/// Durations and sizes as config files write them; kept here for
/// `manifest::units` users, it lives in [`crate::config::units`].
pub use crate::config::units;

/// The file name Cairn looks for.
pub const MANIFEST_FILE: &str = "cairn.toml";
/// The environment a task belongs to when it names none.
pub const DEFAULT_ENVIRONMENT: &str = "default";
/// The provider used when neither the manifest's `[llm] default` nor a task names one.
pub const DEFAULT_PROVIDER: &str = "mock";

/// Errors from finding, reading or validating a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No manifest in the directory or its parents.
    #[error("no {MANIFEST_FILE} found in {} or any parent directory; pass --manifest PATH or create one", .0.display())]
    NotFound(PathBuf),
    /// The file cannot be read.
    #[error("cannot read manifest {}: {source}", path.display())]
    Read {
        /// The manifest's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("{}:{line}:{column}: {message}\n    {snippet}", path.display())]
    Invalid {
        /// The manifest's path.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and how to fix it.
        message: String,
        /// The offending line's text.
        snippet: String,
    },
}

impl ManifestError {
    /// The [`ManifestError::Invalid`] at the byte `span` of the manifest `locate` reads.
    fn at(locate: &Locator, span: Range<usize>, message: String) -> Self {
        let Location { line, column, snippet } = locate.locate(span.start);
        ManifestError::Invalid { path: locate.path().to_path_buf(), line, column, message, snippet }
    }
}

/// Resource limits of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// Linear memory limit of the guest, in bytes.
    pub memory: u64,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Largest output (JSON text) a task may return, in bytes.
    pub max_output: u64,
    /// Largest input (JSON text) a run of it, or a child it submits, may have.
    pub max_input: u64,
    /// Largest report (its tabs' names and HTML together) a run may write.
    pub max_report: u64,
    /// Bytes a run may record in its journal, all attempts together (LLM
    /// answers, traced steps, children; outputs, summaries and names).
    pub max_journal: u64,
    /// Children one run may submit.
    pub max_children: u32,
    /// How far below its top-level run a child may sit (a top-level run's
    /// children are at depth 1).
    pub max_depth: u32,
    /// Runs a tree may hold below its top-level run, all depths together
    /// (each submission is held to its submitting run's environment's).
    pub max_descendants: u64,
    /// Handles an instance may hold at once in its resource table: open
    /// files and directories (each a host descriptor), streams, pollables,
    /// pending children and groups.
    pub max_handles: u32,
    /// Files and directories an instance may hold open at once (each a
    /// descriptor of the host's process).
    pub max_open_files: u32,
    /// Bytes the files of a run's directory may take (the larger of a file's
    /// length and its allocated blocks; a warm instance's directory over all
    /// the calls it serves).
    pub max_disk: u64,
    /// Entries (files, directories, links) a run's directory may hold.
    pub max_files: u32,
    /// Largest body of an outbound HTTP request.
    pub max_http_request: u64,
    /// Largest body of an outbound HTTP request's response.
    pub max_http_response: u64,
    /// Time an outbound HTTP request may take, from sending its first byte
    /// to reading the last of its response.
    pub http_timeout: Duration,
    /// Bytes of files one attempt may store in the blob store (the files
    /// its output and its children's inputs refer to).
    pub max_blobs: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory: 256 << 20,
            timeout: Duration::from_secs(300),
            max_output: 1 << 20,
            max_input: 1 << 20,
            max_report: 16 << 20,
            max_journal: 64 << 20,
            max_children: 10_000,
            max_depth: 16,
            max_descendants: 100_000,
            max_handles: 16_384,
            max_open_files: 256,
            max_disk: 1 << 30,
            max_files: 10_000,
            max_http_request: 8 << 20,
            max_http_response: 8 << 20,
            http_timeout: Duration::from_secs(30),
            max_blobs: 4 << 30,
        }
    }
}

/// Whether and how finished results are reused by later runs with the same input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// Every run runs (the default).
    #[default]
    Disable,
    /// Reuse while the component (its sha256) is unchanged.
    Auto,
    /// Reuse while this author-chosen version is unchanged.
    Version(String),
}

/// A secret that an environment's tasks may read.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretDecl {
    /// Key in the secret store.
    pub key: String,
    /// Also expose the value as this WASI environment variable.
    pub as_env_var: Option<String>,
    /// Bound to outbound HTTP: the value goes only into request headers
    /// (`{{secret:KEY}}`) to these destinations, and never to the task itself.
    pub hosts: Option<std::sync::Arc<crate::sandbox::outbound::AllowList>>,
}

/// Settings shared by a group of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// The environment's name.
    pub name: String,
    /// Limits of each attempt.
    pub resources: Resources,
    /// Secrets its tasks may read.
    pub secrets: std::sync::Arc<[SecretDecl]>,
    /// LLM provider its tasks call, unless a task overrides it.
    pub llm: Option<String>,
    /// Result cache of its tasks, unless a task overrides it.
    pub cache: CachePolicy,
    /// Warm, reusable instances; `None` gives every attempt a fresh instance.
    pub reuse: Option<ReusePolicy>,
    /// Environments loaded and warmed together with this one.
    pub depends_on: Vec<String>,
    /// Where its tasks' outbound HTTP requests may go (`allowed_outbound_hosts`;
    /// empty, the default: nowhere).
    pub outbound: std::sync::Arc<crate::sandbox::outbound::AllowList>,
}

/// How `cairn build` produces a task's component.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildSpec {
    /// Shell command, run in the manifest's directory.
    pub command: String,
    /// What the command produces: a core wasm module (componentized by
    /// `cairn build`) or a component. Defaults to the task's `component`.
    pub output: PathBuf,
}

/// One task of the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The task's name.
    pub name: String,
    /// Path of the component, resolved against the manifest's directory.
    pub component: PathBuf,
    /// Line of the `component` key, for error messages.
    pub component_line: usize,
    /// How to build it, if the manifest says.
    pub build: Option<BuildSpec>,
    /// Name of its environment.
    pub environment: String,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Tasks tried in order once this one's retries are spent or its breaker is open.
    pub fallback: Vec<String>,
    /// The task's circuit breaker, if it has one.
    pub circuit_breaker: Option<BreakerConfig>,
    /// Retry out-of-memory failures with more memory.
    pub on_oom: Option<OomPolicy>,
    /// LLM provider override.
    pub llm: Option<String>,
    /// Cache override.
    pub cache: Option<CachePolicy>,
    /// The folder of its recorded runs (cassettes) that `cairn test` replays.
    pub cassettes: Option<PathBuf>,
}

/// `on_oom = { grow = 2.0, max = "2GiB" }`: after an out-of-memory failure,
/// the next attempt gets `grow` times the memory, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OomPolicy {
    /// Factor applied to the memory limit.
    pub grow: f64,
    /// Largest memory limit, in bytes.
    pub max: u64,
}

/// Configuration of one LLM provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    /// The embedded deterministic mock.
    Mock(MockConfig),
    /// Any OpenAI-compatible chat-completions endpoint.
    OpenAiCompatible {
        /// e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// Default model.
        model: String,
        /// Secret holding the API key, if the endpoint needs one.
        api_key_secret: Option<String>,
        /// Per-request timeout.
        timeout: Duration,
    },
}

/// A named LLM provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    /// Its name in the manifest.
    pub name: String,
    /// What it is.
    pub kind: ProviderKind,
    /// Provider-level retries of retryable errors.
    pub max_retries: u32,
    /// A full retry policy (`retries = { … }`), replacing `max_retries`'s default backoff.
    pub retry: Option<RetryPolicy>,
    /// Providers tried in order when this one fails or its breaker is open.
    pub fallback: Vec<String>,
    /// The provider's circuit breaker, if it has one.
    pub circuit_breaker: Option<BreakerConfig>,
    /// What its model costs (`price = { input, output }`, dollars per million tokens).
    pub price: Option<crate::model::Price>,
    /// The answer length asked for when a call names none and a budget must bound it.
    pub max_tokens: u32,
}

/// A parsed, validated `cairn.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its directory: relative paths resolve against it, `.cairn/` lives in it.
    pub dir: PathBuf,
    /// Where state lives instead of `.cairn/`, if somewhere else.
    state_dir: Option<PathBuf>,
    /// Provider used when an environment or task names none.
    pub default_provider: String,
    /// LLM providers by name (always contains `mock`).
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Environments by name (always contains `default`).
    pub environments: BTreeMap<String, Environment>,
    /// Tasks by name.
    pub tasks: BTreeMap<String, TaskSpec>,
    /// How long finished runs are kept.
    pub retention: Retention,
    /// Where the runs are stored: `None` for the embedded redb file in
    /// `.cairn/`, or a PostgreSQL URL (from the manifest's `store` key, or
    /// set by `--store` / `CAIRN_STORE`).
    pub store: Option<StoreSetting>,
    /// The tenant commands act as when none is named (`tenant =
    /// "project/domain"`, or the CLI's `--project`/`--domain`); `None`:
    /// `default/development`, or, through a server, the token's tenant.
    pub tenant: Option<Tenant>,
    /// Each tenant's quotas (`[tenants."project/domain"]`).
    pub quotas: BTreeMap<Tenant, crate::model::Quotas>,
    /// The operator's own list of outbound HTTP destinations
    /// (`CAIRN_OUTBOUND_HOSTS`), which every environment's is cut down to;
    /// `None`: the environments' lists apply as written.
    pub operator_outbound: Option<std::sync::Arc<crate::sandbox::outbound::AllowList>>,
    /// `[blobs] dir`: the blob store's directory, if not `.cairn/blobs`.
    pub blobs_dir: Option<PathBuf>,
}

/// A store other than the embedded default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSetting {
    /// `postgres://USER@HOST:PORT/DATABASE`.
    pub url: String,
    /// Whether it came from the manifest file (which must not hold a password).
    pub from_file: bool,
}

/// Whether `url` names a store: `redb`, or a `postgres://` (`postgresql://`) URL.
fn store_url_ok(url: &str) -> bool {
    url == "redb" || url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The manifest's `store` value: `"redb"` (the default) or a PostgreSQL URL
/// without a password.
fn store_setting(url: &str) -> Result<Option<StoreSetting>, String> {
    if !store_url_ok(url) {
        return Err(format!(
            "`store` is \"redb\" (the embedded default) or a PostgreSQL URL such as \"postgres://cairn@db.internal:5432/cairn\", not {url:?}"
        ));
    }
    if url == "redb" {
        return Ok(None);
    }
    let userinfo = url.split_once("://").and_then(|(_, rest)| rest.split_once('@')).map(|(info, _)| info);
    if userinfo.is_some_and(|info| info.contains(':')) || url.contains("password=") {
        return Err("`store` must not carry a password (the manifest is a file others read): remove it and set CAIRN_STORE_PASSWORD (or PGPASSWORD) in the environment".into());
    }
    Ok(Some(StoreSetting { url: url.to_owned(), from_file: true }))
}

impl Manifest {
    /// `tenant`'s quotas: the manifest's, with `stored` (`cairn quota set`) over them.
    pub fn quotas_of(&self, tenant: &Tenant, stored: Option<&crate::model::Quotas>) -> crate::model::Quotas {
        let ours = self.quotas.get(tenant).cloned().unwrap_or_default();
        match stored {
            Some(stored) => ours.overridden_by(stored),
            None => ours,
        }
    }

    /// Points the manifest at another store (`--store`, `CAIRN_STORE`):
    /// `redb` for the embedded file, or a PostgreSQL URL.
    pub fn set_store(&mut self, url: &str) -> Result<(), String> {
        if !store_url_ok(url) {
            return Err(format!(
                "--store (or CAIRN_STORE) is `redb` or a PostgreSQL URL postgres://USER@HOST:PORT/DATABASE, not {url:?}"
            ));
        }
        self.store = (url != "redb").then(|| StoreSetting { url: url.to_owned(), from_file: false });
        Ok(())
    }

    /// Finds `cairn.toml` in `start` or its nearest parent.
    pub fn discover(start: &Path) -> Result<PathBuf, ManifestError> {
        start
            .ancestors()
            .map(|dir| dir.join(MANIFEST_FILE))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| ManifestError::NotFound(start.to_path_buf()))
    }

    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, &text)
    }

    /// Parses manifest text; `path` is used for error messages and to resolve paths.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let locate = Locator::new(path, text);
        let raw: raw::Manifest = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ManifestError::at(&locate, span, e.message().to_owned())
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        raw.validate(&locate, dir)
    }

    /// The task named `name`, or an error listing the known ones.
    pub fn task(&self, name: &str) -> Result<&TaskSpec, String> {
        self.tasks.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.tasks.keys().map(String::as_str).collect();
            format!(
                "no task named {name:?} in {}; known tasks: {}",
                self.path.display(),
                if known.is_empty() { "(none)".to_owned() } else { known.join(", ") }
            )
        })
    }

    /// The environment of a task (always present after validation).
    pub fn environment_of(&self, task: &TaskSpec) -> &Environment {
        &self.environments[&task.environment]
    }

    /// The provider a task calls: task override, then environment, then the default.
    pub fn provider_of(&self, task: &TaskSpec) -> &ProviderSpec {
        let name = task.llm.as_deref().or(self.environment_of(task).llm.as_deref()).unwrap_or(&self.default_provider);
        &self.providers[name]
    }

    /// The cache policy of a task: its own, else its environment's.
    pub fn cache_of<'a>(&'a self, task: &'a TaskSpec) -> &'a CachePolicy {
        task.cache.as_ref().unwrap_or(&self.environment_of(task).cache)
    }

    /// The tasks of environment `name`, by name.
    pub fn tasks_in<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TaskSpec> + 'a {
        self.tasks.values().filter(move |task| task.environment == name)
    }

    /// `name` and every environment it depends on, directly or not, each once,
    /// dependencies first.
    pub fn environment_closure(&self, name: &str) -> Vec<String> {
        fn visit(manifest: &Manifest, name: &str, out: &mut Vec<String>) {
            if out.iter().any(|seen| seen == name) {
                return;
            }
            if let Some(env) = manifest.environments.get(name) {
                for dependency in &env.depends_on {
                    visit(manifest, dependency, out);
                }
                out.push(name.to_owned());
            }
        }
        let mut out = Vec::new();
        visit(self, name, &mut out);
        out
    }

    /// The `.cairn/` state directory next to the manifest (or the one
    /// [`Manifest::with_state_dir`] put elsewhere).
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| self.dir.join(".cairn"))
    }

    /// The blob store's directory: `[blobs] dir`, else `.cairn/blobs`.
    pub fn blobs_dir(&self) -> PathBuf {
        self.blobs_dir.clone().unwrap_or_else(|| self.state_dir().join("blobs"))
    }

    /// This manifest with its state (store, run directories, compiled
    /// components) kept in `dir`: a scratch host, e.g. `cairn test`'s.
    pub fn with_state_dir(mut self, dir: PathBuf) -> Manifest {
        self.state_dir = Some(dir);
        self
    }
}

/// `cairn.toml` as written, before cross-references are checked. Each
/// section's types are in its own module's `raw`; they keep the names serde
/// shows in errors ("expected struct Task").
mod raw {
    use super::*;

    /// The whole file as written.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Manifest {
        #[serde(default)]
        pub llm: providers::raw::Llm,
        #[serde(default)]
        pub environments: BTreeMap<String, Spanned<environments::raw::Environment>>,
        #[serde(default)]
        pub tasks: BTreeMap<String, Spanned<tasks::raw::Task>>,
        #[serde(default)]
        pub retention: Option<Spanned<retention::raw::Retention>>,
        #[serde(default)]
        pub store: Option<Spanned<String>>,
        #[serde(default)]
        pub tenant: Option<Spanned<String>>,
        #[serde(default)]
        pub tenants: BTreeMap<Spanned<String>, Spanned<tenants::raw::TenantQuotas>>,
        #[serde(default)]
        pub blobs: Option<Blobs>,
    }

    /// `[blobs]` as written.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Blobs {
        /// Where the blob store is (relative to the manifest's directory).
        pub dir: PathBuf,
    }

    impl Manifest {
        /// Checks the sections in order, each against the ones before:
        /// providers, environments (which name providers), tasks (which name both).
        pub fn validate(self, locate: &Locator, dir: PathBuf) -> Result<super::Manifest, ManifestError> {
            let (default_provider, providers) = providers::validate(self.llm, locate, &dir)?;
            let environments = environments::validate(self.environments, locate, &providers)?;
            let tasks = tasks::validate(self.tasks, locate, &dir, &providers, &environments)?;
            let retention = retention::validate(self.retention, locate)?;
            let store = match self.store {
                None => None,
                Some(url) => {
                    let span = url.span();
                    let url = url.into_inner();
                    match super::store_setting(&url) {
                        Ok(setting) => setting,
                        Err(message) => return Err(ManifestError::at(locate, span, message)),
                    }
                }
            };
            let tenant = match self.tenant {
                None => None,
                Some(name) => {
                    let span = name.span();
                    let parsed = name.into_inner().parse();
                    Some(parsed.map_err(|e: TenantError| ManifestError::at(locate, span, e.to_string()))?)
                }
            };
            let quotas = tenants::validate(self.tenants, locate)?;
            let path = locate.path().to_path_buf();
            let blobs_dir = self.blobs.map(|blobs| dir.join(blobs.dir));
            Ok(super::Manifest {
                path,
                dir,
                state_dir: None,
                default_provider,
                providers,
                environments,
                tasks,
                retention,
                store,
                tenant,
                quotas,
                operator_outbound: None,
                blobs_dir,
            })
        }
    }
}

#[cfg(test)]
mod tests;
