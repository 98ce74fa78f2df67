//! The journal's write-ahead log: journal records are appended to one file
//! and made durable with a single `fdatasync`, the cheapest durable write a
//! disk offers. The group committer then applies them to redb without an
//! fsync of its own, and checkpoints (one durable redb commit, then an empty
//! log) once the log has grown. Opening the store replays whatever the log
//! still holds, so a crash between the two steps loses nothing.
//!
//! Frame: `u32 length (LE) | u32 crc32 (LE) | payload` where the payload is
//! a JSON array of [`JournalEntry`]. A torn tail (short or failing its CRC)
//! ends the replay: it was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::model::JournalEntry;

/// Checkpoint once the log holds this many bytes.
pub const CHECKPOINT_BYTES: u64 = 16 << 20;

/// An open write-ahead log.
pub struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
    /// Set when a failed append could not be cut back: later frames would
    /// follow a torn one and be lost at replay, so the log takes no more.
    poisoned: bool,
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io { operation: "journal log", message: format!("{}: {e}", path.display()) }
}

impl Wal {
    /// Opens (creating) the log at `path` and returns it with the entries it
    /// holds, up to the first torn frame.
    pub fn open(path: &Path) -> Result<(Wal, Vec<JournalEntry>), StoreError> {
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(|e| io(path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut entries = Vec::new();
        let mut offset = 0usize;
        while let Some(header) = bytes.get(offset..offset + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let Some(payload) = bytes.get(offset + 8..offset + 8 + len) else { break };
            if crc32fast::hash(payload) != crc {
                break;
            }
            match serde_json::from_slice::<Vec<JournalEntry>>(payload) {
                Ok(mut frame) => entries.append(&mut frame),
                Err(_) => break,
            }
            offset += 8 + len;
        }
        if bytes.is_empty()
            && let Some(dir) = path.parent()
        {
            // Make the new file's directory entry durable along with the frames to come.
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(path, e))?;
        }
        let mut wal = Wal { file, path: path.to_path_buf(), len: bytes.len() as u64, poisoned: false };
        if offset != bytes.len() {
            // Drop the torn tail so new frames follow the last good one.
            wal.file.set_len(offset as u64).map_err(|e| io(path, e))?;
            wal.len = offset as u64;
        }
        Ok((wal, entries))
    }

    /// One frame holding `entries`.
    pub fn frame(entries: &[JournalEntry]) -> Result<Vec<u8>, StoreError> {
        let payload =
            serde_json::to_vec(entries).map_err(|e| StoreError::Corrupt { what: "journal", message: e.to_string() })?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        Ok(frame)
    }

    /// Appends frames and makes them durable (one `fdatasync`).
    pub fn append(&mut self, frames: &[&[u8]]) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(io(
                &self.path,
                std::io::Error::other("an earlier failed write could not be undone; reopen the store"),
            ));
        }
        let bytes: Vec<u8> = frames.concat();
        if let Err(e) = self.file.write_all(&bytes).and_then(|()| self.file.sync_data()) {
            // Leave no partial frame behind for the next append to follow.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(io(&self.path, e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Cuts the log back to `len` bytes (undoing appends whose batch failed).
    pub fn rewind(&mut self, len: u64) -> Result<(), StoreError> {
        self.file.set_len(len).and_then(|()| self.file.sync_data()).map_err(|e| io(&self.path, e))?;
        self.len = len;
        Ok(())
    }

    /// Empties the log; call only once its records are durable elsewhere.
    pub fn truncate(&mut self) -> Result<(), StoreError> {
        self.file.set_len(0).and_then(|()| self.file.sync_data()).map_err(|e| io(&self.path, e))?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallKind, ReplayKey};

    fn entry(occurrence: u32) -> JournalEntry {
        JournalEntry {
            key: ReplayKey {
                run_id: "r".into(),
                kind: CallKind::Llm,
                name: "complete".into(),
                input_hash: "h".into(),
                occurrence,
            },
            seq: occurrence as u64,
            attempt: 1,
            output: "\"answer\"".into(),
            summary: String::new(),
            recorded_at_ms: 0,
            duration_ms: 0,
            usage: None,
        }
    }

    #[test]
    fn a_torn_tail_is_dropped_and_later_frames_follow_the_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.wal");
        {
            let (mut wal, entries) = Wal::open(&path).unwrap();
            assert!(entries.is_empty());
            let (a, b) = (Wal::frame(&[entry(1)]).unwrap(), Wal::frame(&[entry(2), entry(3)]).unwrap());
            wal.append(&[&a, &b]).unwrap();
        }
        // A crash mid-append: half a frame, then a frame whose CRC is wrong.
        let good_len = std::fs::metadata(&path).unwrap().len();
        let mut torn = Wal::frame(&[entry(4)]).unwrap();
        torn.truncate(torn.len() / 2);
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&torn).unwrap();
        let (mut wal, entries) = Wal::open(&path).unwrap();
        assert_eq!(entries.iter().map(|e| e.key.occurrence).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(wal.len(), good_len, "the torn tail is cut off");
        wal.append(&[&Wal::frame(&[entry(5)]).unwrap()]).unwrap();
        drop(wal);

        let mut corrupt = std::fs::read(&path).unwrap();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        std::fs::write(&path, &corrupt).unwrap();
        let (_, entries) = Wal::open(&path).unwrap();
        assert_eq!(entries.len(), 3, "a frame failing its CRC ends the replay");

        let (mut wal, _) = Wal::open(&path).unwrap();
        wal.truncate().unwrap();
        assert!(Wal::open(&path).unwrap().1.is_empty());
    }
}
