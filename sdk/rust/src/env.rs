//! What the host tells the task about the current run, through WASI
//! environment variables (`CAIRN_RUN_ID`, `CAIRN_ATTEMPT`, `CAIRN_TASK`).

/// The run's id, if the host set `CAIRN_RUN_ID`.
pub fn run_id() -> Option<String> {
    std::env::var("CAIRN_RUN_ID").ok()
}

/// The attempt number, 1 for the first attempt (1 when `CAIRN_ATTEMPT` is unset).
pub fn attempt() -> u32 {
    std::env::var("CAIRN_ATTEMPT").ok().and_then(|a| a.trim().parse().ok()).unwrap_or(1)
}

/// The manifest name of the task being run, if the host set `CAIRN_TASK`.
pub fn task_name() -> Option<String> {
    std::env::var("CAIRN_TASK").ok()
}
