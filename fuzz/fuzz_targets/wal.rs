//! The journal's write-ahead log as a restart reads it back from disk
//! (`cairn::store::wal::{scan, Wal::open}`): any bytes, including torn and
//! damaged tails and logs of the first format.
//!
//! The first byte picks how the rest becomes the log: as it is, or as a
//! description of frames written with valid checksums (so that the fuzzer
//! gets past the crc32 and reaches sequence numbers and payloads), then
//! damaged and cut. The log is then opened as the store opens it (open,
//! empty, append, reopen) on a simulated disk, checking that what is kept,
//! cut and refused agrees with `scan`.

#![no_main]

use cairn::model::{CallKind, JournalEntry, ReplayKey, Usage};
use cairn::store::StoreError;
use cairn::store::sim_disk::SimDisk;
use cairn::store::wal::{self, Wal};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return check(data);
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => frames(&mut Unstructured::new(rest), false).unwrap_or_default(),
        _ => frames(&mut Unstructured::new(rest), true).unwrap_or_default(),
    };
    check(&bytes);
});

fn check(bytes: &[u8]) {
    let scan = wal::scan(bytes);
    assert!(scan.end <= bytes.len(), "the intact run ends past the log");
    for (at, _) in &scan.beyond {
        assert!(*at > scan.end && *at < bytes.len(), "an intact frame after the damage at {at}, end {}", scan.end);
    }
    let disk = SimDisk::new();
    disk.put("j", bytes.to_vec());
    match Wal::open(Box::new(disk.file("j")), "j") {
        Ok((mut log, entries)) => {
            assert!(scan.beyond.is_empty(), "opened a log with intact frames past damage");
            assert_eq!(entries, scan.entries);
            assert_eq!(disk.contents("j").unwrap(), &bytes[..scan.end], "only a torn tail is cut");
            assert_eq!(log.len(), scan.end as u64);
            // What the store does next: apply, empty, append, and read it back after a restart.
            log.truncate().unwrap();
            let appended = entry("r", 1);
            log.append(&[&Wal::payload(std::slice::from_ref(&appended)).unwrap()]).unwrap();
            let (_, again) = Wal::open(Box::new(disk.file("j")), "j").unwrap();
            assert_eq!(again, [appended], "an acknowledged append is read back");
        }
        Err(StoreError::LogDamaged { offset, damaged, intact_after, .. }) => {
            let first = scan.beyond.first().expect("refused a log with nothing intact past the damage").0;
            assert_eq!(
                (offset, damaged, intact_after),
                (scan.end as u64, (first - scan.end) as u64, scan.beyond.len())
            );
            assert_eq!(disk.contents("j").unwrap(), bytes, "a refused log is left as it is");
        }
        Err(other) => panic!("opening the log failed otherwise: {other}"),
    }
}

fn entry(run_id: &str, occurrence: u32) -> JournalEntry {
    JournalEntry {
        key: ReplayKey {
            run_id: run_id.into(),
            kind: CallKind::Llm,
            name: "complete".into(),
            input_hash: "h".into(),
            occurrence,
        },
        seq: u64::from(occurrence),
        attempt: 1,
        output: "\"answer\"".into(),
        summary: String::new(),
        recorded_at_ms: 0,
        duration_ms: 0,
        usage: None,
    }
}

fn arbitrary_entry(u: &mut Unstructured) -> Result<JournalEntry> {
    let kind = *u.choose(&[CallKind::Llm, CallKind::Trace, CallKind::Child, CallKind::Group])?;
    Ok(JournalEntry {
        key: ReplayKey {
            run_id: u.arbitrary()?,
            kind,
            name: u.arbitrary()?,
            input_hash: u.arbitrary()?,
            occurrence: u.arbitrary()?,
        },
        seq: u.arbitrary()?,
        attempt: u.arbitrary()?,
        output: u.arbitrary()?,
        summary: u.arbitrary()?,
        recorded_at_ms: u.arbitrary()?,
        duration_ms: u.arbitrary()?,
        usage: if u.arbitrary()? {
            Some(Usage {
                prompt_tokens: u.arbitrary()?,
                completion_tokens: u.arbitrary()?,
                cost_micros: u.arbitrary()?,
            })
        } else {
            None
        },
    })
}

/// A log built from `u`: frames with valid checksums (of the first format
/// when `v1`), whose sequence numbers, payloads, damage and cut the fuzzer chooses.
fn frames(u: &mut Unstructured, v1: bool) -> Result<Vec<u8>> {
    let mut log = Vec::new();
    let mut seq: u64 = u.arbitrary()?;
    while !u.is_empty() && log.len() < 1 << 16 {
        let payload: Vec<u8> = match u.int_in_range(0..=3u8)? {
            // Entries as the host writes them.
            0 | 1 => {
                let count = u.int_in_range(0..=3)?;
                let entries = (0..count).map(|_| arbitrary_entry(u)).collect::<Result<Vec<_>>>()?;
                Wal::payload(&entries).unwrap()
            }
            // A checksummed payload that is not (quite) a list of entries.
            2 => {
                let text: String = u.arbitrary()?;
                text.into_bytes()
            }
            _ => u.arbitrary::<Vec<u8>>()?,
        };
        seq = match u.int_in_range(0..=7u8)? {
            0 => u.arbitrary()?,
            1 => seq,
            _ => seq.wrapping_add(1),
        };
        if v1 {
            log.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            log.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            log.extend_from_slice(&payload);
        } else {
            log.extend_from_slice(&wal::encode_frame(seq, &payload));
        }
        // Damage between or inside frames.
        match u.int_in_range(0..=7u8)? {
            0 if !log.is_empty() => {
                let at = u.choose_index(log.len())?;
                log[at] ^= u.arbitrary::<u8>()?.max(1);
            }
            1 => {
                let junk: Vec<u8> = u.arbitrary()?;
                log.extend_from_slice(&junk);
            }
            _ => {}
        }
    }
    // A torn tail: the log cut anywhere.
    if u.arbitrary::<bool>().unwrap_or(false) && !log.is_empty() {
        let keep = u.choose_index(log.len()).unwrap_or(0);
        log.truncate(keep);
    }
    Ok(log)
}
