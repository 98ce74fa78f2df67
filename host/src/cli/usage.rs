//! `cairn usage` (what the tenant's LLM calls used and cost) and `cairn
//! quota show | set` (its quotas; setting them is the operator's: through a
//! server it needs the server's own token).

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use cairn::model::now_ms;
use cairn::views::{quota_json, set_quota, usage_json, usage_window};

use super::backend::Backend;

/// Quota subcommands.
#[derive(Subcommand)]
pub enum QuotaCommand {
    /// The tenant's quotas, and what today and this month spent against them.
    Show {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set one quota: concurrent_runs, live_instances, memory (a size such
    /// as 4GiB), tokens_per_run, tokens_per_day, cost_per_day or
    /// cost_per_month (dollars); `none` unsets it, `unlimited` lifts it.
    Set {
        /// The quota.
        key: String,
        /// Its value.
        value: String,
    },
}

/// `cairn usage`.
pub fn usage(backend: &Backend, since: &str, by: Option<&str>, json: bool) -> Result<ExitCode> {
    let answer = match backend {
        Backend::Local(local) => {
            let (since_ms, by) = usage_window(now_ms(), since, by).map_err(anyhow::Error::msg)?;
            usage_json(&local.store()?.usage_since(&local.tenant(), since_ms)?, since_ms, by)
        }
        Backend::Remote(client) => {
            let mut query = vec![("since", since.to_owned())];
            if let Some(by) = by {
                query.push(("by", by.to_owned()));
            }
            client.get(&["usage"], &query)?
        }
    };
    if json {
        super::safe::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:>7} {:>12} {:>12} {:>12}",
        answer["by"].as_str().unwrap_or("").to_uppercase(),
        "CALLS",
        "PROMPT",
        "COMPLETION",
        "COST $"
    );
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    for row in rows.iter().chain(std::iter::once(&answer["total"])) {
        println!(
            "{:<28} {:>7} {:>12} {:>12} {:>12.6}",
            super::safe::line(row["key"].as_str().unwrap_or_default()),
            row["calls"].as_u64().unwrap_or_default(),
            row["prompt_tokens"].as_u64().unwrap_or_default(),
            row["completion_tokens"].as_u64().unwrap_or_default(),
            row["cost_usd"].as_f64().unwrap_or_default()
        );
    }
    eprintln!("LLM calls of {} since {since} ago", backend.tenant_name());
    Ok(ExitCode::SUCCESS)
}

/// `cairn quota …`.
pub fn quota(backend: &Backend, command: QuotaCommand) -> Result<ExitCode> {
    let answer: Value = match (&command, backend) {
        (QuotaCommand::Show { .. }, Backend::Local(local)) => {
            let host_quotas = effective(local)?;
            quota_json(local.store()?.as_ref(), &local.tenant(), &host_quotas)?
        }
        (QuotaCommand::Show { .. }, Backend::Remote(client)) => client.get(&["quota"], &[])?,
        (QuotaCommand::Set { key, value }, Backend::Local(local)) => {
            let store = local.store()?;
            let mut set = store.get_quotas(&local.tenant())?.unwrap_or_default();
            set_quota(&mut set, key, value).map_err(anyhow::Error::msg)?;
            super::runtime()?.block_on(store.put_quotas(&local.tenant(), &set))?;
            quota_json(store.as_ref(), &local.tenant(), &effective(local)?)?
        }
        (QuotaCommand::Set { key, value }, Backend::Remote(client)) => {
            client.call(Method::PUT, &["quota"], &[], Some(json!({"key": key, "value": value})))?
        }
    };
    if matches!(command, QuotaCommand::Show { json: true }) {
        super::safe::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("quotas of {}", answer["tenant"].as_str().unwrap_or_default());
    let Some(quotas) = answer["quotas"].as_object() else { bail!("the server sent no quotas: {answer}") };
    for (name, value) in quotas {
        let shown = match value.as_u64() {
            None if value.is_null() => "unlimited".to_owned(),
            Some(u64::MAX) if name == "memory" => "unlimited".to_owned(),
            Some(bytes) if name == "memory" => cairn::config::units::show_size(bytes),
            _ => value.to_string(),
        };
        println!("  {name:<16} {shown}");
    }
    for line in answer["ledger"].as_array().cloned().unwrap_or_default() {
        println!(
            "  {:<16} {} spent {}, {} held by calls under way (limit {})",
            line["quota"].as_str().unwrap_or_default(),
            line["period"].as_str().unwrap_or_default(),
            line["spent"],
            line["reserved"],
            if line["limit"].is_null() { "none".to_owned() } else { line["limit"].to_string() }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The manifest's quotas of the local tenant, with the stored ones over them.
fn effective(local: &super::backend::Local) -> Result<cairn::model::Quotas> {
    let tenant = local.tenant();
    Ok(local.manifest().quotas_of(&tenant, local.store()?.get_quotas(&tenant)?.as_ref()))
}
