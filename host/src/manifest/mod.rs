//! `cairn.toml`: the project's manifest, parsed into typed, validated config.
//!
//! Every error names the file, the line and the key at fault. Settings that a
//! later version of Cairn will support (per-task `resources`) are recognised
//! and rejected with "not supported yet" rather than silently ignored.

pub mod reuse;
pub mod units;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::llm::mock::{MockConfig, MockRule};
use crate::policy::breaker::BreakerConfig;
use crate::policy::retry::{Jitter, RetryPolicy, Strategy};
pub use reuse::ReusePolicy;

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

/// Resource limits of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// Linear memory limit of the guest, in bytes.
    pub memory: u64,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Largest output (JSON text) a task may return, in bytes.
    pub max_output: u64,
}

impl Default for Resources {
    fn default() -> Self {
        Resources { memory: 256 << 20, timeout: Duration::from_secs(300), max_output: 1 << 20 }
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
}

/// A parsed, validated `cairn.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its directory: relative paths resolve against it, `.cairn/` lives in it.
    pub dir: PathBuf,
    /// Provider used when an environment or task names none.
    pub default_provider: String,
    /// LLM providers by name (always contains `mock`).
    pub providers: BTreeMap<String, ProviderSpec>,
    /// Environments by name (always contains `default`).
    pub environments: BTreeMap<String, Environment>,
    /// Tasks by name.
    pub tasks: BTreeMap<String, TaskSpec>,
}

impl Manifest {
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
        let locate = Locator { path, text };
        let raw: raw::Manifest = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            locate.error(span, e.message().to_owned())
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        raw.validate(&locate, path, dir)
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

    /// The `.cairn/` state directory next to the manifest.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(".cairn")
    }
}

/// Turns byte spans into file:line:column errors.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text[..offset].matches('\n').count() + 1
    }

    fn error(&self, span: Range<usize>, message: String) -> ManifestError {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        ManifestError::Invalid {
            path: self.path.to_path_buf(),
            line: self.line_of(start),
            column: self.text[line_start..start].chars().count() + 1,
            message,
            snippet: self.text[line_start..line_end].trim_end().to_owned(),
        }
    }
}

