//! Reading a test's data directory back, shared by the test harnesses (`common`,
//! `daemon_support`, `api_support`), each of which includes this file.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every path under `dir` (directories too), depth first, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries {
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        out.push(path.clone());
        if is_dir {
            out.extend(walk(&path));
        }
    }
    out
}

/// Every file under `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()))
        .collect()
}

/// `text` indented by four spaces, for a failure message.
pub fn indent(text: &str) -> String {
    if text.is_empty() {
        return "    (empty)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A recursive listing of `dir` for a failure message: each entry's path, size and mode, and
/// the content of small JSON files (the first 400; saved module contexts, `ctx-*`, left out).
pub fn listing(dir: &Path) -> String {
    let mut text = format!("\n----- listing of {} -----\n", dir.display());
    if !dir.exists() {
        text.push_str("(does not exist)\n");
        return text;
    }
    let mut shown = 0;
    for path in walk(dir) {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let _ = writeln!(text, "{}/", rel.display());
            continue;
        }
        let _ = writeln!(
            text,
            "{}  ({} bytes, mode {:o})",
            rel.display(),
            meta.len(),
            meta.permissions().mode() & 0o7777
        );
        let small_json = path.extension().is_some_and(|e| e == "json") && meta.len() < 3000;
        let context = rel.to_string_lossy().contains("ctx-");
        if small_json && !context && shown < 400 {
            if let Ok(content) = std::fs::read_to_string(&path) {
                shown += 1;
                text.push_str(&indent(&content));
                text.push('\n');
            }
        }
    }
    text
}
