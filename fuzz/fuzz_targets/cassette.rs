//! Cassette import: the file `cairn runs import` reads
//! (`cairn::cassette::parse`, the store-free step of `cassette::import`)
//! and the JSON body `POST /api/v1/runs/import` takes (a JSON value, then
//! `serde_json::from_value::<Cassette>`, then `Cassette::check`). Both must
//! agree, and a cassette that passes must survive `save`'s encoding.

#![no_main]

use cairn::cassette::{self, Cassette, CassetteError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let from_file = cassette::parse(text, "fuzz.cassette.json");
    if let Ok(cassette) = &from_file {
        assert_eq!((cassette.format.as_str(), cassette.version), (cassette::FORMAT, cassette::VERSION));
        assert!(cassette.journal.iter().all(|e| e.key.run_id == cassette.run.id));
        let saved = serde_json::to_string_pretty(cassette).expect("a cassette always encodes");
        let again = cassette::parse(&saved, "saved").expect("a saved cassette parses");
        assert_eq!(again.run.id, cassette.run.id);
        assert_eq!(again.journal, cassette.journal);
    } else if let Err(error) = &from_file {
        assert!(matches!(error, CassetteError::Format { .. }), "{error}");
        let _ = error.to_string();
    }
    // The HTTP API's path to the same check.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        match serde_json::from_value::<Cassette>(value) {
            Ok(cassette) => {
                let checked = cassette.check("the request body");
                if from_file.is_ok() {
                    assert!(checked.is_ok(), "the file's check passed, the API's did not");
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
