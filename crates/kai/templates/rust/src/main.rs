//! A kai module written with the SDK: `kai_sdk::run` reads the context from stdin and writes
//! the result to stdout. See docs/PROTOCOL.md in the kai repository.

use kai_sdk::RunResult;
use serde_json::json;

fn main() {
    kai_sdk::run(|ctx| {
        let runs = ctx.state.get("runs").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
        eprintln!("{}: run {runs} for {}", ctx.module, ctx.entity);
        Ok(RunResult::done(format!("Hello {} from Rust (run {runs})", ctx.entity))
            .with_details(json!({ "trigger": ctx.trigger.label(), "attempt": ctx.attempt }))
            .with_state(json!({ "runs": runs })))
    })
}
