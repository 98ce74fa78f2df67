//! `cairn store repair`: the store's own maintenance.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use cairn::manifest::Manifest;
use cairn::runner::STORE_FILE;
use cairn::store::redb::RedbStore;

/// Store subcommands.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Repair a journal log that is damaged before its end (cairn refuses to
    /// open such a store): saves the log beside itself, keeps every intact
    /// record (before and after the damage), and empties the log.
    Repair,
}

/// Runs a store subcommand.
pub fn dispatch(manifest: &Manifest, command: StoreCommand) -> Result<ExitCode> {
    match command {
        StoreCommand::Repair => {
            let path = manifest.state_dir().join(STORE_FILE);
            let repair = RedbStore::repair(&path)?;
            match (repair.damaged_at, &repair.saved_to) {
                (Some(offset), Some(saved)) => {
                    eprintln!(
                        "repaired the journal log of {}: damage at byte {offset} ({} bytes unreadable; the records in them are lost); kept {} record(s), {} intact frame(s) of them after the damage; the damaged log is saved as {}",
                        path.display(),
                        repair.bytes_lost,
                        repair.records,
                        repair.frames_after,
                        saved.display()
                    );
                }
                _ => eprintln!("the journal log of {} needs no repair", path.display()),
            }
            // Opening now proves the store is usable again.
            RedbStore::open(&path)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
