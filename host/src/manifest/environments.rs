//! `[environments.*]`: settings shared by groups of tasks (resources,
//! secrets, LLM provider, cache, warm-instance `reuse`) and the `depends_on`
//! links between environments, which must not form a cycle. The `default`
//! environment always exists.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::policies::cache_policy;
use super::providers::check_provider;
use super::{CachePolicy, DEFAULT_ENVIRONMENT, Environment, ManifestError, ProviderSpec, Resources, SecretDecl, reuse};
use crate::config::locate::Locator;
use crate::config::units;
use crate::sandbox::outbound::{AllowList, Pattern};

/// `[environments.NAME]` as written; the types keep the names serde shows in
/// errors ("expected struct Environment").
pub(super) mod raw {
    use super::*;

    /// `resources = { memory, timeout, max_output, max_input, max_report, max_journal,
    /// max_children, max_depth, max_descendants, max_handles, max_open_files, max_disk,
    /// max_files, max_http_request, max_http_response, http_timeout, max_blobs }`
    /// as written.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Resources {
        #[serde(default, deserialize_with = "units::opt_size")]
        pub memory: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_duration")]
        pub timeout: Option<Duration>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_output: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_input: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_report: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_journal: Option<u64>,
        pub max_children: Option<u32>,
        pub max_depth: Option<u32>,
        pub max_descendants: Option<u64>,
        pub max_handles: Option<u32>,
        pub max_open_files: Option<u32>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_disk: Option<u64>,
        pub max_files: Option<u32>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_http_request: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_http_response: Option<u64>,
        #[serde(default, deserialize_with = "units::opt_duration")]
        pub http_timeout: Option<Duration>,
        #[serde(default, deserialize_with = "units::opt_size")]
        pub max_blobs: Option<u64>,
    }

    /// One entry of `secrets`: a key, or `{ key, as_env_var, hosts }`.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub enum Secret {
        Key(String),
        Full { key: String, as_env_var: Option<String>, hosts: Option<Vec<String>> },
    }

    /// One `[environments.NAME]` table as written.
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
        #[serde(default)]
        pub allowed_outbound_hosts: Vec<Spanned<String>>,
    }
}

