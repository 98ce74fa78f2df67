//! The journal's write-ahead log: journal records are appended to one file
//! and made durable with a single `fdatasync`, the cheapest durable write a
//! disk offers. The group committer then applies them to redb without an
//! fsync of its own, and checkpoints (one durable redb commit, then an empty
//! log) once the log has grown. Opening the store replays whatever the log
//! still holds, so a crash between the two steps loses nothing.
//!
//! Frame (one per group commit):
//!
//! | bytes | field                                                       |
//! |-------|-------------------------------------------------------------|
//! | 4     | magic `FF 43 4A 02` (`0xFF` never occurs in JSON)            |
//! | 8     | sequence number, u64 LE, one more than the frame before     |
//! | 4     | payload length, u32 LE                                      |
//! | 4     | crc32 of the sequence number, length and payload, u32 LE    |
//! | n     | payload: a JSON array of [`JournalEntry`]                   |
//!
//! Replay reads frames until one is short, fails its checksum or breaks the
//! sequence. If no intact frame follows, that is a torn tail, the one
//! append the crash interrupted (never acknowledged), and it is cut off. If
//! an intact frame does follow, acknowledged records lie beyond the damage,
//! and opening fails with [`StoreError::LogDamaged`] instead of dropping
//! them; `cairn store repair` keeps every intact frame.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::StoreError;
use super::sim_disk::SimFile;
use crate::model::JournalEntry;

/// Checkpoint once the log holds this many bytes.
pub const CHECKPOINT_BYTES: u64 = 16 << 20;

const MAGIC: [u8; 4] = [0xFF, b'C', b'J', 0x02];
const HEADER: usize = 20;

/// The file under a log: a real file, or a simulated one in tests.
pub trait LogFile: Send {
    /// The whole file.
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Sets the length.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
}

impl LogFile for File {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

impl LogFile for SimFile {
    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        SimFile::read_all(self)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        SimFile::write_at(self, offset, data)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        SimFile::set_len(self, len)
    }
    fn sync(&mut self) -> io::Result<()> {
        SimFile::sync(self)
    }
}

/// Opens (creating) the real log file at `path`; a new file's directory
/// entry is made durable before any frame is acknowledged in it.
pub fn open_file(path: &Path) -> Result<File, StoreError> {
    let shown = path.display().to_string();
    let existed = path.exists();
    let file =
        OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(|e| {
            StoreError::Open { path: shown.clone(), message: format!("cannot open the journal log: {e}") }
        })?;
    if !existed && let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::Open { path: shown, message: format!("cannot sync the log's directory: {e}") })?;
    }
    Ok(file)
}

/// How a log's write failed: the store stops writing ([`StoreError::Halted`]).
pub fn failure(path: &str, doing: &str, e: &io::Error) -> StoreError {
    StoreError::halted(
        path,
        doing,
        &e.to_string(),
        e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull,
    )
}

/// What a read of the log found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The entries of the intact frames before any damage, in order.
    pub entries: Vec<JournalEntry>,
    /// Where the intact run of frames ends.
    pub end: usize,
    /// The last intact frame's sequence number (0 if none).
    pub last_seq: u64,
    /// Intact frames found after the end (acknowledged records past damage).
    pub beyond: Vec<(usize, Vec<JournalEntry>)>,
}

/// One frame at `at`, if intact: (sequence number, entries, bytes).
fn frame_at(bytes: &[u8], at: usize) -> Option<(u64, Vec<JournalEntry>, usize)> {
    let header = bytes.get(at..at + HEADER)?;
    if header[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[16..20].try_into().ok()?);
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..16]);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    let entries = serde_json::from_slice(payload).ok()?;
    Some((seq, entries, HEADER + len))
}

