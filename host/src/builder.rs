//! `cairn build`: runs each task's build command, then turns a core wasm
//! module into a component with the WASI preview1 adapter, so task authors
//! need no tools beyond their language's compiler.
//!
//! Rust guests build for `wasm32-wasip1`. Where rustup has that target the
//! command runs as written. Where it does not but Debian's Rust packages are
//! installed (`rustc-web`, `cargo-web`, `rust-web-src`, `wasi-libc`,
//! `lld-19`), the command gets the environment that builds the standard
//! library from source for the target: see [`RustToolchain::detect`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};

use crate::authoring::toolkit::{self, Toolkit};
use crate::manifest::{BuildSpec, Manifest};

/// Errors of `cairn build`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The command could not be started.
    #[error("task {task:?}: cannot start build command `{command}`: {source}")]
    Spawn {
        /// The task.
        task: String,
        /// The command.
        command: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The command needs a part of the Cairn kit that is missing.
    #[error("task {task:?}: cannot build: {message}")]
    Toolkit {
        /// The task.
        task: String,
        /// What is missing and how to get it.
        message: String,
    },
    /// The command exited with an error.
    #[error("task {task:?}: build command `{command}` failed ({status}); its output is above{hint}")]
    Failed {
        /// The task.
        task: String,
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// A hint about the toolchain, if one applies.
        hint: String,
    },
    /// The command succeeded but its output is not there.
    #[error("task {task:?}: the build command succeeded but produced no {}; fix the task's `build.output` path", path.display())]
    NoOutput {
        /// The task.
        task: String,
        /// The expected output.
        path: PathBuf,
    },
    /// The output is neither a core module nor a component.
    #[error("task {task:?}: {} is not WebAssembly", path.display())]
    NotWasm {
        /// The task.
        task: String,
        /// The file.
        path: PathBuf,
    },
    /// wit-component could not make a component of the module.
    #[error("task {task:?}: cannot turn {} into a component: {message}", path.display())]
    Componentize {
        /// The task.
        task: String,
        /// The core module.
        path: PathBuf,
        /// wit-component's explanation.
        message: String,
    },
    /// The component could not be written.
    #[error("task {task:?}: cannot write {}: {source}", path.display())]
    Write {
        /// The task.
        task: String,
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// How Rust guests get built on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RustToolchain {
    /// rustup has the `wasm32-wasip1` target: commands run unchanged.
    RustupTarget,
    /// Debian's Rust with the std sources: commands get these extra variables.
    DebianBuildStd {
        /// Environment variables to set for the build command.
        env: Vec<(String, String)>,
    },
    /// Neither: commands run unchanged and will likely fail for Rust guests.
    Missing,
}

impl RustToolchain {
    /// Looks at the machine: a rustup `wasm32-wasip1` target first, then
    /// Debian's packages (TOOLCHAIN.md route 1).
    pub fn detect() -> Self {
        let rustup_target = Command::new("rustc")
            .args(["--print", "target-libdir", "--target", "wasm32-wasip1"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .is_some_and(|dir| dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()));
        if rustup_target {
            return RustToolchain::RustupTarget;
        }
        let wasm_ld =
            (14..=30).rev().map(|v| PathBuf::from(format!("/usr/lib/llvm-{v}/bin/wasm-ld"))).find(|p| p.is_file());
        let debian_ready = Path::new("/usr/bin/cargo").is_file()
            && Path::new("/usr/lib/rustlib/src/rust/library").is_dir()
            && Path::new("/usr/lib/wasm32-wasi").is_dir();
        match wasm_ld {
            Some(wasm_ld) if debian_ready => {
                let path = std::env::var("PATH").unwrap_or_default();
                RustToolchain::DebianBuildStd {
                    env: vec![
                        ("PATH".into(), format!("/usr/bin:{path}")),
                        ("RUSTC_BOOTSTRAP".into(), "1".into()),
                        ("CARGO_UNSTABLE_BUILD_STD".into(), "std,panic_abort".into()),
                        (
                            "RUSTFLAGS".into(),
                            format!(
                                "-C linker={} -C link-self-contained=no -L /usr/lib/wasm32-wasi",
                                wasm_ld.display()
                            ),
                        ),
                    ],
                }
            }
            _ => RustToolchain::Missing,
        }
    }

    fn apply(&self, command: &mut Command) {
        // A cargo or rustc picked by an outer `cargo run` must not leak into the guest build.
        for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"]
        {
            command.env_remove(var);
        }
        if let RustToolchain::DebianBuildStd { env } = self {
            command.envs(env.iter().map(|(k, v)| (k, v)));
        }
    }

    fn hint(&self) -> String {
        match self {
            RustToolchain::Missing => "; no wasm32-wasip1 toolchain was found: run `rustup target add wasm32-wasip1`, or install Debian's rustc-web cargo-web rust-web-src wasi-libc lld-19 (`./x setup` does)".into(),
            _ => String::new(),
        }
    }
}

/// What building one task did.
#[derive(Debug, Clone)]
pub struct Built {
    /// The task.
    pub task: String,
    /// The component written.
    pub component: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Whether a core module was turned into a component.
    pub componentized: bool,
    /// Time spent, command included.
    pub took: Duration,
}

/// Builds every task that has a `build` entry (or only `only`), running each
/// distinct command once.
pub fn build_all(manifest: &Manifest, only: Option<&str>) -> Result<Vec<Built>, BuildError> {
    let toolchain = RustToolchain::detect();
    tracing::debug!("guest toolchain: {toolchain:?}");
    let kit = Toolkit::locate();
    let mut ran: BTreeMap<String, ()> = BTreeMap::new();
    let mut built = Vec::new();
    for task in manifest.tasks.values() {
        if only.is_some_and(|name| name != task.name) {
            continue;
        }
        let Some(spec) = &task.build else { continue };
        let started = Instant::now();
        if ran.insert(spec.command.clone(), ()).is_none() {
            let env = kit_env(&task.name, &spec.command, &kit)?;
            run_command(&task.name, spec, &manifest.dir, &toolchain, &env)?;
        }
        let componentized = componentize(&task.name, &spec.output, &task.component)?;
        let size = std::fs::metadata(&task.component).map(|m| m.len()).unwrap_or(0);
        built.push(Built {
            task: task.name.clone(),
            component: task.component.clone(),
            size,
            componentized,
            took: started.elapsed(),
        });
    }
    Ok(built)
}

/// The kit's variables for a build command (see [`toolkit`]); an error when
/// the command names one that cannot be given.
fn kit_env(
    task: &str,
    command: &str,
    kit: &Result<Toolkit, crate::authoring::AuthoringError>,
) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let fail = |message: String| BuildError::Toolkit { task: task.into(), message };
    match kit {
        Ok(kit) => kit.build_env(command).map_err(|e| fail(e.to_string())),
        Err(e) if toolkit::VARIABLES.iter().any(|(name, _)| toolkit::uses(command, name)) => Err(fail(e.to_string())),
        Err(_) => Ok(Vec::new()),
    }
}

fn run_command(
    task: &str,
    spec: &BuildSpec,
    dir: &Path,
    toolchain: &RustToolchain,
    env: &[(String, PathBuf)],
) -> Result<(), BuildError> {
    eprintln!("building {task}: {}", spec.command);
    let mut command = Command::new("sh");
    command.arg("-c").arg(&spec.command).current_dir(dir);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    toolchain.apply(&mut command);
    let status = command.status().map_err(|source| BuildError::Spawn {
        task: task.into(),
        command: spec.command.clone(),
        source,
    })?;
    if !status.success() {
        return Err(BuildError::Failed {
            task: task.into(),
            command: spec.command.clone(),
            status: status.to_string(),
            hint: toolchain.hint(),
        });
    }
    Ok(())
}

/// Writes a component for `output` at `component`: a component is copied, a
/// core module is encoded with the WASI preview1 reactor adapter. Returns
/// whether encoding happened.
pub fn componentize(task: &str, output: &Path, component: &Path) -> Result<bool, BuildError> {
    let bytes = match std::fs::read(output) {
        Ok(bytes) => bytes,
        Err(_) => return Err(BuildError::NoOutput { task: task.into(), path: output.to_path_buf() }),
    };
    let (bytes, componentized) = if wasmparser::Parser::is_component(&bytes) {
        (bytes, false)
    } else if wasmparser::Parser::is_core_wasm(&bytes) {
        let fail = |e: anyhow::Error| BuildError::Componentize {
            task: task.into(),
            path: output.to_path_buf(),
            message: format!("{e:#}"),
        };
        let mut encoder = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .map_err(fail)?
            .validate(true)
            .adapter(WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER)
            .map_err(fail)?;
        (encoder.encode().map_err(fail)?, true)
    } else {
        return Err(BuildError::NotWasm { task: task.into(), path: output.to_path_buf() });
    };
    let write_error = |source| BuildError::Write { task: task.into(), path: component.to_path_buf(), source };
    if let Some(parent) = component.parent() {
        std::fs::create_dir_all(parent).map_err(write_error)?;
    }
    // A name of this process's own, so concurrent builds never rename each other's file.
    let partial = component.with_extension(format!("wasm.partial-{}", std::process::id()));
    std::fs::write(&partial, &bytes).map_err(write_error)?;
    std::fs::rename(&partial, component).map_err(write_error)?;
    Ok(componentized)
}
