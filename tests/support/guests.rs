//! Builds the example guests from source once per test process, with the
//! `cairn build` command a user would run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// The `cairn` binary under test.
pub fn cairn_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cairn"))
}

/// Paths of the built example components.
pub struct Components {
    /// The report refiner.
    pub refiner: PathBuf,
    /// The probe fixture.
    pub probe: PathBuf,
    /// The fan-out driver.
    pub batch_driver: PathBuf,
    /// The report refiner in Python (componentize-py).
    pub py_refiner: PathBuf,
    /// The Python probe fixture.
    pub py_probe: PathBuf,
    /// The JavaScript summarizer (componentize-js).
    pub js_summarize: PathBuf,
    /// The JavaScript probe fixture.
    pub js_probe: PathBuf,
}

/// Builds the guests (once) and returns their component paths.
pub fn components() -> &'static Components {
    static BUILT: OnceLock<Components> = OnceLock::new();
    BUILT.get_or_init(|| {
        let examples = repo_root().join("guest-examples");
        let out = Command::new(cairn_bin())
            .arg("--manifest")
            .arg(examples.join("cairn.toml"))
            .arg("build")
            .output()
            .expect("cannot start cairn build");
        assert!(
            out.status.success(),
            "cairn build failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Components {
            refiner: examples.join("components/report-refiner.wasm"),
            probe: examples.join("components/probe.wasm"),
            batch_driver: examples.join("components/batch-driver.wasm"),
            py_refiner: examples.join("components/py-report-refiner.wasm"),
            py_probe: examples.join("components/py-probe.wasm"),
            js_summarize: examples.join("components/js-summarize.wasm"),
            js_probe: examples.join("components/js-probe.wasm"),
        }
    })
}