/// The manifest as written, before cross-references are checked.
mod raw {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Manifest {
        #[serde(default)]
        pub llm: Llm,
        #[serde(default)]
        pub environments: BTreeMap<String, Spanned<Environment>>,
        #[serde(default)]
        pub tasks: BTreeMap<String, Spanned<Task>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Llm {
        pub default: Option<Spanned<String>>,
        #[serde(default)]
        pub providers: BTreeMap<String, Spanned<Provider>>,
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
    pub enum Provider {
        Mock {
            #[serde(default, deserialize_with = "units::opt_duration")]
            latency: Option<Duration>,
            model: Option<String>,
            script: Option<Spanned<PathBuf>>,
            rules: Option<Vec<MockRule>>,
            #[serde(default)]
            max_retries: u32,
            retries: Option<toml::Value>,
            #[serde(default)]
            fallback: Vec<String>,
            circuit_breaker: Option<RawBreaker>,
        },
        OpenaiCompatible {
            base_url: String,
            model: String,
            api_key_secret: Option<String>,
            #[serde(default, deserialize_with = "units::opt_duration")]
            timeout: Option<Duration>,
            max_retries: Option<u32>,
            retries: Option<toml::Value>,
            #[serde(default)]
            fallback: Vec<String>,
            circuit_breaker: Option<RawBreaker>,
        },
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawBreaker {
        failure_threshold: Option<u32>,
        success_threshold: Option<u32>,
        #[serde(default, deserialize_with = "units::opt_duration")]
        timeout: Option<Duration>,
    }

    impl RawBreaker {
        fn config(self) -> BreakerConfig {
            let defaults = BreakerConfig::default();
            BreakerConfig {
                failure_threshold: self.failure_threshold.unwrap_or(defaults.failure_threshold).max(1),
                success_threshold: self.success_threshold.unwrap_or(defaults.success_threshold).max(1),
                timeout: self.timeout.unwrap_or(defaults.timeout),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawRetry {
        count: u32,
        #[serde(default)]
        strategy: Strategy,
        #[serde(default, deserialize_with = "units::opt_duration")]
        base_delay: Option<Duration>,
        #[serde(default, deserialize_with = "units::opt_duration")]
        max_delay: Option<Duration>,
        #[serde(default)]
        jitter: Jitter,
        retry_on: Option<Vec<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RawOom {
        grow: f64,
        #[serde(deserialize_with = "units::size")]
        max: u64,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Resources {
        #[serde(default, deserialize_with = "units::opt_size")]
        pub memory: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_duration")]
        pub timeout: Option<Duration>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_output: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Secret {
        Key(String),
        Full { key: String, as_env_var: Option<String> },
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Environment {
        #[serde(default)]
        pub resources: Resources,
        #[serde(default)]
        pub secrets: Vec<Secret>,
        pub llm: Option<Spanned<String>>,
        pub cache: Option<Spanned<toml::Value>>,
        pub reuse: Option<Spanned<toml::Value>>,
        #[serde(default)]
        pub depends_on: Vec<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Build {
        Command(String),
        Full { command: String, output: Option<PathBuf> },
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Task {
        pub component: Spanned<PathBuf>,
        pub build: Option<Build>,
        pub environment: Option<Spanned<String>>,
        pub retries: Option<Spanned<toml::Value>>,
        pub llm: Option<Spanned<String>>,
        pub resources: Option<Spanned<toml::Value>>,
        pub cache: Option<Spanned<toml::Value>>,
        #[serde(default)]
        pub fallback: Vec<Spanned<String>>,
        pub circuit_breaker: Option<RawBreaker>,
        pub on_oom: Option<Spanned<toml::Value>>,
    }

    fn cache_policy(locate: &Locator, value: &Spanned<toml::Value>, owner: &str) -> Result<CachePolicy, ManifestError> {
        let bad = || {
            locate
                .error(value.span(), format!("{owner}: cache must be \"auto\", \"disable\" or {{ version = \"...\" }}"))
        };
        match value.get_ref() {
            toml::Value::String(mode) if mode == "auto" => Ok(CachePolicy::Auto),
            toml::Value::String(mode) if mode == "disable" => Ok(CachePolicy::Disable),
            toml::Value::Table(table) if table.len() == 1 => match table.get("version") {
                Some(toml::Value::String(version)) if !version.is_empty() => Ok(CachePolicy::Version(version.clone())),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// `retries = N` or `retries = { count, strategy, base_delay, max_delay, jitter, retry_on }`.
    fn retry_policy(
        locate: &Locator,
        value: &toml::Value,
        span: Range<usize>,
        owner: &str,
    ) -> Result<RetryPolicy, ManifestError> {
        match value {
            toml::Value::Integer(n) if (0..=100).contains(n) => Ok(RetryPolicy::count(*n as u32)),
            toml::Value::Integer(_) => Err(locate.error(span, format!("{owner}: retries must be between 0 and 100"))),
            toml::Value::Table(_) => {
                let raw: RawRetry = value.clone().try_into().map_err(|e: toml::de::Error| {
                    locate.error(span.clone(), format!("{owner}: retries: {}", e.message()))
                })?;
                if raw.count > 100 {
                    return Err(locate.error(span, format!("{owner}: retries must be between 0 and 100")));
                }
                let defaults = RetryPolicy::default();
                Ok(RetryPolicy {
                    count: raw.count,
                    strategy: raw.strategy,
                    base_delay: raw.base_delay.unwrap_or(defaults.base_delay),
                    max_delay: raw.max_delay.unwrap_or(defaults.max_delay),
                    jitter: raw.jitter,
                    retry_on: raw.retry_on,
                })
            }
            _ => Err(locate
                .error(span, format!("{owner}: retries must be a whole number or a table {{ count, strategy, ... }}"))),
        }
    }

    /// A provider's `retries`, if given.
    fn provider_retry(
        locate: &Locator,
        span: &Range<usize>,
        value: Option<toml::Value>,
        name: &str,
    ) -> Result<Option<RetryPolicy>, ManifestError> {
        value.map(|v| retry_policy(locate, &v, span.clone(), &format!("llm provider {name:?}"))).transpose()
    }

    /// A chain of `depends_on` that comes back to its start, if there is one.
    fn dependency_cycle(environments: &BTreeMap<String, super::Environment>) -> Option<Vec<String>> {
        fn walk(
            environments: &BTreeMap<String, super::Environment>,
            name: &str,
            path: &mut Vec<String>,
            done: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            if let Some(start) = path.iter().position(|seen| seen == name) {
                let mut cycle = path[start..].to_vec();
                cycle.push(name.to_owned());
                return Some(cycle);
            }
            if done.iter().any(|d| d == name) {
                return None;
            }
            path.push(name.to_owned());
            for dependency in environments.get(name).map(|e| e.depends_on.as_slice()).unwrap_or_default() {
                if let Some(cycle) = walk(environments, dependency, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.push(name.to_owned());
            None
        }
        let mut done = Vec::new();
        environments.keys().find_map(|name| walk(environments, name, &mut Vec::new(), &mut done))
    }

    impl Manifest {
        pub fn validate(self, locate: &Locator, path: &Path, dir: PathBuf) -> Result<super::Manifest, ManifestError> {
            let mut providers = BTreeMap::new();
            // Spans do not survive serde's internally tagged enums: errors point at the provider's table.
            let mut provider_fallbacks: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
            providers.insert(
                DEFAULT_PROVIDER.to_owned(),
                ProviderSpec {
                    name: DEFAULT_PROVIDER.into(),
                    kind: ProviderKind::Mock(MockConfig::default()),
                    max_retries: 0,
                    retry: None,
                    fallback: Vec::new(),
                    circuit_breaker: None,
                },
            );
            for (name, spanned) in self.llm.providers {
                let span = spanned.span();
                let spec = match spanned.into_inner() {
                    Provider::Mock {
                        latency,
                        model,
                        script,
                        rules,
                        max_retries,
                        retries,
                        fallback,
                        circuit_breaker,
                    } => {
                        let mut config = match &script {
                            Some(file) => MockConfig::from_file(dir.join(file.get_ref()))
                                .map_err(|e| locate.error(file.span(), format!("llm provider {name:?}: {e}")))?,
                            None => MockConfig::default(),
                        };
                        if let Some(latency) = latency {
                            config.latency = latency;
                        }
                        if let Some(model) = model {
                            config.model = model;
                        }
                        if let Some(mut rules) = rules {
                            // Inline rules take precedence over the script's and the built-in ones.
                            rules.append(&mut config.rules);
                            config.rules = rules;
                        }
                        provider_fallbacks.push((
                            name.clone(),
                            fallback.into_iter().map(|f| Spanned::new(span.clone(), f)).collect(),
                        ));
                        ProviderSpec {
                            name: name.clone(),
                            kind: ProviderKind::Mock(config),
                            max_retries,
                            retry: provider_retry(locate, &span, retries, &name)?,
                            fallback: Vec::new(),
                            circuit_breaker: circuit_breaker.map(RawBreaker::config),
                        }
                    }
                    Provider::OpenaiCompatible {
                        base_url,
                        model,
                        api_key_secret,
                        timeout,
                        max_retries,
                        retries,
                        fallback,
                        circuit_breaker,
                    } => {
                        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                            return Err(locate.error(
                                span,
                                format!(
                                    "llm provider {name:?}: base_url {base_url:?} must start with http:// or https://"
                                ),
                            ));
                        }
                        provider_fallbacks.push((
                            name.clone(),
                            fallback.into_iter().map(|f| Spanned::new(span.clone(), f)).collect(),
                        ));
                        ProviderSpec {
                            name: name.clone(),
                            kind: ProviderKind::OpenAiCompatible {
                                base_url: base_url.trim_end_matches('/').to_owned(),
                                model,
                                api_key_secret,
                                timeout: timeout.unwrap_or(Duration::from_secs(60)),
                            },
                            max_retries: max_retries.unwrap_or(2),
                            retry: provider_retry(locate, &span, retries, &name)?,
                            fallback: Vec::new(),
                            circuit_breaker: circuit_breaker.map(RawBreaker::config),
                        }
                    }
                };
                providers.insert(name, spec);
            }
            let check_provider = |reference: &Spanned<String>, owner: &str| -> Result<String, ManifestError> {
                if providers.contains_key(reference.get_ref()) {
                    Ok(reference.get_ref().clone())
                } else {
                    let known: Vec<&str> = providers.keys().map(String::as_str).collect();
                    Err(locate.error(
                        reference.span(),
                        format!(
                            "{owner} names llm provider {:?}, which is not defined; defined providers: {}",
                            reference.get_ref(),
                            known.join(", ")
                        ),
                    ))
                }
            };
            let default_provider = match &self.llm.default {
                Some(reference) => check_provider(reference, "[llm] default")?,
                None => DEFAULT_PROVIDER.to_owned(),
            };
            let mut resolved_provider_fallbacks = Vec::new();
            for (name, list) in &provider_fallbacks {
                let owner = format!("llm provider {name:?} (fallback)");
                let mut names = Vec::new();
                for reference in list {
                    let target = check_provider(reference, &owner)?;
                    if target == *name {
                        return Err(locate.error(reference.span(), format!("{owner} lists itself")));
                    }
                    names.push(target);
                }
                resolved_provider_fallbacks.push((name.clone(), names));
            }

            let mut environments = BTreeMap::new();
            environments.insert(
                DEFAULT_ENVIRONMENT.to_owned(),
                super::Environment {
                    name: DEFAULT_ENVIRONMENT.into(),
                    resources: super::Resources::default(),
                    secrets: Vec::new().into(),
                    llm: None,
                    cache: CachePolicy::Disable,
                    reuse: None,
                    depends_on: Vec::new(),
                },
            );
            let env_names: Vec<String> = self.environments.keys().cloned().collect();
            let mut env_dependencies: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
            let mut env_spans = BTreeMap::new();
            for (name, spanned) in self.environments {
                env_spans.insert(name.clone(), spanned.span());
                let env = spanned.into_inner();
                let owner = format!("environment {name:?}");
                let reuse = env
                    .reuse
                    .as_ref()
                    .map(|value| {
                        reuse::parse(value.get_ref())
                            .map_err(|message| locate.error(value.span(), format!("{owner}: reuse: {message}")))
                    })
                    .transpose()?;
                env_dependencies.push((name.clone(), env.depends_on));
                let llm = env.llm.as_ref().map(|r| check_provider(r, &owner)).transpose()?;
                let defaults = super::Resources::default();
                let resources = super::Resources {
                    memory: env.resources.memory.unwrap_or(defaults.memory),
                    timeout: env.resources.timeout.unwrap_or(defaults.timeout),
                    max_output: env.resources.max_output.unwrap_or(defaults.max_output),
                };
                let secrets = env
                    .secrets
                    .into_iter()
                    .map(|s| match s {
                        Secret::Key(key) => SecretDecl { key, as_env_var: None },
                        Secret::Full { key, as_env_var } => SecretDecl { key, as_env_var },
                    })
                    .collect();
                let cache =
                    env.cache.as_ref().map(|c| cache_policy(locate, c, &owner)).transpose()?.unwrap_or_default();
                environments.insert(
                    name.clone(),
                    super::Environment { name, resources, secrets, llm, cache, reuse, depends_on: Vec::new() },
                );
            }
            for (name, list) in env_dependencies {
                let owner = format!("environment {name:?} (depends_on)");
                let mut names = Vec::new();
                for reference in list {
                    let target = reference.get_ref();
                    if !env_names.contains(target) && target != DEFAULT_ENVIRONMENT {
                        return Err(locate.error(
                            reference.span(),
                            format!(
                                "{owner} names environment {target:?}, which is not defined; defined environments: {}",
                                env_names.join(", ")
                            ),
                        ));
                    }
                    if *target == name {
                        return Err(locate.error(reference.span(), format!("{owner} lists itself")));
                    }
                    names.push(target.clone());
                }
                if let Some(env) = environments.get_mut(&name) {
                    env.depends_on = names;
                }
            }
            if let Some(cycle) = dependency_cycle(&environments) {
                let span = env_spans.get(&cycle[0]).cloned().unwrap_or(0..0);
                return Err(locate.error(
                    span,
                    format!(
                        "environments depend on each other in a cycle ({}); remove one of these depends_on entries",
                        cycle.join(" -> ")
                    ),
                ));
            }

            let mut tasks = BTreeMap::new();
            let mut task_fallbacks: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
            for (name, spanned) in self.tasks {
                let task = spanned.into_inner();
                let owner = format!("task {name:?}");
                if let Some(resources) = &task.resources {
                    return Err(locate.error(
                        resources.span(),
                        format!("`resources` on {owner} is not supported yet; set it on the task's environment"),
                    ));
                }
                let environment = match &task.environment {
                    Some(reference) if environments.contains_key(reference.get_ref()) => reference.get_ref().clone(),
                    Some(reference) => {
                        let known: Vec<&str> = environments.keys().map(String::as_str).collect();
                        return Err(locate.error(
                            reference.span(),
                            format!(
                                "{owner} names environment {:?}, which is not defined; defined environments: {}",
                                reference.get_ref(),
                                known.join(", ")
                            ),
                        ));
                    }
                    None => DEFAULT_ENVIRONMENT.to_owned(),
                };
                let retry = match &task.retries {
                    None => RetryPolicy::default(),
                    Some(value) => retry_policy(locate, value.get_ref(), value.span(), &owner)?,
                };
                let on_oom = match &task.on_oom {
                    None => None,
                    Some(value) => {
                        let raw: RawOom = value.get_ref().clone().try_into().map_err(|e: toml::de::Error| {
                            locate.error(value.span(), format!("{owner}: on_oom: {}", e.message()))
                        })?;
                        if raw.grow <= 1.0 {
                            return Err(
                                locate.error(value.span(), format!("{owner}: on_oom.grow must be more than 1.0"))
                            );
                        }
                        Some(OomPolicy { grow: raw.grow, max: raw.max })
                    }
                };
                task_fallbacks.push((name.clone(), task.fallback));
                let llm = task.llm.as_ref().map(|r| check_provider(r, &owner)).transpose()?;
                let cache = task.cache.as_ref().map(|c| cache_policy(locate, c, &owner)).transpose()?;
                let component = dir.join(task.component.get_ref());
                let build = task.build.map(|b| match b {
                    Build::Command(command) => BuildSpec { command, output: component.clone() },
                    Build::Full { command, output } => {
                        BuildSpec { command, output: output.map(|o| dir.join(o)).unwrap_or_else(|| component.clone()) }
                    }
                });
                tasks.insert(
                    name.clone(),
                    TaskSpec {
                        name,
                        component_line: locate.line_of(task.component.span().start),
                        component,
                        build,
                        environment,
                        retry,
                        fallback: Vec::new(),
                        circuit_breaker: task.circuit_breaker.map(RawBreaker::config),
                        on_oom,
                        llm,
                        cache,
                    },
                );
            }
            for (name, list) in task_fallbacks {
                let mut names = Vec::new();
                for reference in list {
                    let target = reference.get_ref();
                    if *target == name || !tasks.contains_key(target) {
                        let known: Vec<&str> = tasks.keys().map(String::as_str).collect();
                        return Err(locate.error(
                            reference.span(),
                            format!(
                                "task {name:?}: fallback {target:?} must be another task of this manifest; tasks: {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    names.push(target.clone());
                }
                if let Some(task) = tasks.get_mut(&name) {
                    task.fallback = names;
                }
            }
            for (name, names) in resolved_provider_fallbacks {
                if let Some(provider) = providers.get_mut(&name) {
                    provider.fallback = names;
                }
            }
            Ok(super::Manifest { path: path.to_path_buf(), dir, default_provider, providers, environments, tasks })
        }
    }
}

#[cfg(test)]
mod tests;
