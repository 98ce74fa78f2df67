//! The [`Task`] trait and the [`export_task!`](crate::export_task) macro.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TaskError;

/// A task with a typed JSON input and output.
///
/// Implement it on a unit struct and export it with
/// [`export_task!`](crate::export_task). The host calls [`Task::run`] once per
/// attempt; an instance may be reused for later runs, so globals (e.g. a
/// `OnceLock`) persist between runs on a warm instance.
pub trait Task {
    /// The input, parsed from the run's JSON input. A parse failure becomes a
    /// task error of kind `invalid-input` that is not retried.
    type Input: DeserializeOwned;
    /// The output, serialised to the run's JSON output.
    type Output: Serialize;
    /// Runs the task once.
    fn run(input: Self::Input) -> Result<Self::Output, TaskError>;

    /// The task's interface, `{"input": SCHEMA, "output": SCHEMA}` (JSON
    /// Schemas), which the component's `describe` export returns: the host
    /// checks a run's input against it before any attempt and shows it in
    /// `cairn tasks describe`. The default says nothing (`{}`: any input).
    /// With the SDK's `schema` feature, derive `schemars::JsonSchema` on
    /// the input and output and return [`crate::interface`]`::<Self::Input,
    /// Self::Output>()`.
    fn interface() -> String {
        "{}".to_owned()
    }
}

/// The interface of a task whose input is `I` and output `O`, from their
/// `schemars::JsonSchema` derivations (the `schema` feature).
#[cfg(feature = "schema")]
pub fn interface<I: schemars::JsonSchema, O: schemars::JsonSchema>() -> String {
    serde_json::json!({ "input": schemars::schema_for!(I), "output": schemars::schema_for!(O) }).to_string()
}

/// Parses `input`, runs `T` and serialises its output. Used by `export_task!`.
#[doc(hidden)]
pub fn __run_task<T: Task>(input: String) -> Result<String, TaskError> {
    let parsed: T::Input = serde_json::from_str(&input)
        .map_err(|e| TaskError::invalid_input(format!("the input does not match this task's input type: {e}")))?;
    let output = T::run(parsed)?;
    serde_json::to_string(&output).map_err(|e| {
        TaskError::new("invalid-output", format!("the task's output could not be serialised to JSON: {e}"))
            .retryable(false)
    })
}

/// Exports a type implementing [`Task`] as the component's `run` and
/// `describe` functions.
///
/// Use it once, in the crate root of a `cdylib` crate:
///
/// ```ignore
/// cairn_sdk::export_task!(MyTask);
/// ```
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        const _: () = {
            struct __CairnTaskExport;
            impl $crate::bindings::Guest for __CairnTaskExport {
                fn run(
                    input: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, $crate::TaskError> {
                    $crate::__run_task::<$task>(input)
                }

                fn describe() -> ::std::string::String {
                    <$task as $crate::Task>::interface()
                }
            }
    $crate::bindings::export!(__CairnTaskExport with_types_in $crate::bindings);
        };
    };
}
