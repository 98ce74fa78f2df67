//! `cairn secret create | list | delete`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::backend::Backend;

/// Secret subcommands.
#[derive(Subcommand)]
pub enum SecretCommand {
    /// Store a secret. Give `-` as the value to read it from stdin (keeps it out of shell history).
    Create {
        /// The key, as environments list it.
        key: String,
        /// The value, or `-` for stdin.
        value: String,
    },
    /// List secret keys (never values).
    List,
    /// Delete a secret.
    Delete {
        /// The key.
        key: String,
    },
    /// Move every secret (of every tenant) to a new master key: with the key
    /// file, a new key replaces it once every value moved; with
    /// CAIRN_MASTER_KEY, values move to it from CAIRN_OLD_MASTER_KEY. Needs
    /// the store to itself (stop the server first).
    RotateMaster,
}

/// Runs a secret subcommand.
pub fn dispatch(backend: &Backend, command: SecretCommand) -> Result<ExitCode> {
    let tenant = backend.tenant_name();
    match command {
        SecretCommand::Create { key, value } => {
            let value = if value == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                value
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                bail!("secret key {key:?} must be non-empty and without spaces");
            }
            backend.put_secret(&key, &value)?;
            eprintln!("stored secret {key} for {tenant}");
        }
        SecretCommand::List => {
            for key in backend.secrets()? {
                println!("{key}");
            }
        }
        SecretCommand::RotateMaster => {
            let Backend::Local(local) = backend else {
                bail!("`cairn secret rotate-master` needs the store to itself: stop the server first");
            };
            let vault = local.vault()?;
            let (id, moved) = super::runtime()?.block_on(vault.rotate())?;
            eprintln!("moved {moved} secret(s) to master key {id}");
        }
        SecretCommand::Delete { key } => {
            if !backend.delete_secret(&key)? {
                bail!("no secret {key:?} in {tenant}");
            }
            eprintln!("deleted secret {key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
