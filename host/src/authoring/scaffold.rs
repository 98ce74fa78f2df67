//! `cairn init` and `cairn new`: a project, and a task in it, from nothing.
//!
//! `init` writes a `cairn.toml` on the embedded defaults (redb store, mock
//! LLM). `new NAME --lang L` writes the task's source with the SDK wired up,
//! appends its manifest entry (component, build command, cassette folder),
//! and makes the folder its recorded runs go in. Nothing is overwritten.

use std::path::{Path, PathBuf};

use super::toolkit::Toolkit;
use super::{AuthoringError, Lang};
use crate::manifest::{MANIFEST_FILE, Manifest};

const MANIFEST: &str = include_str!("templates/cairn.toml");
const GITIGNORE: &str = include_str!("templates/gitignore");
const RUST_CARGO: &str = include_str!("templates/rust-Cargo.toml");
const RUST_LIB: &str = include_str!("templates/rust-lib.rs.tmpl");
const PYTHON_APP: &str = include_str!("templates/app.py");
const JS_APP: &str = include_str!("templates/app.js");
const CASSETTES: &str = include_str!("templates/cassettes.md");

/// The templates' placeholders: `@task@` (the name), `@Type@` (its Rust type),
/// `@function@` (its function), `@sdk@` (the Rust SDK's folder). Braces
/// would clash with the languages' own (f-strings, template literals).
///
/// What `init` or `new` wrote, relative to the project's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Files created.
    pub created: Vec<PathBuf>,
    /// Files added to.
    pub changed: Vec<PathBuf>,
    /// Things the author should know (a missing build tool).
    pub warnings: Vec<String>,
}

/// Makes `dir` (created if need be) a Cairn project: `cairn.toml` and a
/// `.gitignore`, unless it has them. Refuses a folder that is one already.
pub fn init(dir: &Path) -> Result<Written, AuthoringError> {
    let manifest = dir.join(MANIFEST_FILE);
    if manifest.exists() {
        return Err(AuthoringError::Exists(format!(
            "{} exists: this folder is a Cairn project already; add a task with `cairn new NAME --lang rust|python|js`",
            manifest.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| AuthoringError::io(dir, e))?;
    let mut written = Written::default();
    write_new(&manifest, MANIFEST)?;
    written.created.push(MANIFEST_FILE.into());
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        write_new(&ignore, GITIGNORE)?;
        written.created.push(".gitignore".into());
    }
    Ok(written)
}

/// Adds task `name` in `lang` to the project of `manifest_path`.
pub fn new_task(manifest_path: &Path, name: &str, lang: Lang, kit: &Toolkit) -> Result<Written, AuthoringError> {
    check_name(name)?;
    let manifest = Manifest::load(manifest_path).map_err(|e| AuthoringError::Manifest(e.to_string()))?;
    if manifest.tasks.contains_key(name) {
        return Err(AuthoringError::Exists(format!(
            "{} has a task named {name:?} already; pick another name",
            manifest_path.display()
        )));
    }
    let project = manifest.dir.clone();
    let source = project.join(name);
    if source.exists() {
        return Err(AuthoringError::Exists(format!(
            "{} exists; `cairn new` writes the task's source there and overwrites nothing: pick another name or move it",
            source.display()
        )));
    }
    let mut written = Written::default();
    let fill = |template: &str| {
        template
            .replace("@task@", name)
            .replace("@Type@", &type_name(name))
            .replace("@function@", &name.replace('-', "_"))
    };
    let (build, output) = match lang {
        Lang::Rust => {
            let sdk = kit.sdk().join("rust");
            let cargo = fill(RUST_CARGO).replace("@sdk@", &toml_escape(&sdk.display().to_string()));
            create(&project, &mut written, &Path::new(name).join("Cargo.toml"), &cargo)?;
            create(&project, &mut written, &Path::new(name).join("src").join("lib.rs"), &fill(RUST_LIB))?;
            // The SDK's lock: the same dependency versions it is tested with, offline.
            if let Ok(lock) = std::fs::read_to_string(sdk.join("Cargo.lock")) {
                create(&project, &mut written, &Path::new(name).join("Cargo.lock"), &lock)?;
            }
            let output = format!("target/rust/wasm32-wasip1/release/{}.wasm", name.replace('-', "_"));
            let command = format!(
                "cargo build --release --target wasm32-wasip1 --manifest-path {name}/Cargo.toml --target-dir target/rust"
            );
            (command, output)
        }
        Lang::Python => {
            create(&project, &mut written, &Path::new(name).join("app.py"), &fill(PYTHON_APP))?;
            if let Err(missing) = kit.python() {
                written.warnings.push(missing.to_string());
            }
            let output = format!("target/python/{name}.wasm");
            (format!("\"$CAIRN_PYTHON\" \"$CAIRN_SDK/python/build.py\" {name} -o {output}"), output)
        }
        Lang::Js => {
            create(&project, &mut written, &Path::new(name).join("app.js"), &fill(JS_APP))?;
            if let Err(missing) = kit.check_js() {
                written.warnings.push(missing.to_string());
            }
            let output = format!("target/js/{name}.wasm");
            (format!("node \"$CAIRN_SDK/js/build.js\" {name}/app.js -o {output}"), output)
        }
    };
    let cassettes = Path::new("cassettes").join(name);
    create(&project, &mut written, &cassettes.join("README.md"), &fill(CASSETTES))?;
    let entry = format!(
        "\n# Added by `cairn new {name} --lang {lang}`.\n[tasks.{name}]\ncomponent = \"components/{name}.wasm\"\nbuild = {{ command = '{build}', output = \"{output}\" }}\ncassettes = \"cassettes/{name}\"\nretries = 2\n",
        lang = lang.as_str()
    );
    let mut text = std::fs::read_to_string(manifest_path).map_err(|e| AuthoringError::io(manifest_path, e))?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&entry);
    // The entry must leave a manifest that loads: checked before it is written.
    Manifest::parse(manifest_path, &text).map_err(|e| AuthoringError::Manifest(e.to_string()))?;
    replace(manifest_path, &text)?;
    written.changed.push(MANIFEST_FILE.into());
    Ok(written)
}

/// A task name `new` accepts: it becomes a folder, a crate, a module and a
/// TOML key, so lowercase letters, digits and dashes, starting with a letter.
fn check_name(name: &str) -> Result<(), AuthoringError> {
    let ok = name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok { Ok(()) } else { Err(AuthoringError::BadName(name.to_owned())) }
}

/// `report-writer` → `ReportWriter`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

fn toml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Creates `relative` under `project` (with its folders); never overwrites.
fn create(project: &Path, written: &mut Written, relative: &Path, text: &str) -> Result<(), AuthoringError> {
    let path = project.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| AuthoringError::io(parent, e))?;
    }
    write_new(&path, text)?;
    written.created.push(relative.to_path_buf());
    Ok(())
}

