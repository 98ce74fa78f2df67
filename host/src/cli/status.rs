//! `cairn status`: circuit breakers, the dead-letter queue, and per-task
//! run, retry and fallback counts, for people or as JSON.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{Value, json};

use cairn::manifest::Manifest;
use cairn::model::now_ms;

use super::backend::{Backend, Local};

/// The status of a project without a server: `views::status_json` with the
/// pools the last host saved; only those (and `store_error`) while another
/// process holds the store.
pub fn local(local: &Local) -> Result<Value> {
    let pools = pools_json(local.manifest());
    let store = match local.store() {
        Ok(store) => store,
        // A running host holds the store; its pools are still worth showing.
        Err(e) if !pools.is_null() => return Ok(json!({"pools": pools, "store_error": e.to_string()})),
        Err(e) => return Err(e),
    };
    Ok(cairn::views::status_json(store.as_ref(), &local.tenant(), pools)?)
}

/// Prints the host's status.
pub fn show(backend: &Backend, as_json: bool) -> Result<ExitCode> {
    let status = backend.status()?;
    if as_json {
        super::safe::print_json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    let pools = &status["pools"];
    if let Some(e) = status["store_error"].as_str() {
        print_pools(pools);
        println!("(runs, breakers and the dead-letter queue are not shown: {e})");
        return Ok(ExitCode::SUCCESS);
    }
    let (breakers, dlq, providers) = (
        status["breakers"].as_array().cloned().unwrap_or_default(),
        status["dlq"].as_u64().unwrap_or_default(),
        status["providers"].as_array().cloned().unwrap_or_default(),
    );
    print_pools(pools);
    if !providers.is_empty() {
        println!("llm provider retries:");
        for p in &providers {
            println!("  {:<28} {}", p["provider"].as_str().unwrap_or_default(), p["retries"]);
        }
        println!();
    }
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    if !workers.is_empty() {
        println!("workers:");
        for w in &workers {
            let runs: Vec<&str> = w["runs"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            println!(
                "  {:<28} {:<7} {:<8} seen {:>6.1}s ago  holds {} run(s){}",
                w["id"].as_str().unwrap_or_default(),
                w["kind"].as_str().unwrap_or_default(),
                w["state"].as_str().unwrap_or_default(),
                w["seen_ms_ago"].as_u64().unwrap_or_default() as f64 / 1000.0,
                runs.len(),
                if runs.is_empty() { String::new() } else { format!(": {}", runs.join(" ")) }
            );
        }
        println!();
    }
    println!("dead-letter queue: {dlq} run(s)");
    println!("\ncircuit breakers:");
    if breakers.is_empty() {
        println!("  (none has tripped or been configured yet)");
    }
    for b in &breakers {
        println!(
            "  {:<28} {:<9} failures {:>3}  next probe {}",
            b["name"].as_str().unwrap_or_default(),
            b["state"].as_str().unwrap_or_default(),
            b["failures"],
            b["next_probe_in_ms"]
                .as_u64()
                .map(|ms| format!("in {:.1}s", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into())
        );
    }
    println!(
        "\n{:<24} {:>6} {:>9} {:>6} {:>7} {:>8} {:>6}",
        "TASK", "RUNS", "SUCCEEDED", "FAILED", "RETRIES", "DEGRADED", "CACHED"
    );
    for t in status["tasks"].as_array().into_iter().flatten() {
        let n = |field: &str| t[field].as_u64().unwrap_or_default();
        println!(
            "{:<24} {:>6} {:>9} {:>6} {:>7} {:>8} {:>6}",
            t["task"].as_str().unwrap_or_default(),
            n("runs"),
            n("succeeded"),
            n("failed"),
            n("retries"),
            n("degraded"),
            n("cached")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The last pool snapshot a host saved, with whether that host still runs;
/// `null` when no host has had pools in this project.
fn pools_json(manifest: &Manifest) -> Value {
    let Some(report) = cairn::pool::status::read(&manifest.state_dir()) else { return Value::Null };
    let running = cairn::runner::lease::holder_alive(&report.host);
    json!({
        "host": report.host,
        "host_running": running,
        "updated_at_ms": report.updated_at_ms,
        "environments": report.pools,
    })
}

fn print_pools(pools: &Value) {
    let Some(environments) = pools["environments"].as_array() else { return };
    // A server's pools are as of now.
    let age = now_ms().saturating_sub(pools["updated_at_ms"].as_u64().unwrap_or_else(now_ms));
    let state = match pools["host_running"].as_bool() {
        Some(true) => "running",
        Some(false) => "exited",
        None => "on another machine",
    };
    println!(
        "environment pools (host {}, {state}; as of {:.1}s ago):",
        pools["host"].as_str().unwrap_or_default(),
        age as f64 / 1000.0
    );
    println!(
        "  {:<20} {:>8} {:>5} {:>5} {:>5} {:>6} {:>7} {:>14} {:>7}",
        "ENVIRONMENT", "REPLICAS", "LIVE", "IDLE", "BUSY", "QUEUED", "PEAK", "INSTANTIATIONS", "REUSES"
    );
    for pool in environments {
        let n = |key: &str| pool[key].as_u64().unwrap_or_default();
        let replicas = format!("{}/{}-{}", n("replicas"), n("min_replicas"), n("max_replicas"));
        println!(
            "  {:<20} {:>8} {:>5} {:>5} {:>5} {:>6} {:>7} {:>14} {:>7}",
            pool["environment"].as_str().unwrap_or_default(),
            replicas,
            n("live"),
            n("idle"),
            n("busy"),
            n("queued"),
            n("peak_busy"),
            n("instantiations"),
            n("reuses")
        );
    }
    println!();
}
