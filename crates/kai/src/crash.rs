//! Fault injection for crash tests: with `KAI_CRASH_AT=<point>` in its environment, kai kills
//! itself with SIGKILL when it reaches that point, exactly as `kill -9` from outside would.
//! Never set it outside tests. The points are named where they are placed:
//!
//! - `after-exit`: the module has finished, nothing of its outcome is recorded yet;
//! - `before-journal`: the outcome is in the ledger, no file is written yet;
//! - `after-journal`: the journal file is written, the ledger does not know yet.

use std::sync::OnceLock;

pub fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("KAI_CRASH_AT").ok());
    if at.as_deref() == Some(name) {
        // SAFETY: sending SIGKILL to ourselves has no memory-safety implications.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