/// Checks every environment against the `providers`, then their `depends_on`
/// links. Returns the environments by name, `default` included.
pub(super) fn validate(
    written: BTreeMap<String, Spanned<raw::Environment>>,
    locate: &Locator,
    providers: &BTreeMap<String, ProviderSpec>,
) -> Result<BTreeMap<String, Environment>, ManifestError> {
    let mut environments = BTreeMap::new();
    environments.insert(
        DEFAULT_ENVIRONMENT.to_owned(),
        Environment {
            name: DEFAULT_ENVIRONMENT.into(),
            resources: Resources::default(),
            secrets: Vec::new().into(),
            llm: None,
            cache: CachePolicy::Disable,
            reuse: None,
            depends_on: Vec::new(),
            outbound: Arc::default(),
        },
    );
    let env_names: Vec<String> = written.keys().cloned().collect();
    let mut env_dependencies: Vec<(String, Vec<Spanned<String>>)> = Vec::new();
    let mut env_spans = BTreeMap::new();
    for (name, spanned) in written {
        env_spans.insert(name.clone(), spanned.span());
        let env_span = spanned.span();
        let env = spanned.into_inner();
        let owner = format!("environment {name:?}");
        let reuse = env
            .reuse
            .as_ref()
            .map(|value| {
                reuse::parse(value.get_ref())
                    .map_err(|message| ManifestError::at(locate, value.span(), format!("{owner}: reuse: {message}")))
            })
            .transpose()?;
        env_dependencies.push((name.clone(), env.depends_on));
        let llm = env.llm.as_ref().map(|r| check_provider(providers, locate, r, &owner)).transpose()?;
        let defaults = Resources::default();
        let resources = Resources {
            memory: env.resources.memory.unwrap_or(defaults.memory),
            timeout: env.resources.timeout.unwrap_or(defaults.timeout),
            max_output: env.resources.max_output.unwrap_or(defaults.max_output),
            max_input: env.resources.max_input.unwrap_or(defaults.max_input),
            max_report: env.resources.max_report.unwrap_or(defaults.max_report),
            max_journal: env.resources.max_journal.unwrap_or(defaults.max_journal),
            max_children: env.resources.max_children.unwrap_or(defaults.max_children),
            max_depth: env.resources.max_depth.unwrap_or(defaults.max_depth),
            max_descendants: env.resources.max_descendants.unwrap_or(defaults.max_descendants),
            max_handles: env.resources.max_handles.unwrap_or(defaults.max_handles),
            max_open_files: env.resources.max_open_files.unwrap_or(defaults.max_open_files),
            max_disk: env.resources.max_disk.unwrap_or(defaults.max_disk),
            max_files: env.resources.max_files.unwrap_or(defaults.max_files),
            max_http_request: env.resources.max_http_request.unwrap_or(defaults.max_http_request),
            max_http_response: env.resources.max_http_response.unwrap_or(defaults.max_http_response),
            http_timeout: env.resources.http_timeout.unwrap_or(defaults.http_timeout),
            max_blobs: env.resources.max_blobs.unwrap_or(defaults.max_blobs),
        };
        let mut outbound = Vec::new();
        for entry in &env.allowed_outbound_hosts {
            let pattern = Pattern::parse(entry.get_ref().trim()).map_err(|e| {
                ManifestError::at(locate, entry.span(), format!("{owner}: allowed_outbound_hosts: {e}"))
            })?;
            outbound.push(pattern);
        }
        let mut secrets = Vec::new();
        for secret in env.secrets {
            secrets.push(match secret {
                raw::Secret::Key(key) => SecretDecl { key, as_env_var: None, hosts: None },
                raw::Secret::Full { key, as_env_var, hosts } => {
                    let hosts = hosts
                        .map(|list| {
                            if as_env_var.is_some() {
                                return Err(format!(
                                    "secret {key:?} is bound to `hosts`, so it never reaches the task: it cannot also be `as_env_var`"
                                ));
                            }
                            AllowList::parse(&list).map(Arc::new).map_err(|e| format!("secret {key:?}: hosts: {e}"))
                        })
                        .transpose()
                        .map_err(|message| ManifestError::at(locate, env_span.clone(), format!("{owner}: {message}")))?;
                    SecretDecl { key, as_env_var, hosts }
                }
            });
        }
        if let Some(twice) = secrets
            .iter()
            .enumerate()
            .find_map(|(i, s)| secrets[..i].iter().any(|earlier: &SecretDecl| earlier.key == s.key).then_some(&s.key))
        {
            return Err(ManifestError::at(
                locate,
                env_span.clone(),
                format!("{owner}: secret {twice:?} is listed twice in `secrets`; list each key once"),
            ));
        }
        let secrets: Arc<[SecretDecl]> = secrets.into();
        let cache = env.cache.as_ref().map(|c| cache_policy(locate, c, &owner)).transpose()?.unwrap_or_default();
        environments.insert(
            name.clone(),
            Environment {
                name,
                resources,
                secrets,
                llm,
                cache,
                reuse,
                depends_on: Vec::new(),
                outbound: Arc::new(AllowList::from(outbound)),
            },
        );
    }
    resolve_dependencies(&mut environments, env_dependencies, &env_names, &env_spans, locate)?;
    Ok(environments)
}

/// Sets each environment's `depends_on` after checking that every name is
/// defined, none lists its own environment and no chain comes back to its start.
fn resolve_dependencies(
    environments: &mut BTreeMap<String, Environment>,
    env_dependencies: Vec<(String, Vec<Spanned<String>>)>,
    env_names: &[String],
    env_spans: &BTreeMap<String, Range<usize>>,
    locate: &Locator,
) -> Result<(), ManifestError> {
    for (name, list) in env_dependencies {
        let owner = format!("environment {name:?} (depends_on)");
        let mut names = Vec::new();
        for reference in list {
            let target = reference.get_ref();
            if !env_names.contains(target) && target != DEFAULT_ENVIRONMENT {
                return Err(ManifestError::at(
                    locate,
                    reference.span(),
                    format!(
                        "{owner} names environment {target:?}, which is not defined; defined environments: {}",
                        env_names.join(", ")
                    ),
                ));
            }
            if *target == name {
                return Err(ManifestError::at(locate, reference.span(), format!("{owner} lists itself")));
            }
            names.push(target.clone());
        }
        if let Some(env) = environments.get_mut(&name) {
            env.depends_on = names;
        }
    }
    if let Some(cycle) = dependency_cycle(environments) {
        let span = env_spans.get(&cycle[0]).cloned().unwrap_or(0..0);
        return Err(ManifestError::at(
            locate,
            span,
            format!(
                "environments depend on each other in a cycle ({}); remove one of these depends_on entries",
                cycle.join(" -> ")
            ),
        ));
    }
    Ok(())
}

/// A chain of `depends_on` that comes back to its start, if there is one.
fn dependency_cycle(environments: &BTreeMap<String, Environment>) -> Option<Vec<String>> {
    fn walk(
        environments: &BTreeMap<String, Environment>,
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
