//! Where Cairn's authoring kit is on this machine: the WIT contract, the
//! SDKs, and the tools that build Python and JavaScript guests.
//!
//! A task author's project may live anywhere, so its build commands reach
//! the kit through variables that `cairn build` sets: `$CAIRN_HOME` (the
//! kit), `$CAIRN_SDK` (its `sdk/`), `$CAIRN_WIT` (its `wit/`) and
//! `$CAIRN_PYTHON` (a Python with componentize-py). The kit is found from
//! `CAIRN_HOME`, else from where the `cairn` binary is (a checkout's
//! `target/*/cairn`), else from where it was built.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::AuthoringError;

/// The variables `cairn build` gives build commands, and what each needs.
pub const VARIABLES: &[(&str, &str)] = &[
    ("CAIRN_HOME", "the Cairn kit (a checkout with `wit/` and `sdk/`)"),
    ("CAIRN_SDK", "the kit's SDKs"),
    ("CAIRN_WIT", "the kit's WIT contract"),
    ("CAIRN_PYTHON", "a Python with componentize-py 0.25.1"),
];

/// The componentize-js package the JavaScript SDK's build needs.
const COMPONENTIZE_JS: &str = "js/node_modules/@bytecodealliance/componentize-js/package.json";

/// A located kit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolkit {
    /// Its root: `wit/` and `sdk/` are in it.
    pub root: PathBuf,
}

/// Whether `dir` holds a kit.
fn is_kit(dir: &Path) -> bool {
    dir.join("wit").join("world.wit").is_file() && dir.join("sdk").join("rust").join("Cargo.toml").is_file()
}

impl Toolkit {
    /// Finds the kit: `CAIRN_HOME`, else a parent of the running binary,
    /// else the checkout this binary was built from.
    pub fn locate() -> Result<Toolkit, AuthoringError> {
        if let Some(home) = std::env::var_os("CAIRN_HOME").filter(|h| !h.is_empty()) {
            let root = PathBuf::from(home);
            return if is_kit(&root) {
                Ok(Toolkit { root })
            } else {
                Err(AuthoringError::NoToolkit(format!(
                    "CAIRN_HOME is {}, which has no wit/world.wit and sdk/rust/Cargo.toml; point it at a Cairn checkout",
                    root.display()
                )))
            };
        }
        let from_binary = std::env::current_exe().ok().and_then(|exe| {
            let exe = exe.canonicalize().unwrap_or(exe);
            exe.ancestors().skip(1).take(4).find(|dir| is_kit(dir)).map(Path::to_path_buf)
        });
        let built_from =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().filter(|dir| is_kit(dir)).map(Path::to_path_buf);
        match from_binary.or(built_from) {
            Some(root) => Ok(Toolkit { root }),
            None => Err(AuthoringError::NoToolkit(
                "this cairn binary is not inside a Cairn checkout and CAIRN_HOME is not set; set CAIRN_HOME to a checkout (on which `./x setup` has run)".into(),
            )),
        }
    }

    /// `sdk/` of the kit.
    pub fn sdk(&self) -> PathBuf {
        self.root.join("sdk")
    }

    /// `wit/` of the kit.
    pub fn wit(&self) -> PathBuf {
        self.root.join("wit")
    }

