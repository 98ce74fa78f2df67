//! References to files and directories in a run's JSON input and output.
//!
//! Large data moves between tasks by reference, never through JSON:
//!
//! - `{"$file": "sha256:<hex>", "name": "report.csv", "size": 123}` is a file
//!   in the blob store; a task given one finds it read-only at
//!   [`staged_path`] (`in/<first 16 hex>/report.csv`).
//! - `{"$dir": "sha256:<hex>", "name": "data", "size": 4096, "files": 3}` is
//!   a directory: its digest is that of a listing ([`DirListing`]) of its
//!   files, each a blob of its own.
//! - `{"$file": "out/report.csv"}` and `{"$dir": "out/data"}`, a path in the
//!   task's own directory, are what a task writes: the host stores the file
//!   (or every file of the directory) and puts the stored form in its place.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The key of a file reference.
pub const FILE_KEY: &str = "$file";
/// The key of a directory reference.
pub const DIR_KEY: &str = "$dir";
/// The folder staged references appear under, in the task's directory.
pub const STAGED_DIR: &str = "in";

/// A blob's content address: `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The digest of a sha256 hash in hex, if it is one.
    pub fn parse(text: &str) -> Option<Digest> {
        let hex = text.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Digest(text.to_owned()))
    }

    /// The digest of sha256 bytes.
    pub fn of_hash(hash: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Digest::parse(&text).ok_or_else(|| format!("{text:?} is not a sha256 digest (sha256:<64 hex digits>)"))
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

/// A file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// `$file`.
    File,
    /// `$dir`.
    Dir,
}

impl RefKind {
    /// Its key in JSON.
    pub fn key(self) -> &'static str {
        match self {
            RefKind::File => FILE_KEY,
            RefKind::Dir => DIR_KEY,
        }
    }
}

/// A reference found in a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// In the blob store.
    Stored {
        /// File or directory.
        kind: RefKind,
        /// Its content address (for a directory, its listing's).
        digest: Digest,
        /// The name it is staged under.
        name: String,
        /// Bytes (of every file, for a directory).
        size: u64,
    },
    /// A path in the task's own directory, not stored yet.
    Local {
        /// File or directory.
        kind: RefKind,
        /// As the task wrote it.
        path: String,
        /// The name it is to be staged under, if the task chose one.
        name: Option<String>,
    },
}

/// Why a reference cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RefError(pub String);

impl FileRef {
    /// The reference `value` is, if it is one: an object with a string under
    /// `$file` or `$dir`. A malformed one is an error, not a plain object.
    pub fn of(value: &Map<String, Value>) -> Option<Result<FileRef, RefError>> {
        let (kind, target) = match (value.get(FILE_KEY), value.get(DIR_KEY)) {
            (Some(Value::String(t)), None) => (RefKind::File, t),
            (None, Some(Value::String(t))) => (RefKind::Dir, t),
            (None, None) => return None,
            _ => return Some(Err(RefError("a reference has one string under `$file` or `$dir`".into()))),
        };
        let name = match value.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) if valid_name(name) => Some(name.clone()),
            Some(other) => {
                return Some(Err(RefError(format!(
                    "reference {target:?}: name {other} is not a file name (no '/', not '.' or '..', at most 255 bytes)"
                ))));
            }
        };
        if target.starts_with("sha256:") {
            let Some(digest) = Digest::parse(target) else {
                return Some(Err(RefError(format!("reference {target:?} is not a sha256 digest"))));
            };
            let size = value.get("size").and_then(Value::as_u64).unwrap_or(0);
            let name = name.unwrap_or_else(|| digest.hex()[..16].to_owned());
            return Some(Ok(FileRef::Stored { kind, digest, name, size }));
        }
        Some(check_local(target).map(|path| FileRef::Local { kind, path, name }))
    }

    /// The stored form of a reference, as JSON.
    pub fn stored_json(kind: RefKind, digest: &Digest, name: &str, size: u64, files: Option<u64>) -> Value {
        let mut object = Map::new();
        object.insert(kind.key().to_owned(), Value::String(digest.to_string()));
        object.insert("name".into(), Value::String(name.to_owned()));
        object.insert("size".into(), Value::from(size));
        if let Some(files) = files {
            object.insert("files".into(), Value::from(files));
        }
        Value::Object(object)
    }
}

/// A task-relative path a local reference may name: relative, `/`-separated,
/// never climbing out with `..`, not the staged folder's own files.
fn check_local(path: &str) -> Result<String, RefError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if path.starts_with('/') || parts.is_empty() || parts.contains(&"..") || path.contains('\0') {
        return Err(RefError(format!(
            "reference {path:?} is neither a sha256 digest nor a path inside the task's directory"
        )));
    }
    if parts[0] == STAGED_DIR {
        return Err(RefError(format!(
            "reference {path:?} names a file given to the task (under {STAGED_DIR}/): pass on the reference it came as, not its path"
        )));
    }
    Ok(parts.join("/"))
}

