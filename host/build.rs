//! Build script: the contract hash, sha256 over every file under `wit/`
//! (relative paths and contents, in path order, subdirectories included), so
//! a change to any interface, present or future, gives new cache keys
//! without anyone listing files by hand.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Every file under `dir`, in path order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        println!("cargo:rerun-if-changed={}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
            let path = entry.expect("a readable wit/ entry").path();
            if path.is_dir() { dirs.push(path) } else { files.push(path) }
        }
    }
    files.sort();
    files
}

fn main() {
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let files = files_under(&wit);
    let mut hasher = Sha256::new();
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.strip_prefix(&wit).expect("a file under wit/").to_str().expect("a UTF-8 path in wit/");
        let text = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(&text);
        hasher.update([0]);
    }
    println!("cargo:rustc-env=CAIRN_CONTRACT_HASH={}", hex::encode(hasher.finalize()));
    println!("cargo:rustc-env=CAIRN_CONTRACT_FILES={}", files.len());
}
