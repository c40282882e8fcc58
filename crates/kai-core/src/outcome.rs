//! What a finished process means. The runner reports facts (exit, output, whether it was
//! stopped); this module turns them into a run outcome by the rules of the protocol.

use kai_sdk::{RunResult, Status, MAX_RESULT_BYTES};
use serde_json::{Map, Value};

use crate::duration::Duration;
use crate::journal::JournalStatus;

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It could not be started at all.
    NotStarted,
}

/// Why the host stopped the process, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    WallClock(Duration),
    Idle(Duration),
    /// More than [`MAX_RESULT_BYTES`] on standard output.
    OutputTooLarge,
    /// kai is shutting down.
    Shutdown,
}

/// The facts about one finished process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessReport {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr_tail: String,
    pub stopped: Option<Stop>,
    /// Set when [`Exit::NotStarted`]: why.
    pub spawn_error: Option<String>,
}

/// A run's outcome: what goes into the journal, the state and the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: JournalStatus,
    pub summary: String,
    pub details: Value,
    pub state: Option<Value>,
    pub question: Option<kai_sdk::Question>,
    pub checkpoint: Option<Value>,
    pub retry: bool,
    pub error: Option<String>,
    pub stderr_tail: Option<String>,
}

/// Longest summary kept; the rest is cut with an ellipsis.
pub const MAX_SUMMARY_CHARS: usize = 2000;
/// Default time a question stays open.
pub const DEFAULT_QUESTION_EXPIRY: Duration = Duration::from_secs(7 * 86400);