/// Whether `name` can name a staged file: one path part, 1 to 255 bytes.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// Where a stored reference is staged in the task's directory:
/// `in/<first 16 hex digits>/<name>`. The SDKs compute the same path.
pub fn staged_path(digest: &Digest, name: &str) -> String {
    format!("{STAGED_DIR}/{}/{name}", &digest.hex()[..16])
}

/// Every reference in `value`, in document order.
pub fn refs_in(value: &Value) -> Result<Vec<FileRef>, RefError> {
    let mut found = Vec::new();
    visit(value, &mut |r| found.push(r.clone()))?;
    Ok(found)
}

/// Every stored digest `value` refers to, with its kind, skipping whatever
/// else in it is malformed: what a collection must keep.
pub fn stored_digests(value: &Value) -> Vec<(RefKind, Digest)> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(object) => {
                for (key, kind) in [(FILE_KEY, RefKind::File), (DIR_KEY, RefKind::Dir)] {
                    if let Some(digest) = object.get(key).and_then(Value::as_str).and_then(Digest::parse) {
                        found.push((kind, digest));
                    }
                }
                stack.extend(object.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

/// Replaces references in `value`: `f` returns the value to put in a
/// reference's place, or `None` to keep it.
pub fn rewrite_refs<E: From<RefError>>(
    value: &mut Value,
    f: &mut dyn FnMut(&FileRef) -> Result<Option<Value>, E>,
) -> Result<(), E> {
    match value {
        Value::Object(object) => match FileRef::of(object) {
            Some(r) => {
                if let Some(new) = f(&r?)? {
                    *value = new;
                }
                Ok(())
            }
            None => object.values_mut().try_for_each(|v| rewrite_refs(v, f)),
        },
        Value::Array(items) => items.iter_mut().try_for_each(|v| rewrite_refs(v, f)),
        _ => Ok(()),
    }
}

fn visit(value: &Value, f: &mut dyn FnMut(&FileRef)) -> Result<(), RefError> {
    match value {
        Value::Object(object) => match FileRef::of(object) {
            Some(r) => {
                f(&r?);
                Ok(())
            }
            None => object.values().try_for_each(|v| visit(v, f)),
        },
        Value::Array(items) => items.iter().try_for_each(|v| visit(v, f)),
        _ => Ok(()),
    }
}

/// What a directory's digest addresses: its files, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirListing {
    /// Its files.
    pub files: Vec<DirEntry>,
}

/// One file of a [`DirListing`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// `/`-separated, relative to the directory.
    pub path: String,
    /// The file's blob.
    pub digest: Digest,
    /// Its bytes.
    pub size: u64,
}

impl DirListing {
    /// Checks every path of a listing read back from the store: relative,
    /// inside the directory, each part a valid name.
    pub fn check(&self) -> Result<(), RefError> {
        for entry in &self.files {
            if !entry.path.split('/').all(valid_name) {
                return Err(RefError(format!("directory listing names {:?}, not a path inside it", entry.path)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_found_anywhere_and_plain_objects_are_left_alone() {
        let doc = json!({
            "report": {"$file": format!("sha256:{HEX}"), "name": "r.csv", "size": 3},
            "list": [{"$dir": "out/data"}, {"plain": 1}, {"$file": "./out//x.bin", "name": "x"}],
        });
        // Keys in sorted order: "list" before "report".
        let found = refs_in(&doc).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0], FileRef::Local { kind: RefKind::Dir, path: "out/data".into(), name: None });
        assert_eq!(found[1], FileRef::Local { kind: RefKind::File, path: "out/x.bin".into(), name: Some("x".into()) });
        let FileRef::Stored { kind, digest, name, size } = &found[2] else { panic!("{found:?}") };
        assert_eq!((*kind, digest.hex(), name.as_str(), *size), (RefKind::File, HEX, "r.csv", 3));
        assert_eq!(staged_path(digest, name), "in/0123456789abcdef/r.csv");
    }

    #[test]
    fn bad_references_are_errors_not_data() {
        for bad in [
            json!({"$file": "sha256:abc"}),
            json!({"$file": "/etc/passwd"}),
            json!({"$file": "../up"}),
            json!({"$file": "a/../../up"}),
            json!({"$file": "x", "$dir": "y"}),
            json!({"$file": 3}),
            json!({"$file": "x", "name": "a/b"}),
            json!({"$file": "x", "name": ".."}),
        ] {
            assert!(refs_in(&json!({"nested": [bad.clone()]})).is_err(), "{bad}");
        }
        assert!(Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_none(), "lowercase only");
    }

    #[test]
    fn references_are_rewritten_in_place() {
        let mut doc = json!({"a": {"$file": "out/a.txt"}, "b": [1, {"$file": "out/b.txt"}]});
        let digest = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        rewrite_refs::<RefError>(&mut doc, &mut |r| match r {
            FileRef::Local { path, .. } if path == "out/a.txt" => {
                Ok(Some(FileRef::stored_json(RefKind::File, &digest, "a.txt", 5, None)))
            }
            _ => Ok(None),
        })
        .unwrap();
        assert_eq!(doc["a"], json!({"$file": format!("sha256:{HEX}"), "name": "a.txt", "size": 5}));
        assert_eq!(doc["b"][1], json!({"$file": "out/b.txt"}));
    }
}
