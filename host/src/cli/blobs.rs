//! `cairn blobs`: the files runs pass by reference, in this machine's blob
//! store (the project's `[blobs] dir`, else `.cairn/blobs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;

use cairn::blobs::local::LocalBlobs;
use cairn::blobs::{BlobStore, Put};
use cairn::config::units::show_size;
use cairn::model::files::{Digest, FileRef, RefKind, valid_name};

use super::backend::{Backend, Local};

#[derive(Subcommand)]
pub enum BlobsCommand {
    /// The tenant's blobs: digest, size, when stored.
    Ls {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a blob's bytes to a file (`-o -`: stdout).
    Get {
        /// The blob's digest, `sha256:…`.
        digest: String,
        /// Where to write it.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Store a file and print the reference that gives it to a run, e.g. in
    /// `cairn run TASK --input '{"table": REFERENCE}'`.
    Put {
        /// The file.
        file: PathBuf,
        /// The name it is staged under (default: the file's own).
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn dispatch(backend: &Backend, command: BlobsCommand) -> Result<ExitCode> {
    let Backend::Local(local) = backend else {
        bail!(
            "`cairn blobs` works on this machine's blob store: run it without --server, where the project's cairn.toml is"
        )
    };
    let blobs = LocalBlobs::open(&local.manifest().blobs_dir())?;
    let tenant = local.tenant();
    match command {
        BlobsCommand::Ls { json } => {
            let listed = blobs.list(&tenant)?;
            if json {
                let rows: Vec<_> = listed
                    .iter()
                    .map(|b| json!({"digest": b.digest, "size": b.size, "stored_at_ms": b.stored_at_ms}))
                    .collect();
                super::safe::print_json(&json!(rows))?;
            } else {
                for blob in &listed {
                    println!("{}  {:>10}  {}", blob.digest, show_size(blob.size), ago(blob.stored_at_ms));
                }
                let total: u64 = listed.iter().map(|b| b.size).sum();
                eprintln!("{} blob(s), {} in {}", listed.len(), show_size(total), blobs.location());
            }
        }
        BlobsCommand::Get { digest, output } => {
            let digest = parse_digest(&digest)?;
            let mut from = blobs.open(&tenant, &digest)?;
            if output.as_os_str() == "-" {
                std::io::copy(&mut from, &mut std::io::stdout().lock())?;
            } else {
                let mut to =
                    std::fs::File::create(&output).with_context(|| format!("cannot write {}", output.display()))?;
                let bytes = std::io::copy(&mut from, &mut to)?;
                eprintln!("wrote {} ({})", output.display(), show_size(bytes));
            }
        }
        BlobsCommand::Put { file, name } => put(local, &blobs, &file, name)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `3h ago`: how long since `ms`.
fn ago(ms: u64) -> String {
    let secs = cairn::model::now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn parse_digest(text: &str) -> Result<Digest> {
    Digest::parse(text).with_context(|| format!("{text:?} is not a blob digest: `sha256:` and 64 lowercase hex digits"))
}

fn put(local: &Local, blobs: &LocalBlobs, file: &std::path::Path, name: Option<String>) -> Result<()> {
    let tenant = local.tenant();
    let shown = file.display().to_string();
    let base = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = name.unwrap_or_else(|| base.clone());
    if !valid_name(&name) {
        bail!("{name:?} cannot name a staged file: one path part, not `.` or `..`, at most 255 bytes (give --name)");
    }
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = cap_std::fs::Dir::open_ambient_dir(&parent, cap_std::ambient_authority())
        .with_context(|| format!("cannot open {}", parent.display()))?;
    let quotas = local.manifest().quotas_of(&tenant, local.store()?.get_quotas(&tenant)?.as_ref());
    let room = match quotas.blob_bytes {
        Some(quota) => quota.saturating_sub(blobs.usage(&tenant)?),
        None => u64::MAX,
    };
    let stored = blobs.put(&tenant, &dir, &base, Put::Copy, room).map_err(|e| match e {
        cairn::blobs::BlobError::TooLarge { .. } => {
            anyhow::anyhow!(
                "{shown} would take tenant {tenant} past its `blob_storage` quota; free room with `cairn gc`"
            )
        }
        other => other.into(),
    })?;
    let reference = FileRef::stored_json(RefKind::File, &stored.digest, &name, stored.size, None);
    println!("{reference}");
    eprintln!("stored {shown} ({}) for {tenant}", show_size(stored.size));
    Ok(())
}
