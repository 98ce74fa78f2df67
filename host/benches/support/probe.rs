//! The probe fixture, and a scratch project around it, for the benchmarks
//! that run guests through a host.

#![allow(dead_code)] // each bench uses its own part of this

use std::path::{Path, PathBuf};

/// The built probe component (`./x setup` builds it).
pub fn probe() -> PathBuf {
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/components/probe.wasm");
    assert!(probe.is_file(), "build the guests first: ./x setup");
    probe
}

/// A scratch directory holding `cairn.toml` with `manifest` in it, where
/// `{probe}` stands for the probe's path (quoted); the directory goes when
/// the first value is dropped.
pub fn scratch_project(manifest: &str) -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("cairn.toml");
    std::fs::write(&path, manifest.replace("{probe}", &format!("{:?}", probe().display().to_string()))).unwrap();
    (scratch, path)
}
