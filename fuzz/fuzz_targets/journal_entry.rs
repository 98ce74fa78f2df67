//! Journal entries as the stores read them back: a redb value or a
//! PostgreSQL text column is one `JournalEntry` in JSON, a log frame's
//! payload a JSON list of them (`serde_json::from_slice`, as
//! `store::redb`'s `decode` and `store::postgres::rows::decode`, private, do). A
//! decoded entry is then used as the host uses it: its database key
//! (`ReplayKey::encode`), its JSON view (`views::journal_json`), its output
//! read as what a replayed call returns (`ChatResponse` for `llm`,
//! `ChildLink` for `child`, `OutboundResponse` for `http`), and written again,
//! which must give it back unchanged.

#![no_main]

use cairn::llm::ChatResponse;
use cairn::model::{CallKind, JournalEntry};
use cairn::services::children::ChildLink;
use cairn::services::http::OutboundResponse;
use cairn::store::wal::Wal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = serde_json::from_slice::<JournalEntry>(data) {
        use_entry(&entry);
    }
    if let Ok(entries) = serde_json::from_slice::<Vec<JournalEntry>>(data) {
        let payload = Wal::payload(&entries).expect("entries always encode");
        let back: Vec<JournalEntry> = serde_json::from_slice(&payload).expect("a payload the host wrote decodes");
        assert_eq!(back, entries);
        entries.iter().for_each(use_entry);
    }
    // A PostgreSQL column holds text, read with `from_str` (`store::postgres::rows::decode`).
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(entry) = serde_json::from_str::<JournalEntry>(text)
    {
        use_entry(&entry);
    }
});

fn use_entry(entry: &JournalEntry) {
    let key = entry.key.encode();
    assert!(key.starts_with(&entry.key.run_id));
    assert!(key.ends_with(&format!("{:010}", entry.key.occurrence)));
    let view = cairn::views::journal_json(entry);
    assert_eq!(view["kind"], entry.key.kind.as_str());
    // Written again (a redb value), it reads back the same.
    let bytes = serde_json::to_vec(entry).expect("an entry always encodes");
    let back: JournalEntry = serde_json::from_slice(&bytes).expect("an entry the host wrote decodes");
    assert_eq!(&back, entry);
    // What a replayed call makes of the recorded output.
    match entry.key.kind {
        CallKind::Llm => {
            if let Ok(response) = serde_json::from_str::<ChatResponse>(&entry.output) {
                let _ = response.usage.total();
            }
        }
        CallKind::Child => {
            let _ = serde_json::from_str::<ChildLink>(&entry.output);
        }
        CallKind::Http => {
            // A recorded response reads back as the response the guest got, and
            // written again it stays the same.
            if let Ok(response) = serde_json::from_str::<OutboundResponse>(&entry.output) {
                let again = serde_json::to_string(&response).expect("a response always encodes");
                assert_eq!(serde_json::from_str::<OutboundResponse>(&again).expect("it decodes"), response);
            }
        }
        CallKind::Trace | CallKind::Group | CallKind::Reject => {}
    }
    let _ = cairn::journal::canonical_input(&entry.output);
}
