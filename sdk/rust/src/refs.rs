//! [`File`] and [`Dir`]: files that pass between tasks by reference, never
//! through JSON.
//!
//! A task writes a file in its directory and returns (or gives a child)
//! `File::from_path("out/report.csv")`; the host stores it in its blob store
//! and puts `{"$file": "sha256:…", "name": "report.csv", "size": 123}` in its
//! place. A task that receives such a reference finds the file read-only at
//! [`File::path`] (`in/<16 hex digits>/report.csv`) and reads it with
//! [`crate::files`] or `std::fs`.
//!
//! ```no_run
//! use cairn_sdk::{File, TaskError, files};
//! # fn main() -> Result<(), TaskError> {
//! files::write_text("out/table.csv", "a,b\n1,2\n")?;
//! let table = File::from_path("out/table.csv");          // goes into the output or a child's input
//! # let received: File = table.clone();
//! let text = received.read_text()?;                        // a File from the input, staged under in/
//! # Ok(())
//! # }
//! ```

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::files::{self, FileError};

/// The folder references are staged under.
const STAGED: &str = "in";

/// Where a stored reference is staged: `in/<first 16 hex digits>/<name>`.
fn staged(target: &str, name: &str) -> String {
    let hex = target.strip_prefix("sha256:").unwrap_or(target);
    format!("{STAGED}/{}/{name}", &hex[..hex.len().min(16)])
}

/// A reference's fields, read from its JSON object.
struct Parts {
    target: String,
    name: Option<String>,
    size: Option<u64>,
    files: Option<u64>,
}

fn parts(key: &str, value: Value) -> Result<Parts, String> {
    let Value::Object(mut object) = value else { return Err(format!("a reference is an object with {key:?}")) };
    let Some(Value::String(target)) = object.remove(key) else {
        return Err(format!("a reference has a string under {key:?}"));
    };
    Ok(Parts {
        target,
        name: object.remove("name").and_then(|n| n.as_str().map(str::to_owned)),
        size: object.remove("size").and_then(|s| s.as_u64()),
        files: object.remove("files").and_then(|f| f.as_u64()),
    })
}

macro_rules! reference {
    ($(#[$doc:meta])* $type:ident, $key:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $type {
            /// `sha256:…` once stored; a path in the task's directory before.
            target: String,
            name: Option<String>,
            size: Option<u64>,
            files: Option<u64>,
        }

        impl $type {
            /// A reference to `path` in the task's own directory, for the
            /// host to store when it leaves the task (in its output, or a
            /// child's input).
            #[must_use]
            pub fn from_path(path: &str) -> Self {
                $type { target: path.to_owned(), name: None, size: None, files: None }
            }

            /// [`Self::from_path`], staged under `name` instead of the path's last part.
            #[must_use]
            pub fn named(mut self, name: &str) -> Self {
                self.name = Some(name.to_owned());
                self
            }

            /// Where it is in the task's directory: under `in/` for one the
            /// task was given, its own path for one it wrote.
            pub fn path(&self) -> String {
                match self.digest() {
                    Some(digest) => staged(digest, self.name()),
                    None => self.target.clone(),
                }
            }

            /// Its name: the one it is staged under (for a stored one without a
            /// name, the first 16 hex digits of its digest, as the host stages it).
            pub fn name(&self) -> &str {
                match (&self.name, self.target.strip_prefix("sha256:")) {
                    (Some(name), _) => name,
                    (None, Some(hex)) => &hex[..hex.len().min(16)],
                    (None, None) => self.target.rsplit('/').next().unwrap_or(&self.target),
                }
            }

            /// Its content address, once stored.
            pub fn digest(&self) -> Option<&str> {
                self.target.starts_with("sha256:").then_some(self.target.as_str())
            }

            /// Its bytes (of all its files, for a directory), once stored.
            pub fn size(&self) -> Option<u64> {
                self.size
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut object = Map::new();
                object.insert($key.into(), Value::String(self.target.clone()));
                if let Some(name) = &self.name {
                    object.insert("name".into(), Value::String(name.clone()));
                }
                if let Some(size) = self.size {
                    object.insert("size".into(), size.into());
                }
                if let Some(files) = self.files {
                    object.insert("files".into(), files.into());
                }
                Value::Object(object).serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let Parts { target, name, size, files } =
                    parts($key, Value::deserialize(deserializer)?).map_err(D::Error::custom)?;
                Ok($type { target, name, size, files })
            }
        }
    };
}

reference!(
    /// A file passed by reference: `{"$file": "sha256:…", "name", "size"}`.
    File,
    "$file"
);

reference!(
    /// A directory passed by reference: `{"$dir": "sha256:…", "name", "size", "files"}`,
    /// each of its files a blob of its own.
    Dir,
    "$dir"
);

impl File {
    /// Its bytes.
    pub fn read_bytes(&self) -> Result<Vec<u8>, FileError> {
        files::read_bytes(&self.path())
    }

    /// Its text (UTF-8).
    pub fn read_text(&self) -> Result<String, FileError> {
        files::read_text(&self.path())
    }
}

impl Dir {
    /// How many files it holds, once stored.
    pub fn file_count(&self) -> Option<u64> {
        self.files
    }

    /// The names in it (or in `sub`, a folder inside it), as [`files::list`] gives them.
    pub fn list(&self, sub: &str) -> Result<Vec<String>, FileError> {
        if sub.is_empty() || sub == "." {
            files::list(&self.path())
        } else {
            files::list(&format!("{}/{sub}", self.path()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_serialise_as_the_host_reads_them() {
        let local = File::from_path("out/table.csv");
        assert_eq!(serde_json::to_value(&local).unwrap(), serde_json::json!({"$file": "out/table.csv"}));
        assert_eq!((local.path().as_str(), local.name(), local.digest()), ("out/table.csv", "table.csv", None));
        let hex = "ab".repeat(32);
        let stored: File =
            serde_json::from_value(serde_json::json!({"$file": format!("sha256:{hex}"), "name": "t.csv", "size": 9}))
                .unwrap();
        assert_eq!(stored.path(), format!("in/{}/t.csv", &hex[..16]));
        assert_eq!(stored.size(), Some(9));
        let back = serde_json::to_value(&stored).unwrap();
        assert_eq!(back["$file"], format!("sha256:{hex}"));
        let dir: Dir = serde_json::from_value(
            serde_json::json!({"$dir": format!("sha256:{hex}"), "name": "d", "size": 3, "files": 2}),
        )
        .unwrap();
        assert_eq!((dir.path(), dir.file_count()), (format!("in/{}/d", &hex[..16]), Some(2)));
        assert!(serde_json::from_value::<File>(serde_json::json!({"$dir": "x"})).is_err());
        let unnamed: File = serde_json::from_value(serde_json::json!({"$file": format!("sha256:{hex}")})).unwrap();
        assert_eq!(unnamed.path(), format!("in/{0}/{0}", &hex[..16]), "where the host stages it");
    }
}
