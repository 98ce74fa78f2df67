//! Files in the task's own directory: the same small API as the Python and
//! JavaScript SDKs, over `std::fs` (WASI gives the task its run's directory
//! as `.`, and files handed to the run read-only under `in/`).
//!
//! ```no_run
//! use cairn_sdk::files;
//! # fn main() -> Result<(), cairn_sdk::TaskError> {
//! files::write_text("out/report.csv", "a,b\n1,2\n")?; // folders are made as needed
//! assert_eq!(files::read_text("out/report.csv")?, "a,b\n1,2\n");
//! assert_eq!(files::list("out")?, ["report.csv"]);
//! # Ok(())
//! # }
//! ```
//!
//! Paths are relative to the task's directory, with `/` between parts; an
//! absolute path or one that climbs out with `..` is refused. Failures are a
//! [`FileError`], which becomes a [`TaskError`] of kind `file-error`, not
//! retried (the same call would fail again), naming the path and the reason.

use std::io::ErrorKind;

use crate::TaskError;

/// A failed file operation: the path the task gave, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The path as given.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for FileError {}

/// Kind `file-error`, not retryable.
impl From<FileError> for TaskError {
    fn from(e: FileError) -> Self {
        TaskError::new("file-error", e.to_string()).retryable(false)
    }
}

fn failed(path: &str, error: &std::io::Error) -> FileError {
    let reason = match error.kind() {
        ErrorKind::NotFound => "no such file or directory".to_owned(),
        ErrorKind::AlreadyExists => "it exists already".to_owned(),
        ErrorKind::NotADirectory => "a part of the path is not a directory".to_owned(),
        ErrorKind::IsADirectory => "it is a directory".to_owned(),
        ErrorKind::ReadOnlyFilesystem => {
            "it is read-only (files handed to the task under in/ cannot be changed)".to_owned()
        }
        ErrorKind::PermissionDenied => "not permitted (outside the task's directories, or read-only?)".to_owned(),
        ErrorKind::StorageFull => "no space left (the environment's disk limit?)".to_owned(),
        ErrorKind::DirectoryNotEmpty => "the directory is not empty".to_owned(),
        _ => error.to_string(),
    };
    FileError { path: path.to_owned(), reason }
}

/// `path` once it is known to stay inside the task's directories.
fn checked(path: &str) -> Result<String, FileError> {
    let refuse = |reason: &str| Err(FileError { path: path.to_owned(), reason: reason.to_owned() });
    if path.is_empty() {
        return refuse("the path must not be empty");
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if path.starts_with('/') || parts.contains(&"..") {
        return refuse("paths are relative to the task's directory and may not climb out of it with '..'");
    }
    Ok(if parts.is_empty() { ".".to_owned() } else { parts.join("/") })
}

/// The file's bytes.
pub fn read_bytes(path: &str) -> Result<Vec<u8>, FileError> {
    std::fs::read(checked(path)?).map_err(|e| failed(path, &e))
}

/// The file's text, which must be UTF-8.
pub fn read_text(path: &str) -> Result<String, FileError> {
    String::from_utf8(read_bytes(path)?)
        .map_err(|_| FileError { path: path.to_owned(), reason: "it is not UTF-8 text".to_owned() })
}

/// Writes `bytes` as the whole file, making its folders as needed.
pub fn write_bytes(path: &str, bytes: impl AsRef<[u8]>) -> Result<(), FileError> {
    let inner = checked(path)?;
    if let Some((parent, _)) = inner.rsplit_once('/') {
        std::fs::create_dir_all(parent).map_err(|e| failed(path, &e))?;
    }
    std::fs::write(&inner, bytes).map_err(|e| failed(path, &e))
}

/// Writes `text` as the whole file, making its folders as needed.
pub fn write_text(path: &str, text: &str) -> Result<(), FileError> {
    write_bytes(path, text.as_bytes())
}

/// Whether `path` exists (a file or a folder).
pub fn exists(path: &str) -> Result<bool, FileError> {
    std::fs::exists(checked(path)?).map_err(|e| failed(path, &e))
}

/// The size of a file, in bytes.
pub fn size(path: &str) -> Result<u64, FileError> {
    Ok(std::fs::metadata(checked(path)?).map_err(|e| failed(path, &e))?.len())
}

/// The names in folder `path` (`"."`: the task's directory), sorted; folders end with `/`.
pub fn list(path: &str) -> Result<Vec<String>, FileError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(checked(path)?).map_err(|e| failed(path, &e))? {
        let entry = entry.map_err(|e| failed(path, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let folder = entry.file_type().is_ok_and(|t| t.is_dir());
        names.push(if folder { format!("{name}/") } else { name });
    }
    names.sort();
    Ok(names)
}

/// Makes folder `path` and any above it; nothing happens if it exists.
pub fn mkdir(path: &str) -> Result<(), FileError> {
    std::fs::create_dir_all(checked(path)?).map_err(|e| failed(path, &e))
}

/// Removes a file, or an empty folder.
pub fn remove(path: &str) -> Result<(), FileError> {
    let inner = checked(path)?;
    let folder = std::fs::metadata(&inner).map_err(|e| failed(path, &e))?.is_dir();
    if folder { std::fs::remove_dir(&inner) } else { std::fs::remove_file(&inner) }.map_err(|e| failed(path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_tasks_directories() {
        assert_eq!(checked("out/./a.csv").unwrap(), "out/a.csv");
        assert_eq!(checked("./").unwrap(), ".");
        for bad in ["", "/etc/passwd", "../x", "a/../../x"] {
            assert!(checked(bad).is_err(), "{bad:?}");
        }
        let e: TaskError = checked("../x").unwrap_err().into();
        assert_eq!((e.kind.as_str(), e.retryable), ("file-error", false));
        assert!(e.message.starts_with("../x: "), "{}", e.message);
    }
}
