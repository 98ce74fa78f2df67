//! Build script: the contract hash, sha256 over every file of `wit/` (names
//! and contents, in name order), so a change to any interface, present or
//! future, gives new cache keys without anyone listing files by hand.

use std::path::Path;

use sha2::{Digest, Sha256};

fn main() {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut files: Vec<_> = std::fs::read_dir(&wit)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", wit.display()))
        .map(|entry| entry.expect("a readable wit/ entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name in wit/");
        let text = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(&text);
        hasher.update([0]);
    }
    println!("cargo:rustc-env=CAIRN_CONTRACT_HASH={}", hex::encode(hasher.finalize()));
    println!("cargo:rustc-env=CAIRN_CONTRACT_FILES={}", files.len());
}