    /// A Python that can run the Python SDK's build: `CAIRN_PYTHON`, else the
    /// kit's `.venv`, else the Python beside a `componentize-py` on `PATH`.
    pub fn python(&self) -> Result<PathBuf, AuthoringError> {
        let has_componentize = |python: &Path| python.parent().is_some_and(|bin| bin.join("componentize-py").is_file());
        if let Some(set) = std::env::var_os("CAIRN_PYTHON").filter(|p| !p.is_empty()) {
            let python = PathBuf::from(set);
            return if python.is_file() && has_componentize(&python) {
                Ok(python)
            } else {
                Err(AuthoringError::Missing(format!(
                    "CAIRN_PYTHON is {}, which is not a Python with componentize-py installed beside it; install it with `{} -m pip install componentize-py==0.25.1`, or unset CAIRN_PYTHON",
                    python.display(),
                    python.display()
                )))
            };
        }
        let venv = self.root.join(".venv").join("bin").join("python");
        if venv.is_file() && has_componentize(&venv) {
            return Ok(venv);
        }
        let on_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .filter(|dir| dir.join("componentize-py").is_file())
                .flat_map(|dir| [dir.join("python"), dir.join("python3")])
                .find(|python| python.is_file())
        });
        on_path.ok_or_else(|| {
            AuthoringError::Missing(format!(
                "no Python with componentize-py 0.25.1 was found (looked at CAIRN_PYTHON, {}, and beside any componentize-py on PATH); run `./x setup` in {}, or make a venv with `python3 -m venv ENV && ENV/bin/pip install componentize-py==0.25.1` and set CAIRN_PYTHON=ENV/bin/python",
                venv.display(),
                self.root.display()
            ))
        })
    }

    /// Checks what the JavaScript SDK's build needs: `node` on `PATH` and
    /// the SDK's packages installed.
    pub fn check_js(&self) -> Result<(), AuthoringError> {
        let node = Command::new("node").arg("--version").output();
        if !node.is_ok_and(|out| out.status.success()) {
            return Err(AuthoringError::Missing(
                "`node` (Node.js 20 or later) is not on PATH; the JavaScript SDK's build runs on it: install Node.js (Debian: `apt-get install nodejs npm`)".into(),
            ));
        }
        if !self.sdk().join(COMPONENTIZE_JS).is_file() {
            return Err(AuthoringError::Missing(format!(
                "the JavaScript SDK's packages are not installed in {}: run `npm ci` there (`./x setup` does)",
                self.sdk().join("js").display()
            )));
        }
        Ok(())
    }

    /// The variables a build command gets, checked against what `command`
    /// uses: a variable it names that cannot be given is an error naming
    /// what is missing.
    pub fn build_env(&self, command: &str) -> Result<Vec<(String, PathBuf)>, AuthoringError> {
        let mut env = vec![
            ("CAIRN_HOME".to_owned(), self.root.clone()),
            ("CAIRN_SDK".to_owned(), self.sdk()),
            ("CAIRN_WIT".to_owned(), self.wit()),
        ];
        match self.python() {
            Ok(python) => env.push(("CAIRN_PYTHON".to_owned(), python)),
            Err(missing) if uses(command, "CAIRN_PYTHON") => return Err(missing),
            Err(_) => {}
        }
        if uses_path(command, "CAIRN_SDK", "js/") || uses_path(command, "CAIRN_HOME", "sdk/js/") {
            self.check_js()?;
        }
        Ok(env)
    }
}

/// Whether a shell command refers to `$NAME` or `${NAME}`.
pub fn uses(command: &str, name: &str) -> bool {
    let plain = format!("${name}");
    let ends = |rest: &str| !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    command.match_indices(&plain).any(|(at, _)| ends(&command[at + plain.len()..]))
        || command.contains(&format!("${{{name}}}"))
}

/// Whether a shell command refers to `$NAME/rest…` (in any of its spellings).
fn uses_path(command: &str, name: &str, rest: &str) -> bool {
    [format!("${name}/{rest}"), format!("${{{name}}}/{rest}"), format!("\"${name}\"/{rest}")]
        .iter()
        .any(|form| command.contains(form.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_variables_in_either_spelling() {
        assert!(uses("\"$CAIRN_PYTHON\" build.py", "CAIRN_PYTHON"));
        assert!(uses("${CAIRN_PYTHON} build.py", "CAIRN_PYTHON"));
        assert!(!uses("$CAIRN_PYTHONX build.py", "CAIRN_PYTHON"));
        assert!(uses("$CAIRN_PYTHON_X; $CAIRN_PYTHON b.py", "CAIRN_PYTHON"));
        assert!(!uses("python3 build.py", "CAIRN_PYTHON"));
        assert!(uses_path("node \"$CAIRN_SDK/js/build.js\" a.js", "CAIRN_SDK", "js/"));
        assert!(uses_path("node ${CAIRN_SDK}/js/build.js a.js", "CAIRN_SDK", "js/"));
        assert!(!uses_path("node $CAIRN_SDK/python/build.py", "CAIRN_SDK", "js/"));
    }

    #[test]
    fn this_checkout_is_a_kit() {
        let kit = Toolkit::locate().unwrap();
        assert!(kit.wit().join("world.wit").is_file(), "{kit:?}");
        assert!(kit.sdk().join("python").join("build.py").is_file());
    }
}
