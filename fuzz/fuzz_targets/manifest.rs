//! The manifest parser on any UTF-8 text: `cairn::manifest::Manifest::parse`
//! (and the mock provider's rules-file parser), then the parsed manifest
//! used as the host uses it. The corpus is seeded with the example
//! project's and the tests' manifests.

#![no_main]

#[path = "common/manifest.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    common::parse_and_use(text);
});
