//! The programs of the built-in modules. Each runs as `kai builtin <name>`, a process like any
//! module's, speaking the same protocol through the SDK: built-ins get no shortcut.

use kai_sdk::{Context, RunResult};
use serde_json::json;

/// Runs the built-in module `name`; returns the process exit code.
pub fn run(name: &str) -> i32 {
    match name {
        "echo" => {
            kai_sdk::run(|ctx| Ok(echo(ctx)));
            0
        }
        other => {
            eprintln!("kai: there is no built-in module `{other}`");
            2
        }
    }
}

/// Says what it was given and counts its runs in its state.
fn echo(ctx: Context) -> RunResult {
    let runs = ctx.state.get("runs").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
    RunResult::done(format!("echo {} (run {runs})", ctx.entity))
        .with_details(json!({ "trigger": ctx.trigger.label(), "payload": ctx.trigger.payload }))
        .with_state(json!({ "runs": runs }))
}