impl Outcome {
    /// A failure the host decided on, with the stderr tail for context.
    pub fn failure(status: JournalStatus, reason: String, stderr_tail: &str) -> Outcome {
        Outcome {
            status,
            summary: reason.clone(),
            details: Value::Object(Map::new()),
            state: None,
            question: None,
            checkpoint: None,
            retry: false,
            error: Some(reason),
            stderr_tail: (!stderr_tail.is_empty()).then(|| stderr_tail.to_owned()),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Applies the protocol's rules to a finished process.
pub fn interpret(report: &ProcessReport) -> Outcome {
    let tail = report.stderr_tail.as_str();
    let fail = |reason: String| Outcome::failure(JournalStatus::Error, reason, tail);
    match report.stopped {
        Some(Stop::WallClock(d)) => {
            return Outcome::failure(
                JournalStatus::Timeout,
                format!("timed out after {d} (timeout)"),
                tail,
            )
        }
        Some(Stop::Idle(d)) => {
            return Outcome::failure(
                JournalStatus::Timeout,
                format!("timed out: no output for {d} (idle_timeout)"),
                tail,
            )
        }
        Some(Stop::OutputTooLarge) => {
            return fail(format!(
                "the result is bigger than {} MiB",
                MAX_RESULT_BYTES / (1024 * 1024)
            ))
        }
        Some(Stop::Shutdown) => {
            return Outcome::failure(
                JournalStatus::Interrupted,
                "interrupted: kai shut down".into(),
                tail,
            )
        }
        None => {}
    }
    let parsed = parse_result(&report.stdout);
    match report.exit {
        Exit::NotStarted => fail(format!(
            "could not start: {}",
            report.spawn_error.as_deref().unwrap_or("unknown error")
        )),
        Exit::Signal(sig) => fail(format!("killed by signal {sig} ({})", signal_name(sig))),
        Exit::Code(code) if code != 0 => {
            let mut outcome = fail(format!("exited with code {code}"));
            if let Ok(result) = parsed {
                if !result.summary.is_empty() {
                    outcome.summary = format!("exited with code {code}: {}", clip(&result.summary));
                }
                outcome.retry = result.status == Status::Error && result.retry;
            }
            outcome
        }
        Exit::Code(_) => match parsed {
            Ok(result) => accept(result, tail),
            Err(reason) => fail(reason),
        },
    }
}

fn parse_result(stdout: &[u8]) -> Result<RunResult, String> {
    if stdout.len() > MAX_RESULT_BYTES {
        return Err(format!(
            "the result is bigger than {} MiB",
            MAX_RESULT_BYTES / (1024 * 1024)
        ));
    }
    let text =
        std::str::from_utf8(stdout).map_err(|_| "the output on stdout is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err("printed no result on stdout (expected one JSON object)".into());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let start: String = text.trim().chars().take(60).collect();
        format!("the output on stdout is not one JSON object ({e}); it starts with {start:?}")
    })?;
    if !value.is_object() {
        return Err("the result on stdout is not a JSON object".into());
    }
    serde_json::from_value::<RunResult>(value).map_err(|e| format!("the result is not valid: {e}"))
}

fn clip(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect();
    if clean.chars().count() <= MAX_SUMMARY_CHARS {
        clean
    } else {
        let mut cut: String = clean.chars().take(MAX_SUMMARY_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// Checks a well-formed result against the protocol's rules.
fn accept(result: RunResult, tail: &str) -> Outcome {
    let fail = |reason: String| Outcome::failure(JournalStatus::Error, reason, tail);
    let details = match result.details {
        None => Value::Object(Map::new()),
        Some(d @ Value::Object(_)) => d,
        Some(_) => return fail("the result is not valid: details must be a JSON object".into()),
    };
    let status = match result.status {
        Status::Done => JournalStatus::Done,
        Status::Paused => JournalStatus::Paused,
        Status::Error => JournalStatus::Error,
        Status::Skipped => JournalStatus::Skipped,
    };
    if status == JournalStatus::Paused {
        let Some(q) = &result.question else {
            return fail("the result is not valid: status paused needs a question".into());
        };
        if q.text.trim().is_empty() {
            return fail("the result is not valid: the question has no text".into());
        }
        if let Some(expires) = &q.expires {
            if let Err(e) = expires.parse::<Duration>() {
                return fail(format!("the result is not valid: question expires: {e}"));
            }
        }
        if let Some(default) = &q.default {
            if !q.options.is_empty() && !q.options.contains(default) {
                return fail(format!(
                    "the result is not valid: question default {default:?} is not one of its options"
                ));
            }
        }
    } else if result.question.is_some() || result.checkpoint.is_some() {
        return fail(format!(
            "the result is not valid: question and checkpoint belong with status paused, not {status}"
        ));
    }
    Outcome {
        status,
        summary: clip(&result.summary),
        details,
        state: result.state,
        question: result.question,
        checkpoint: result.checkpoint,
        retry: status == JournalStatus::Error && result.retry,
        error: (status == JournalStatus::Error).then(|| clip(&result.summary)),
        stderr_tail: (status == JournalStatus::Error && !tail.is_empty()).then(|| tail.to_owned()),
    }
}

/// Replaces every secret value in `text` with `[redacted]`. Secrets shorter than 8 characters
/// are left alone: they would redact ordinary words.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        if out.contains(secret) {
            out = out.replace(secret, "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(code: i32, stdout: &str) -> ProcessReport {
        ProcessReport {
            exit: Exit::Code(code),
            stdout: stdout.as_bytes().to_vec(),
            stderr_tail: "last words".into(),
            stopped: None,
            spawn_error: None,
        }
    }

    #[test]
    fn a_done_result_is_taken_as_given() {
        let o = interpret(&report(
            0,
            r#"{"status":"done","summary":"ok","state":{"n":1},"details":{"cost_usd":0.1}}"#,
        ));
        assert_eq!(o.status, JournalStatus::Done);
        assert_eq!(o.summary, "ok");
        assert_eq!(o.state, Some(json!({"n": 1})));
        assert_eq!(o.error, None);
        assert_eq!(o.stderr_tail, None);
    }

    #[test]
    fn broken_output_is_an_error_with_a_reason() {
        let cases = [
            (report(0, ""), "printed no result on stdout (expected one JSON object)"),
            (report(0, "[1]"), "the result on stdout is not a JSON object"),
            (report(0, r#"{"status":"fine"}"#), "the result is not valid: unknown variant `fine`, expected one of `done`, `paused`, `error`, `skipped`"),
            (report(0, r#"{"status":"done","stat":{}}"#), "the result is not valid: unknown field `stat`, expected one of `status`, `summary`, `details`, `state`, `question`, `checkpoint`, `retry`"),
            (report(0, r#"{"status":"paused"}"#), "the result is not valid: status paused needs a question"),
            (report(0, r#"{"status":"done","details":3}"#), "the result is not valid: details must be a JSON object"),
            (report(3, r#"{"status":"done"}"#), "exited with code 3"),
        ];
        for (r, reason) in cases {
            let o = interpret(&r);
            assert_eq!(o.status, JournalStatus::Error);
            assert_eq!(o.error.as_deref(), Some(reason));
            assert_eq!(o.stderr_tail.as_deref(), Some("last words"));
        }
        let o = interpret(&report(0, "garbage"));
        assert!(o
            .error
            .unwrap()
            .starts_with("the output on stdout is not one JSON object"));
    }

    #[test]
    fn stops_and_signals() {
        let mut r = report(0, "");
        r.exit = Exit::Signal(9);
        r.stopped = Some(Stop::WallClock(Duration::from_secs(2)));
        assert_eq!(interpret(&r).status, JournalStatus::Timeout);
        assert_eq!(interpret(&r).summary, "timed out after 2s (timeout)");
        r.stopped = None;
        assert_eq!(interpret(&r).summary, "killed by signal 9 (SIGKILL)");
        r.stopped = Some(Stop::OutputTooLarge);
        assert_eq!(interpret(&r).summary, "the result is bigger than 1 MiB");
    }

    #[test]
    fn retry_only_on_errors() {
        let o = interpret(&report(
            0,
            r#"{"status":"error","summary":"502","retry":true}"#,
        ));
        assert!(o.retry);
        assert_eq!(o.error.as_deref(), Some("502"));
        let o = interpret(&report(0, r#"{"status":"done","retry":true}"#));
        assert!(!o.retry);
    }

    #[test]
    fn redacts_secrets() {
        assert_eq!(
            redact("token=supersecret1 ok", &["supersecret1", "short"]),
            "token=[redacted] ok"
        );
        assert_eq!(redact("short", &["short"]), "short");
    }
}