/// One frame: the magic, sequence number `seq`, the payload's length, the
/// checksum of those and of `payload`, then `payload`.
pub fn encode_frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + HEADER);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[4..16]);
    hasher.update(payload);
    frame.extend_from_slice(&hasher.finalize().to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads every frame of `bytes`: the intact run from the start, and any intact frame after it.
pub fn scan(bytes: &[u8]) -> Scan {
    if !bytes.is_empty() && !bytes.starts_with(&MAGIC) {
        return scan_v1(bytes);
    }
    let mut scan = Scan::default();
    while let Some((seq, mut entries, size)) = frame_at(bytes, scan.end) {
        if scan.last_seq != 0 && seq != scan.last_seq.wrapping_add(1) {
            break;
        }
        scan.entries.append(&mut entries);
        scan.last_seq = seq;
        scan.end += size;
    }
    let mut at = scan.end + 1;
    while let Some(found) = bytes.get(at..).and_then(|rest| rest.iter().position(|b| *b == MAGIC[0])) {
        at += found;
        match frame_at(bytes, at) {
            Some((_, entries, size)) => {
                scan.beyond.push((at, entries));
                at += size;
            }
            None => at += 1,
        }
    }
    scan
}

/// Reads a log of the first format (`u32 length | u32 crc32 | payload`,
/// no sequence numbers), which a cairn before frame sequence numbers left
/// after a crash: frames up to the first torn one.
fn scan_v1(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    while let Some(header) = bytes.get(scan.end..scan.end + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(scan.end + 8..scan.end + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Vec<JournalEntry>>(payload) {
            Ok(mut frame) => scan.entries.append(&mut frame),
            Err(_) => break,
        }
        scan.end += 8 + len;
    }
    scan
}

/// An open write-ahead log.
pub struct Wal {
    file: Box<dyn LogFile>,
    path: String,
    len: u64,
    next_seq: u64,
    /// Set by any failed operation: the log then takes nothing more.
    failed: bool,
}

impl Wal {
    /// Opens the log in `file` (named `path` in messages) and returns it with
    /// the entries it holds. A torn tail is cut off; damage with intact
    /// frames after it is an error ([`StoreError::LogDamaged`]).
    pub fn open(mut file: Box<dyn LogFile>, path: &str) -> Result<(Wal, Vec<JournalEntry>), StoreError> {
        let bytes = file.read_all().map_err(|e| StoreError::Open { path: path.into(), message: e.to_string() })?;
        let scan = scan(&bytes);
        if let Some((first, _)) = scan.beyond.first() {
            return Err(StoreError::LogDamaged {
                path: path.into(),
                offset: scan.end as u64,
                damaged: (*first - scan.end) as u64,
                intact_after: scan.beyond.len(),
            });
        }
        // Wrapping: a damaged (or forged) log may end at u64::MAX.
        let next_seq = scan.last_seq.wrapping_add(1);
        let mut wal = Wal { file, path: path.into(), len: bytes.len() as u64, next_seq, failed: false };
        if scan.end != bytes.len() {
            tracing::warn!(
                "journal log {path}: dropping a torn tail of {} bytes at offset {} (an append a crash interrupted; never acknowledged)",
                bytes.len() - scan.end,
                scan.end
            );
            wal.cut(scan.end as u64, "cutting off a torn tail")?;
        }
        Ok((wal, scan.entries))
    }

    /// The payload of a frame holding `entries` (the frame itself is made per group commit).
    pub fn payload(entries: &[JournalEntry]) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(entries).map_err(|e| StoreError::Corrupt { what: "journal", message: e.to_string() })
    }

    /// Appends one frame holding the entries of every payload (each a JSON
    /// array) and makes it durable with one sync. Any failure is final: the
    /// log takes nothing more, and the store stops.
    pub fn append(&mut self, payloads: &[&[u8]]) -> Result<(), StoreError> {
        self.usable()?;
        let mut payload = Vec::with_capacity(payloads.iter().map(|p| p.len()).sum::<usize>() + 2);
        payload.push(b'[');
        for inner in payloads.iter().map(|p| &p[1..p.len() - 1]).filter(|inner| !inner.is_empty()) {
            if payload.len() > 1 {
                payload.push(b',');
            }
            payload.extend_from_slice(inner);
        }
        payload.push(b']');
        let frame = encode_frame(self.next_seq, &payload);
        let written = self.file.write_at(self.len, &frame).and_then(|()| self.file.sync());
        if let Err(e) = written {
            self.failed = true;
            return Err(failure(&self.path, "appending to the journal log", &e));
        }
        self.len += frame.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(())
    }

    fn usable(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::halted(&self.path, "writing the journal log", "an earlier write failed", false));
        }
        Ok(())
    }

    fn cut(&mut self, len: u64, doing: &str) -> Result<(), StoreError> {
        self.usable()?;
        if let Err(e) = self.file.set_len(len).and_then(|()| self.file.sync()) {
            self.failed = true;
            return Err(failure(&self.path, doing, &e));
        }
        self.len = len;
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

    /// Empties the log; call only once its records are durable elsewhere.
    /// Sequence numbers go on from where they were.
    pub fn truncate(&mut self) -> Result<(), StoreError> {
        self.cut(0, "emptying the journal log after a checkpoint")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallKind, ReplayKey};
    use crate::store::sim_disk::SimDisk;

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

    fn occurrences(entries: &[JournalEntry]) -> Vec<u32> {
        entries.iter().map(|e| e.key.occurrence).collect()
    }

    fn payload(occurrences: &[u32]) -> Vec<u8> {
        Wal::payload(&occurrences.iter().map(|o| entry(*o)).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_group_is_one_frame_and_a_torn_tail_is_dropped() {
        let disk = SimDisk::new();
        let (mut wal, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert!(entries.is_empty());
        wal.append(&[&payload(&[1]), &payload(&[]), &payload(&[2, 3])]).unwrap();
        let good = disk.contents("j").unwrap();
        wal.append(&[&payload(&[4])]).unwrap();
        // A crash mid-append: half of the second frame reached the disk.
        let full = disk.contents("j").unwrap();
        disk.put("j", full[..good.len() + (full.len() - good.len()) / 2].to_vec());
        let (mut wal, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert_eq!(occurrences(&entries), [1, 2, 3]);
        assert_eq!(wal.len(), good.len() as u64, "the torn tail is cut off");
        assert_eq!(disk.contents("j").unwrap(), good);
        wal.append(&[&payload(&[5])]).unwrap();
        wal.truncate().unwrap();
        wal.append(&[&payload(&[6])]).unwrap();
        let (_, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert_eq!(occurrences(&entries), [6], "frames after an emptying go on with the sequence");
    }

    #[test]
    fn damage_with_intact_frames_after_it_refuses_to_open() {
        let disk = SimDisk::new();
        let (mut wal, _) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        for o in 1..=3 {
            wal.append(&[&payload(&[o])]).unwrap();
        }
        let mut bytes = disk.contents("j").unwrap();
        let second = frame_at(&bytes, 0).unwrap().2;
        bytes[second + HEADER + 3] ^= 0x20; // inside the second frame's payload
        disk.put("j", bytes.clone());
        let Err(error) = Wal::open(Box::new(disk.file("j")), "j") else { panic!("damaged log opened") };
        let StoreError::LogDamaged { offset, intact_after, .. } = &error else { panic!("{error}") };
        assert_eq!((*offset, *intact_after), (second as u64, 1));
        assert!(error.to_string().contains("cairn store repair"), "{error}");
        assert_eq!(disk.contents("j").unwrap(), bytes, "nothing is cut");
        let found = scan(&bytes);
        assert_eq!(occurrences(&found.entries), [1]);
        assert_eq!(occurrences(&found.beyond[0].1), [3]);
    }

    #[test]
    fn a_failed_sync_or_write_is_final() {
        use crate::store::sim_disk::{Fault, FaultOn};
        let disk = SimDisk::new();
        let (mut wal, _) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        disk.inject(Fault { file: "j".into(), on: FaultOn::Sync, nth: 2, no_space: false });
        wal.append(&[&payload(&[1])]).unwrap();
        let error = wal.append(&[&payload(&[2])]).unwrap_err();
        assert!(matches!(error, StoreError::Halted { full: false, .. }), "{error}");
        let again = wal.append(&[&payload(&[3])]).unwrap_err();
        assert!(again.to_string().contains("an earlier write failed"), "{again}");
        assert!(wal.truncate().is_err(), "a failed log is not emptied either");

        let disk = SimDisk::new();
        let (mut wal, _) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        disk.inject(Fault { file: "j".into(), on: FaultOn::Write, nth: 1, no_space: true });
        let full = wal.append(&[&payload(&[1])]).unwrap_err();
        assert!(matches!(full, StoreError::Halted { full: true, .. }) && full.to_string().contains("full"), "{full}");
    }

    /// A frame with valid checksums whose sequence number is `seq`.
    fn frame(seq: u64, occurrences: &[u32]) -> Vec<u8> {
        encode_frame(seq, &payload(occurrences))
    }

    /// Found by the `wal` fuzz target: a log whose last sequence number is
    /// `u64::MAX` made opening it overflow (a panic with overflow checks).
    /// Sequence numbers wrap instead, in opening, appending and reading back.
    #[test]
    fn sequence_numbers_wrap_at_the_end_of_their_range() {
        let disk = SimDisk::new();
        disk.put("j", frame(u64::MAX, &[1]));
        let (mut wal, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert_eq!(occurrences(&entries), [1]);
        wal.append(&[&payload(&[2])]).unwrap();
        let (_, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert_eq!(occurrences(&entries), [1, 2], "the frame after u64::MAX is 0, and follows it");

        disk.put("j", frame(u64::MAX - 1, &[1]));
        let (mut wal, _) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        wal.append(&[&payload(&[2])]).unwrap();
        wal.append(&[&payload(&[3])]).unwrap();
        let (_, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert_eq!(occurrences(&entries), [1, 2, 3]);
    }

    #[test]
    fn a_log_of_the_first_format_is_replayed() {
        let json = Wal::payload(&[entry(1), entry(2)]).unwrap();
        let mut bytes = (json.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        bytes.extend_from_slice(&json);
        let disk = SimDisk::new();
        disk.put("j", bytes);
        let (wal, entries) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
        assert_eq!((occurrences(&entries), !wal.is_empty()), (vec![1, 2], true));
    }
}
