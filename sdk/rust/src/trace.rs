//! [`traced`]: durable checkpoints for the guest's own steps.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::cairn::task::trace;

/// Runs step `name` once per run: a retried or resumed run gets the recorded
/// output back instead of running `step` again.
///
/// `input` is serialised to JSON (through `serde_json::Value`, so map keys are
/// sorted) and, with `name`, identifies the step; the n-th call with the same
/// name and input in a run matches the n-th record. On a hit the recorded
/// output is returned. On a miss `step` runs and an `Ok` output is recorded
/// before it is returned; errors are not recorded. Should the input not
/// serialise, or a recorded output no longer deserialise into `T`, the step
/// simply runs live.
pub fn traced<I, T, E, F>(name: &str, input: &I, step: F) -> Result<T, E>
where
    I: Serialize + ?Sized,
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, E>,
{
    let key = match serde_json::to_value(input).and_then(|v| serde_json::to_string(&v)) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cairn-sdk: step `{name}` runs untraced: its input does not serialise to JSON: {e}");
            return step();
        }
    };
    if let Some(recorded) = trace::recall(name, &key) {
        match serde_json::from_str(&recorded) {
            Ok(value) => return Ok(value),
            Err(e) => eprintln!(
                "cairn-sdk: step `{name}`: recorded output does not fit the step's type ({e}); running it again"
            ),
        }
    }
    let output = step()?;
    match serde_json::to_string(&output) {
        Ok(json) => trace::record(name, &key, &json),
        Err(e) => eprintln!("cairn-sdk: step `{name}`: output not recorded, it does not serialise to JSON: {e}"),
    }
    Ok(output)
}
