//! `cairn tokens create | list | revoke`: API tokens of a tenant. Without a
//! server the store is written directly (whoever can open it is its
//! operator); through a server the caller must be an admin of the tenant.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use cairn::model::{Role, now_ms};

use super::backend::Backend;

/// Token subcommands.
#[derive(Subcommand)]
pub enum TokensCommand {
    /// Make a token for the tenant (--project/--domain); it is printed once and never again.
    Create {
        /// viewer (reads), submitter (+ runs, cancels, resumes), operator (+ dead letters,
        /// cache, gc, secret names) or admin (+ secrets, tokens).
        #[arg(long)]
        role: String,
        /// How long it works, e.g. 90d (default: until revoked).
        #[arg(long, value_name = "AGE")]
        expires: Option<String>,
        /// Print `{token, id, tenant, role, …}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's tokens (ids, roles, expiry; never the tokens).
    List {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's id (as `tokens list` shows it).
        id: String,
    },
}

/// Runs a tokens subcommand.
pub fn dispatch(backend: &Backend, command: TokensCommand) -> Result<ExitCode> {
    match command {
        TokensCommand::Create { role, expires, json } => {
            let made = create(backend, &role, expires.as_deref())?;
            if json {
                super::safe::print_json(&made)?;
            } else {
                println!("{}", made["token"].as_str().unwrap_or_default());
                eprintln!(
                    "made token {} ({} of {}{}); it is shown this once",
                    made["id"].as_str().unwrap_or_default(),
                    made["role"].as_str().unwrap_or_default(),
                    made["tenant"].as_str().unwrap_or_default(),
                    made["expires_at_ms"].as_u64().map(|at| format!(", expires at {at} ms")).unwrap_or_default()
                );
            }
        }
        TokensCommand::List { json } => {
            let tokens = list(backend)?;
            if json {
                super::safe::print_json(&json!({"tokens": tokens}))?;
            } else {
                println!("{:<18} {:<10} {:<32} EXPIRES", "ID", "ROLE", "TENANT");
                for token in &tokens {
                    let expires = token["expires_at_ms"].as_u64().map_or("never".to_owned(), |at| at.to_string());
                    println!(
                        "{:<18} {:<10} {:<32} {expires}",
                        token["id"].as_str().unwrap_or_default(),
                        token["role"].as_str().unwrap_or_default(),
                        token["tenant"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        TokensCommand::Revoke { id } => {
            revoke(backend, &id)?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create(backend: &Backend, role: &str, expires: Option<&str>) -> Result<Value> {
    match backend {
        Backend::Local(local) => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let now = now_ms();
            let expires_at_ms =
                cairn::access::expires_at(now, expires).map_err(anyhow::Error::msg).context("--expires")?;
            let minted = cairn::access::mint(&local.tenant(), role, now, expires_at_ms);
            super::runtime()?.block_on(local.store()?.put_token(&minted.record))?;
            Ok(cairn::views::minted_json(&minted))
        }
        Backend::Remote(client) => Ok(client.post(&["tokens"], json!({"role": role, "expires": expires}))?),
    }
}

fn list(backend: &Backend) -> Result<Vec<Value>> {
    match backend {
        Backend::Local(local) => {
            Ok(local.store()?.list_tokens(Some(&local.tenant()))?.iter().map(cairn::views::token_json).collect())
        }
        Backend::Remote(client) => {
            Ok(serde_json::from_value(client.get(&["tokens"], &[])?["tokens"].clone()).unwrap_or_default())
        }
    }
}

fn revoke(backend: &Backend, id: &str) -> Result<()> {
    match backend {
        Backend::Local(local) => {
            let store = local.store()?;
            let tenant = local.tenant();
            if store.get_token(id)?.is_none_or(|t| t.tenant != tenant) {
                bail!("no token {id} in {tenant}; list them with `cairn tokens list`");
            }
            super::runtime()?.block_on(store.delete_token(id))?;
            Ok(())
        }
        Backend::Remote(client) => {
            client.call(Method::DELETE, &["tokens", id], &[], None)?;
            Ok(())
        }
    }
}
