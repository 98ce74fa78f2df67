//! `[tasks.*]`: each task's component and build, environment, retries,
//! fallback tasks, circuit breaker, out-of-memory policy, LLM provider and
//! cache. Per-task `resources` are recognised and refused ("not supported yet").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::policies::{RawBreaker, cache_policy, retry_policy};
use super::providers::check_provider;
use super::{BuildSpec, DEFAULT_ENVIRONMENT, Environment, ManifestError, OomPolicy, ProviderSpec, TaskSpec};
use crate::config::locate::Locator;
use crate::config::units;
use crate::policy::retry::RetryPolicy;

/// `[tasks.NAME]` as written; the types keep the names serde shows in errors
/// ("expected struct Task").
pub(super) mod raw {
    use super::*;

    /// `build = "command"` or `build = { command, output }` as written.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Build {
        Command(String),
        Full { command: String, output: Option<PathBuf> },
    }

    /// One `[tasks.NAME]` table as written.
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
        pub cassettes: Option<PathBuf>,
    }
}

/// `on_oom = { grow, max }` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOom {
    grow: f64,
    #[serde(deserialize_with = "units::size")]
    max: u64,
}

/// Checks every task against the `providers` and `environments`, then their
/// fallbacks (which may name any other task). Returns the tasks by name;
/// components and build outputs resolve against `dir`.
pub(super) fn validate(
    written: BTreeMap<String, Spanned<raw::Task>>,
    locate: &Locator,
    dir: &Path,
    providers: &BTreeMap<String, ProviderSpec>,
    environments: &BTreeMap<String, Environment>,
) -> Result<BTreeMap<String, TaskSpec>, ManifestError> {
    let mut tasks = BTreeMap::new();
    let mut task_fallbacks: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
    for (name, spanned) in written {
        let task = spanned.into_inner();
        let owner = format!("task {name:?}");
        if let Some(resources) = &task.resources {
            return Err(ManifestError::at(
                locate,
                resources.span(),
                format!("`resources` on {owner} is not supported yet; set it on the task's environment"),
            ));
        }
        let environment = match &task.environment {
            Some(reference) if environments.contains_key(reference.get_ref()) => reference.get_ref().clone(),
            Some(reference) => {
                let known: Vec<&str> = environments.keys().map(String::as_str).collect();
                return Err(ManifestError::at(
                    locate,
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
        let on_oom = task.on_oom.as_ref().map(|value| oom_policy(locate, value, &owner)).transpose()?;
        task_fallbacks.push((name.clone(), task.fallback));
        let llm = task.llm.as_ref().map(|r| check_provider(providers, locate, r, &owner)).transpose()?;
        let cache = task.cache.as_ref().map(|c| cache_policy(locate, c, &owner)).transpose()?;
        let component = dir.join(task.component.get_ref());
        let build = task.build.map(|b| match b {
            raw::Build::Command(command) => BuildSpec { command, output: component.clone() },
            raw::Build::Full { command, output } => {
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
                cassettes: task.cassettes.map(|folder| dir.join(folder)),
            },
        );
    }
    for (name, list) in task_fallbacks {
        let mut names = Vec::new();
        for reference in list {
            let target = reference.get_ref();
            if *target == name || !tasks.contains_key(target) {
                let known: Vec<&str> = tasks.keys().map(String::as_str).collect();
                return Err(ManifestError::at(
                    locate,
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
    Ok(tasks)
}

/// `on_oom = { grow, max }`, with `grow` more than 1.0.
fn oom_policy(locate: &Locator, value: &Spanned<toml::Value>, owner: &str) -> Result<OomPolicy, ManifestError> {
    let oom: RawOom = value.get_ref().clone().try_into().map_err(|e: toml::de::Error| {
        ManifestError::at(locate, value.span(), format!("{owner}: on_oom: {}", e.message()))
    })?;
    if oom.grow.is_nan() || oom.grow <= 1.0 {
        return Err(ManifestError::at(locate, value.span(), format!("{owner}: on_oom.grow must be more than 1.0")));
    }
    Ok(OomPolicy { grow: oom.grow, max: oom.max })
}
