//! `retention = { finished = "30d", failed = "90d", keep_dirs = false }`:
//! how long finished runs stay in the store, and whether a run's working
//! directory outlives it. The host applies it in the background.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ManifestError;
use crate::config::locate::Locator;
use crate::config::units;

/// The shortest retention accepted: the host sweeps once a minute, and a run
/// removed seconds after it ended could not even be looked at.
const MINIMUM: Duration = Duration::from_secs(60 * 60);

/// How long runs are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded runs are deleted (with journal, logs, report and directory)
    /// this long after they finished.
    pub finished: Duration,
    /// Failed runs (and their dead letters) this long after they finished.
    pub failed: Duration,
    /// Keep a succeeded run's working directory until the run is deleted,
    /// instead of removing it when the run ends. A failed run's directory is
    /// always kept until then, since a dead-letter retry works on its files.
    pub keep_dirs: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            finished: Duration::from_secs(30 * 24 * 3600),
            failed: Duration::from_secs(90 * 24 * 3600),
            keep_dirs: false,
        }
    }
}

pub(super) mod raw {
    use super::*;

    /// `retention = { … }` as written.
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Retention {
        #[serde(default, deserialize_with = "units::opt_duration")]
        pub finished: Option<Duration>,
        #[serde(default, deserialize_with = "units::opt_duration")]
        pub failed: Option<Duration>,
        #[serde(default)]
        pub keep_dirs: Option<bool>,
    }
}

/// Checks `retention`, filling in the defaults.
pub(super) fn validate(raw: Option<Spanned<raw::Retention>>, locate: &Locator) -> Result<Retention, ManifestError> {
    let Some(raw) = raw else { return Ok(Retention::default()) };
    let span = raw.span();
    let raw = raw.into_inner();
    let defaults = Retention::default();
    let retention = Retention {
        finished: raw.finished.unwrap_or(defaults.finished),
        failed: raw.failed.unwrap_or(defaults.failed),
        keep_dirs: raw.keep_dirs.unwrap_or(defaults.keep_dirs),
    };
    for (key, age) in [("finished", retention.finished), ("failed", retention.failed)] {
        if age < MINIMUM {
            return Err(ManifestError::at(
                locate,
                span.clone(),
                format!("retention.{key} = {age:?} is shorter than the minimum of 1h; keep runs at least an hour"),
            ));
        }
    }
    Ok(retention)
}
