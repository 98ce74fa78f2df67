//! `cairn tasks list | describe TASK`: the manifest's tasks and their
//! interfaces (the JSON Schemas their components' `describe` gives).

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::backend::Backend;

#[derive(Subcommand)]
pub enum TasksCommand {
    /// The manifest's tasks: environment, and interface hash (`-`: the
    /// component does not describe itself).
    List {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A task's interface: the JSON Schemas of its input and output.
    Describe {
        /// The task.
        task: String,
    },
}

/// Every task with its interface, as the API's `GET /api/v1/tasks` lists them.
fn listed(backend: &Backend) -> Result<Vec<Value>> {
    match backend {
        Backend::Local(local) => {
            let host = cairn::runner::Host::open(local.manifest().clone())?;
            super::runtime()?.block_on(async {
                let mut tasks = Vec::new();
                for task in local.manifest().tasks.values() {
                    let environment = local.manifest().environment_of(task).name.clone();
                    let (interface, error) = match host.describe_task(&task.name).await {
                        Ok(interface) => (interface.map(|i| i.to_json()), None),
                        Err(failure) => (None, Some(failure.message)),
                    };
                    tasks.push(json!({"name": task.name, "environment": environment, "interface": interface, "interface_error": error}));
                }
                Ok(tasks)
            })
        }
        Backend::Remote(client) => {
            let answer = client.get(&["tasks"], &[])?;
            Ok(answer["tasks"].as_array().cloned().unwrap_or_default())
        }
    }
}

pub fn dispatch(backend: &Backend, command: TasksCommand) -> Result<ExitCode> {
    let tasks = listed(backend)?;
    match command {
        TasksCommand::List { json } => {
            if json {
                super::safe::print_json(&json!(tasks))?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<28}  {:<16}  INTERFACE", "TASK", "ENVIRONMENT");
            for task in &tasks {
                let interface = match (&task["interface"]["hash"], &task["interface_error"]) {
                    (Value::String(hash), _) => hash[..12].to_owned(),
                    (_, Value::String(error)) => format!("(cannot load: {})", super::safe::text(error)),
                    _ => "-".to_owned(),
                };
                println!("{:<28}  {:<16}  {interface}", text(&task["name"]), text(&task["environment"]));
            }
        }
        TasksCommand::Describe { task } => {
            let Some(found) = tasks.iter().find(|t| t["name"] == task.as_str()) else {
                let names: Vec<String> = tasks.iter().map(|t| text(&t["name"])).collect();
                bail!("no task named {task:?}; the tasks are {}", names.join(", "));
            };
            if let Value::String(error) = &found["interface_error"] {
                bail!("{error}");
            }
            match &found["interface"] {
                Value::Null => {
                    eprintln!(
                        "task {task:?}'s component does not describe itself (built against cairn:task before 0.1.3): any input is passed to it"
                    );
                    super::safe::print_json(&json!({"input": true, "output": true, "hash": null}))?;
                }
                interface => super::safe::print_json(interface)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}