fn write_new(path: &Path, text: &str) -> Result<(), AuthoringError> {
    use std::io::Write;
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| AuthoringError::io(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| AuthoringError::io(path, e))
}

/// Replaces `path`'s text through a sibling file and a rename, so a crash
/// leaves the old manifest or the new one.
fn replace(path: &Path, text: &str) -> Result<(), AuthoringError> {
    let partial = path.with_extension(format!("toml.partial-{}", std::process::id()));
    std::fs::write(&partial, text).map_err(|e| AuthoringError::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| AuthoringError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_folders_crates_and_keys() {
        for good in ["hello", "report-writer", "a1"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Hello", "1st", "a_b", "a--b", "a-", "a b", "../x", &"a".repeat(49)] {
            let err = check_name(bad).unwrap_err();
            assert!(err.to_string().contains("lowercase letters"), "{bad:?}: {err}");
        }
        assert_eq!(type_name("report-writer"), "ReportWriter");
    }

    #[test]
    fn a_project_gets_a_task_in_each_language_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let kit = Toolkit::locate().unwrap();
        let written = init(dir.path()).unwrap();
        assert_eq!(written.created, [PathBuf::from("cairn.toml"), PathBuf::from(".gitignore")]);
        assert!(init(dir.path()).unwrap_err().to_string().contains("a Cairn project already"));
        let manifest = dir.path().join("cairn.toml");
        for (name, lang) in [("hello-rs", Lang::Rust), ("hello-py", Lang::Python), ("hello-js", Lang::Js)] {
            new_task(&manifest, name, lang, &kit).unwrap();
        }
        let loaded = Manifest::load(&manifest).unwrap();
        assert_eq!(loaded.tasks.len(), 3);
        let rust = &loaded.tasks["hello-rs"];
        assert!(rust.build.as_ref().unwrap().command.contains("--manifest-path hello-rs/Cargo.toml"));
        assert_eq!(rust.cassettes.as_deref(), Some(dir.path().join("cassettes/hello-rs").as_path()));
        let lib = std::fs::read_to_string(dir.path().join("hello-rs/src/lib.rs")).unwrap();
        assert!(lib.contains("impl Task for HelloRs") && lib.contains("export_task!(HelloRs)"), "{lib}");
        let cargo = std::fs::read_to_string(dir.path().join("hello-rs/Cargo.toml")).unwrap();
        assert!(cargo.contains(&kit.sdk().join("rust").display().to_string()), "{cargo}");
        let python = std::fs::read_to_string(dir.path().join("hello-py/app.py")).unwrap();
        assert!(python.contains("def hello_py(name: str)") && python.contains("export_task(hello_py)"));
        // Taken names and folders are refused, and the manifest is left as it was.
        let before = std::fs::read_to_string(&manifest).unwrap();
        let again = new_task(&manifest, "hello-py", Lang::Js, &kit).unwrap_err();
        assert!(again.to_string().contains("has a task named \"hello-py\" already"), "{again}");
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        let taken = new_task(&manifest, "taken", Lang::Rust, &kit).unwrap_err();
        assert!(taken.to_string().contains("overwrites nothing"), "{taken}");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), before);
    }

    #[test]
    fn a_broken_manifest_is_reported_not_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("cairn.toml");
        std::fs::write(&manifest, "[tasks.x\n").unwrap();
        let err = new_task(&manifest, "hello", Lang::Python, &Toolkit::locate().unwrap()).unwrap_err();
        assert!(matches!(err, AuthoringError::Manifest(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), "[tasks.x\n");
        assert!(!dir.path().join("hello").exists());
    }
}
