//! A task's interface (`cairn:task` 0.1.3): its component's `describe`
//! export, called once per component (by digest, in a throwaway instance),
//! and the check of a new run's input against it before any attempt.

use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi::WasiCtxBuilder;

use super::Host;
use super::attempt::new_store;
use crate::imports::{HostState, TaskPre};
use crate::manifest::TaskSpec;
use crate::model::interface::{TaskInterface, check};
use crate::model::{Failure, FailureKind};

/// How long `describe` may take (an interpreter's start-up included).
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

impl Host {
    /// The interface of `task`'s component (`pre`, of digest `digest`), or
    /// `None` for a component without `describe` (built against `task`
    /// alone, before 0.1.3).
    pub(super) async fn interface_of(
        &self,
        task: &TaskSpec,
        pre: &TaskPre<HostState>,
        digest: &str,
    ) -> Result<Option<Arc<TaskInterface>>, Failure> {
        if let Some(known) = self.components.interface(digest) {
            return Ok(known);
        }
        let component = pre.instance_pre().component();
        if component.get_export_index(None, "describe").is_none() {
            self.components.set_interface(digest, None);
            return Ok(None);
        }
        let invalid = |why: String| Failure {
            kind: FailureKind::InvalidComponent,
            message: format!("task {:?}: its component's `describe` {why}", task.name),
            retryable: false,
        };
        let memory = self.manifest.environment_of(task).resources.memory;
        // No children, no directory: `describe` says what the task is, it does nothing.
        let services = crate::imports::HostServices { children: None, ..self.services.clone() };
        let mut store = new_store(self, HostState::new(WasiCtxBuilder::new().build(), memory, &services));
        let call = async {
            let instance = pre.instance_pre().instantiate_async(&mut store).await?;
            let describe = instance.get_typed_func::<(), (String,)>(&mut store, "describe")?;
            let (text,) = describe.call_async(&mut store, ()).await?;
            wasmtime::Result::<String>::Ok(text)
        };
        let text = match tokio::time::timeout(DESCRIBE_TIMEOUT, call).await {
            Ok(Ok(text)) => text,
            Ok(Err(e)) => return Err(invalid(format!("failed: {e:#}"))),
            // Slow, not wrong (a busy host): the run may try again.
            Err(_) => {
                return Err(Failure {
                    kind: FailureKind::HostError,
                    message: format!(
                        "task {:?}: its component's `describe` took longer than {DESCRIBE_TIMEOUT:?}",
                        task.name
                    ),
                    retryable: true,
                });
            }
        };
        let interface = TaskInterface::parse(&text).map_err(|e| invalid(format!("answered badly: {e}")))?;
        let interface = Arc::new(interface);
        self.components.set_interface(digest, Some(interface.clone()));
        Ok(Some(interface))
    }

    /// The interface of `task`, loading its component: for `cairn tasks`
    /// and the API.
    pub async fn describe_task(&self, task: &str) -> Result<Option<Arc<TaskInterface>>, Failure> {
        let task = self.manifest.task(task).map_err(|e| Failure::new(FailureKind::UnknownTask, e, false))?.clone();
        let (pre, digest) = self.prepare(&task).await?;
        self.interface_of(&task, &pre, &digest).await
    }
}

/// The failure of an input that does not fit `interface`, if it does not.
pub(super) fn check_input(task: &str, interface: &TaskInterface, input: &serde_json::Value) -> Option<Failure> {
    let problems = check(&interface.input, input);
    if problems.is_empty() {
        return None;
    }
    let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Some(Failure {
        kind: FailureKind::InvalidInput,
        message: format!(
            "the input does not fit task {task:?}'s interface: {}; `cairn tasks describe {task}` shows its input schema",
            listed.join("; ")
        ),
        retryable: false,
    })
}
