//! What the benchmark binaries share: the release `kai serve` next to them, started on a free
//! loopback port, and a few facts about the machine for their reports.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The directory of the running benchmark, where `cargo build --release` put `kai` too.
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .expect("own path")
        .parent()
        .expect("a directory")
        .to_path_buf()
}

/// A `kai serve` started by [`Daemon::start`]; killed when dropped.
pub struct Daemon {
    pub child: Child,
    /// Where it listens: `127.0.0.1:PORT`.
    pub addr: String,
    /// Every line of its log at WARN or ERROR.
    pub complaints: Arc<Mutex<Vec<String>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts the `kai` next to this binary on `data`, with a clean environment plus `env`,
    /// and waits for it to say where it listens.
    pub fn start(data: &Path, env: &[(&str, String)]) -> Daemon {
        let kai = bin_dir().join("kai");
        assert!(
            kai.exists(),
            "{} is missing: cargo build --release -p kai -p kai-bench",
            kai.display()
        );
        let mut cmd = Command::new(&kai);
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", data)
            .env("KAI_DATA_DIR", data)
            .env("KAI_HTTP_ADDR", "127.0.0.1:0")
            // The "listening on" line is at INFO, target kai::serve; the rest only from WARN.
            .env("KAI_LOG", "warn,kai::serve=info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kai serve starts");
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("kai serve says where it listens")
                .expect("readable");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.split(';').next().expect("an address").to_owned();
            }
        };
        let complaints = Arc::new(Mutex::new(Vec::new()));
        let sink = complaints.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("WARN") || line.contains("ERROR") {
                    sink.lock().expect("log lines").push(line);
                }
            }
        });
        Daemon {
            child,
            addr,
            complaints,
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The commit the benchmark was built from (`git describe`), or "unknown".
pub fn git_commit() -> String {
    let out = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=10"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "unknown".into(),
    }
}
