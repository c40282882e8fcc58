//! The kai run protocol, version 1, for module authors writing in Rust.
//!
//! A module is any executable. kai starts it once per run with one JSON object, the
//! [`Context`], on standard input, and reads one JSON object, the [`RunResult`], from standard
//! output. Everything else a module prints belongs on standard error. `docs/PROTOCOL.md` in the
//! kai repository is the full description; this crate is a convenience, not a requirement.
//!
//! ```no_run
//! use kai_sdk::{RunResult, run};
//!
//! fn main() {
//!     run(|ctx| {
//!         let count = ctx.state.get("count").and_then(|v| v.as_u64()).unwrap_or(0) + 1;
//!         Ok(RunResult::done(format!("run number {count}"))
//!             .with_state(serde_json::json!({ "count": count })))
//!     })
//! }
//! ```

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod claude;

/// The protocol version this crate speaks (`KAI_PROTOCOL`, `context.protocol`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest result kai accepts on standard output, in bytes.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// What a run is handed on standard input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub protocol: u32,
    pub run_id: String,
    pub module: String,
    pub attempt: u32,
    pub trigger: Trigger,
    pub entity: String,
    pub chat_id: Option<i64>,
    #[serde(default)]
    pub settings: Value,
    #[serde(default)]
    pub state: Value,
    #[serde(default)]
    pub resume: Option<Resume>,
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerType {
    Webhook,
    Schedule,
    Invoke,
    Command,
    Resume,
}

impl TriggerType {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerType::Webhook => "webhook",
            TriggerType::Schedule => "schedule",
            TriggerType::Invoke => "invoke",
            TriggerType::Command => "command",
            TriggerType::Resume => "resume",
        }
    }
}

/// The trigger of a run, as the module sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(rename = "type")]
    pub kind: TriggerType,
    /// Webhook source name (`github`, or a generic source from the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Webhook event name, schedule expression, or chat command name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Identifies this occurrence of the trigger: GitHub's `X-GitHub-Delivery`, or an id kai
    /// gave it. Two runs of one module never share a delivery id unless one is a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// The webhook body, the invoke data, or the command arguments.
    #[serde(default)]
    pub payload: Value,
}

impl Trigger {
    /// The short form used in journal entries: `webhook:pull_request:synchronize`,
    /// `schedule:0 9 * * *`, `invoke`, `command:review`, `resume`.
    pub fn label(&self) -> String {
        let mut label = self.kind.as_str().to_string();
        for part in [&self.event, &self.action].into_iter().flatten() {
            label.push(':');
            label.push_str(part);
        }
        label
    }
}

/// Filled on a run that resumes an answered question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    pub question: Question,
    pub answer: String,
    pub answered_by: String,
    #[serde(default)]
    pub checkpoint: Value,
    pub original_trigger: Box<Trigger>,
}

/// How a run ended, as the module reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Paused,
    Error,
    Skipped,
}

/// A question a paused run asks its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// How long the question stays open: `30m`, `3d`. Default seven days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The answer used when the question expires unanswered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// What a run prints on standard output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunResult {
    pub status: Status,
    #[serde(default)]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Replaces the module's saved state when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// On an error: ask the host to try again with back-off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
}

impl RunResult {
    fn new(status: Status, summary: impl Into<String>) -> Self {
        RunResult {
            status,
            summary: summary.into(),
            details: None,
            state: None,
            question: None,
            checkpoint: None,
            retry: false,
        }
    }

    pub fn done(summary: impl Into<String>) -> Self {
        Self::new(Status::Done, summary)
    }

    pub fn skipped(summary: impl Into<String>) -> Self {
        Self::new(Status::Skipped, summary)
    }

    pub fn error(summary: impl Into<String>) -> Self {
        Self::new(Status::Error, summary)
    }

    /// Pause the run until `question` is answered; `checkpoint` comes back on resume.
    pub fn paused(summary: impl Into<String>, question: Question, checkpoint: Value) -> Self {
        RunResult {
            question: Some(question),
            checkpoint: Some(checkpoint),
            ..Self::new(Status::Paused, summary)
        }
    }

    pub fn with_state(mut self, state: Value) -> Self {
        self.state = Some(state);
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_retry(mut self) -> Self {
        self.retry = true;
        self
    }
}

/// Reading the context or writing the result failed.
#[derive(Debug)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Reads the context from standard input (the whole of it, up to EOF).
pub fn read_context() -> Result<Context, ProtocolError> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| ProtocolError(format!("cannot read the context from stdin: {e}")))?;
    parse_context(&input)
}

/// Parses a context, as found on standard input.
pub fn parse_context(input: &str) -> Result<Context, ProtocolError> {
    let ctx: Context = serde_json::from_str(input)
        .map_err(|e| ProtocolError(format!("the context on stdin is not valid: {e}")))?;
    if ctx.protocol != PROTOCOL_VERSION {
        return Err(ProtocolError(format!(
            "this module speaks protocol {PROTOCOL_VERSION}, the host sent {}",
            ctx.protocol
        )));
    }
    Ok(ctx)
}

/// Writes the result to standard output, as the last thing the module does.
pub fn write_result(result: &RunResult) -> Result<(), ProtocolError> {
    let text = serde_json::to_string(result)
        .map_err(|e| ProtocolError(format!("cannot encode the result: {e}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| ProtocolError(format!("cannot write the result to stdout: {e}")))
}

/// Runs a module body: reads the context, calls `body`, writes its result. An `Err` from the
/// body becomes an `error` result with the error's text as summary.
pub fn run<F>(body: F)
where
    F: FnOnce(Context) -> Result<RunResult, Box<dyn std::error::Error>>,
{
    let result = match read_context() {
        Ok(ctx) => body(ctx).unwrap_or_else(|e| RunResult::error(e.to_string())),
        Err(e) => RunResult::error(e.0),
    };
    if let Err(e) = write_result(&result) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_serialise_as_the_protocol_shows() {
        let r = RunResult::done("ok").with_state(json!({"n": 1}));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"status": "done", "summary": "ok", "state": {"n": 1}})
        );
        let r = RunResult::error("502 twice").with_retry();
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"status": "error", "summary": "502 twice", "retry": true})
        );
    }

    #[test]
    fn a_context_from_the_spec_parses() {
        let ctx = parse_context(
            r#"{"protocol":1,"run_id":"r_1","module":"pr-review","attempt":1,
            "trigger":{"type":"webhook","source":"github","event":"pull_request",
            "action":"synchronize","delivery_id":"d","payload":{}},
            "entity":"octo/repo#42","chat_id":123,"settings":{"model":"sonnet"},
            "state":{},"resume":null}"#,
        )
        .unwrap();
        assert_eq!(ctx.trigger.label(), "webhook:pull_request:synchronize");
        assert_eq!(ctx.chat_id, Some(123));
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let err = parse_context(
            r#"{"protocol":2,"run_id":"r","module":"m","attempt":1,
            "trigger":{"type":"invoke"},"entity":"invoke","chat_id":null}"#,
        )
        .unwrap_err();
        assert_eq!(err.0, "this module speaks protocol 1, the host sent 2");
    }
}
