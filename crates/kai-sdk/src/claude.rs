//! Calling the Claude Code CLI once, the way modules do: prompt on stdin, one JSON object out.
//!
//! `claude --print --output-format json --model M --max-budget-usd B`. The JSON's `is_error`
//! decides success, whatever the exit code says; the whole process group is killed when the
//! timeout passes, so a stalled CLI never outlives the run.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// One call to the CLI.
#[derive(Debug, Clone)]
pub struct Claude {
    pub bin: String,
    pub model: String,
    pub max_budget_usd: f64,
    pub timeout: Duration,
}

/// What the CLI answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub cost_usd: f64,
    pub usage: Value,
}

#[derive(Deserialize)]
struct CliResult {
    #[serde(default)]
    is_error: bool,
    #[serde(default)]
    subtype: String,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    total_cost_usd: f64,
    #[serde(default)]
    usage: Value,
}

impl Claude {
    /// The CLI named by `KAI_CLAUDE_BIN` (default `claude`), model `sonnet`, budget 1 USD,
    /// 15 minutes.
    pub fn from_env() -> Self {
        Claude {
            bin: std::env::var("KAI_CLAUDE_BIN").unwrap_or_else(|_| "claude".into()),
            model: "sonnet".into(),
            max_budget_usd: 1.0,
            timeout: Duration::from_secs(15 * 60),
        }
    }

    /// Sends `prompt` and returns the answer, or a message saying why there is none.
    pub fn ask(&self, prompt: &str) -> Result<Answer, String> {
        let mut child = Command::new(&self.bin)
            .args(["--print", "--output-format", "json", "--model", &self.model])
            .args(["--max-budget-usd", &self.max_budget_usd.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin))?;
        let pgid = child.id() as i32;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let prompt = prompt.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(prompt.as_bytes());
        });
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (done_tx, done_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            let _ = stderr.read_to_end(&mut err);
            let _ = done_tx.send(());
            (out, err)
        });
        let timed_out = done_rx.recv_timeout(self.timeout).is_err();
        // SAFETY: kill(2) with a negative pid signals the process group we created above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
        let _ = writer.join();
        let (out, err) = reader.join().unwrap_or_default();
        if timed_out {
            return Err(format!(
                "claude timed out after {}s",
                self.timeout.as_secs()
            ));
        }
        parse_answer(&out, &err)
    }
}

fn parse_answer(stdout: &[u8], stderr: &[u8]) -> Result<Answer, String> {
    let parsed: CliResult = serde_json::from_slice(stdout).map_err(|e| {
        let tail = String::from_utf8_lossy(stderr);
        let tail = tail.trim();
        format!("claude printed no result JSON ({e}); stderr: {tail}")
    })?;
    let text = parsed.result.unwrap_or_default();
    if parsed.is_error {
        return Err(format!("claude failed ({}): {text}", parsed.subtype));
    }
    Ok(Answer {
        text,
        cost_usd: parsed.total_cost_usd,
        usage: parsed.usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_error_decides_whatever_the_subtype() {
        let ok = br#"{"type":"result","subtype":"success","is_error":false,"result":"hi","total_cost_usd":0.01,"usage":{"input_tokens":3}}"#;
        let answer = parse_answer(ok, b"").unwrap();
        assert_eq!(answer.text, "hi");
        assert_eq!(answer.cost_usd, 0.01);
        let api_error =
            br#"{"type":"result","subtype":"success","is_error":true,"result":"API Error: 401"}"#;
        assert_eq!(
            parse_answer(api_error, b"").unwrap_err(),
            "claude failed (success): API Error: 401"
        );
        assert!(parse_answer(b"", b"boom")
            .unwrap_err()
            .contains("stderr: boom"));
    }
}
