//! The harness of the daemon's end-to-end tests: every test gets a [`Kaid`], a temporary data
//! directory with real modules (shell scripts) in it, and the real `kai serve` started on a free
//! loopback port. Webhooks are sent as GitHub sends them (raw HTTP/1.1, HMAC-SHA256 signature
//! over the exact bytes); what happened is read back from the journal files, the ledger
//! (`kai.db`) and the daemon's log.
//!
//! When a check fails, the panic message holds the daemon's whole log (every incarnation) and a
//! listing of the data directory with the content of its small JSON files, so a failure can be
//! understood without running the test again. The daemon is killed when the [`Kaid`] is
//! dropped, on success and on panic alike.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

#[path = "../shared/files.rs"]
mod files;
pub use files::listing;

/// The start of every test daemon's webhook secret; the rest is unique to the daemon, so that a
/// delivery that reached another test's daemon (a port reused in between) is refused, not
/// counted.
pub const SECRET_PREFIX: &str = "It's a Secret to Everybody ";

/// How long anything asynchronous gets before a test gives up: generous, the machine is small
/// and shared.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Fails with a message and the daemon's full diagnosis unless `$cond` holds.
#[macro_export]
macro_rules! require {
    ($kaid:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $kaid.fail(format!($($fmt)+));
        }
    };
}

/// `require!` for equality, showing both sides.
#[macro_export]
macro_rules! require_eq {
    ($kaid:expr, $left:expr, $right:expr, $($fmt:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            $kaid.fail(format!(
                "{} != {}: {}\n  left:  {:?}\n  right: {:?}",
                stringify!($left),
                stringify!($right),
                format!($($fmt)+),
                left,
                right
            ));
        }
    }};
}

/// A fresh delivery id in GitHub's format (a UUID), unique across tests and processes.
pub fn delivery_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (nanos >> 20) as u32,
        std::process::id() & 0xffff,
        (n >> 12) & 0xfff,
        n & 0xfff,
        nanos & 0xffff_ffff_ffff
    )
}

/// `sha256=<hex>`: the `X-Hub-Signature-256` GitHub sends for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One payload of `tests/fixtures/github/`: `<event>.<action>.json`.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub file: String,
    pub event: String,
    /// `None` for `none`: the event has no action.
    pub action: Option<String>,
    pub body: Vec<u8>,
}

impl Fixture {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("fixtures are JSON")
    }

    /// The trigger label kai journals for it: `webhook:<event>[:<action>]`.
    pub fn label(&self) -> String {
        match &self.action {
            Some(a) => format!("webhook:{}:{a}", self.event),
            None => format!("webhook:{}", self.event),
        }
    }
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github")
}

/// Every fixture, sorted by file name.
pub fn fixtures() -> Vec<Fixture> {
    let mut out: Vec<Fixture> = std::fs::read_dir(fixtures_dir())
        .expect("the fixtures directory")
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".json")?;
            let (event, action) = stem.split_once('.')?;
            Some(Fixture {
                event: event.to_owned(),
                action: (action != "none").then(|| action.to_owned()),
                body: std::fs::read(e.path()).expect("a readable fixture"),
                file,
            })
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(out.len() >= 10, "the fixtures are missing: {out:?}");
    out
}

/// One fixture by file name.
pub fn fixture(file: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.file == file)
        .unwrap_or_else(|| panic!("no fixture {file}"))
}

/// The synchronize fixture with another PR number and head sha (a distinct entity).
pub fn synchronize_for_pr(number: u64) -> Vec<u8> {
    let mut v = fixture("pull_request.synchronize.json").json();
    v["number"] = number.into();
    v["pull_request"]["number"] = number.into();
    serde_json::to_vec(&v).unwrap()
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.text())
    }
}

/// `POST path` to 127.0.0.1:`port`, HTTP/1.1 with `Connection: close`, the body sent as is
/// (its `Content-Length` is its real length). A big body is written from a second thread while
/// this one reads, so a server that answers before reading it all (413) is heard.
pub fn post(
    port: u16,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: GitHub-Hookshot/kai-test\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if body.len() <= 1 << 20 {
        stream.write_all(body)?;
        return read_response(&mut stream);
    }
    let mut writer = stream.try_clone()?;
    let body = body.to_vec();
    let sender = std::thread::spawn(move || {
        // The server may stop reading and close once it has answered: a failed write is fine.
        let _ = writer.write_all(&body);
    });
    let response = read_response(&mut stream);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sender.join();
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses what was read so far; `None` while the response is incomplete.
fn parse_response(buf: &[u8], eof: bool) -> Option<io::Result<Response>> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = &buf[end + 4..];
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    let Some(status) = status else {
        return Some(Err(io::Error::other(format!("bad status line: {head}"))));
    };
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let body = if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = rest;
        loop {
            let line_end = find(at, b"\r\n")?;
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&at[..line_end])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            at = &at[line_end + 2..];
            if size == 0 {
                break;
            }
            if at.len() < size + 2 {
                return None;
            }
            body.extend_from_slice(&at[..size]);
            at = &at[size + 2..];
        }
        body
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(Ok(Response { status, head, body }))
}

fn read_response(stream: &mut TcpStream) -> io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true).unwrap_or_else(|| {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the connection closed after {} bytes of response",
                            buf.len()
                        ),
                    ))
                })
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse_response(&buf, false) {
                    return r;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A reset after the whole answer arrived still leaves the answer.
                return parse_response(&buf, true).unwrap_or(Err(e));
            }
        }
    }
}

/// Waits until `done` holds, polling; `false` if `timeout` passed first.
pub fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small deterministic random source (xorshift), seeded per test and printed on failure.
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Rng::new(nanos ^ u64::from(std::process::id()))
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn seed(&self) -> u64 {
        self.0
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..hi` (milliseconds, say).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// A row of the ledger's `runs` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run_id: String,
    pub module: String,
    pub entity: String,
    pub phase: String,
    pub status: Option<String>,
    pub attempt: u32,
    pub delivery_id: Option<String>,
}

/// A row of the why-not log.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRow {
    pub module: Option<String>,
    pub entity: Option<String>,
    pub trigger: String,
    pub delivery_id: Option<String>,
    pub reason: String,
    pub detail: String,
}

/// One test's daemon: its temporary data directory, its settings, and the `kai serve` process
/// (restartable) with its log.
pub struct Kaid {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Everything every incarnation of the daemon wrote to stderr, with markers between them.
    log: Arc<Mutex<String>>,
    /// Where the current incarnation's part of `log` starts.
    log_start: usize,
    port: u16,
    incarnations: u32,
    notes: Mutex<Vec<String>>,
    removed_secret: String,
}

impl Default for Kaid {
    fn default() -> Self {
        Kaid::new()
    }
}

impl Kaid {
    /// A data directory with no modules; GitHub webhooks on with a secret of its own.
    pub fn new() -> Kaid {
        let root = tempfile::Builder::new()
            .prefix("kai-daemon-test-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::create_dir_all(root.path().join("data/modules")).unwrap();
        let mut kaid = Kaid {
            root,
            env: Vec::new(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            log_start: 0,
            port: 0,
            incarnations: 0,
            notes: Mutex::new(Vec::new()),
            removed_secret: String::new(),
        };
        let secret = format!("{SECRET_PREFIX}{}", delivery_id());
        kaid.set_env("KAI_GITHUB_WEBHOOK_SECRET", &secret);
        kaid.set_env("KAI_LOG", "info");
        kaid.set_env("KAI_RETRY_BACKOFF", "1s");
        kaid
    }

    /// Sets a variable for the daemon (from its next start) and every `kai` command.
    pub fn set_env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn remove_env(&mut self, key: &str) -> &mut Self {
        if key == "KAI_GITHUB_WEBHOOK_SECRET" {
            self.removed_secret = self.secret();
        }
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// The webhook secret (the one it had if the test removed it).
    pub fn secret(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "KAI_GITHUB_WEBHOOK_SECRET")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| self.removed_secret.clone())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn module_dir(&self, name: &str) -> PathBuf {
        self.data_dir().join("modules").join(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Remembers a line shown with the diagnosis (what a test did, a random seed...).
    pub fn note(&self, text: impl Into<String>) {
        self.notes.lock().unwrap().push(text.into());
    }

    /// Writes `modules/<name>/m.sh` (executable) and then `module.yaml`: the manifest is
    /// `name`, `description`, `run: ["./m.sh"]` and `manifest_rest`. The manifest lands by an
    /// atomic rename, so a daemon watching never reads half of it.
    pub fn write_module(&self, name: &str, manifest_rest: &str, script: &str) -> PathBuf {
        let dir = self.module_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        let script_path = dir.join("m.sh");
        std::fs::write(&script_path, script).unwrap();
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let manifest = format!(
            "name: {name}\ndescription: a module of the daemon tests\nrun: [\"./m.sh\"]\n{manifest_rest}"
        );
        let tmp = self.root.path().join(format!("{name}.module.yaml.tmp"));
        std::fs::write(&tmp, manifest).unwrap();
        std::fs::rename(&tmp, dir.join("module.yaml")).unwrap();
        dir
    }

    /// The `kai` command with this daemon's environment and nothing else of the host's but
    /// `PATH` and `HOME`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kai"));
        cmd.args(args).env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        cmd.env("KAI_DATA_DIR", self.data_dir());
        cmd.env("KAI_HTTP_ADDR", "127.0.0.1:0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `kai ARGS` (not the daemon) to its end, with a quiet log.
    pub fn kai(&self, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.env("KAI_LOG", "warn");
        let out = cmd
            .output()
            .unwrap_or_else(|e| self.fail(format!("cannot run kai {args:?}: {e}")));
        self.note(format!(
            "kai {}: {}\n  stdout: {}\n  stderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout)
                .chars()
                .take(2000)
                .collect::<String>(),
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(2000)
                .collect::<String>()
        ));
        out
    }

    /// `kai ARGS` that must succeed and print JSON.
    pub fn kai_json(&self, args: &[&str]) -> Value {
        let out = self.kai(args);
        require!(self, out.status.success(), "kai {args:?} failed");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| self.fail(format!("kai {args:?} printed no JSON: {e}")))
    }

    /// Starts `kai serve` and waits for it to say where it listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        self.incarnations += 1;
        let mut cmd = self.command(&["serve"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| self.fail(format!("cannot start kai serve: {e}")));
        let stderr = child.stderr.take().expect("piped stderr");
        {
            let mut log = self.log.lock().unwrap();
            let _ = writeln!(
                log,
                "===== kai serve #{} (pid {}) =====",
                self.incarnations,
                child.id()
            );
            self.log_start = log.len();
        }
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => log.lock().unwrap().push_str(&line),
                }
            }
        });
        let marker = "kai is listening on http://";
        let mut port = None;
        let mut ended = None;
        poll(PATIENCE, || {
            let log = self.log.lock().unwrap();
            port = log[self.log_start..].find(marker).and_then(|at| {
                let rest = &log[self.log_start + at + marker.len()..];
                let addr = rest.split(';').next()?;
                addr.rsplit(':').next()?.trim().parse::<u16>().ok()
            });
            ended = child.try_wait().ok().flatten();
            port.is_some() || ended.is_some()
        });
        match (port, ended) {
            (Some(p), None) => {
                self.port = p;
                self.child = Some(child);
            }
            (_, Some(status)) => {
                self.wait_log_quiet();
                self.fail(format!("kai serve ended at start: {status}"))
            }
            (None, None) => {
                let _ = child.kill();
                let _ = child.wait();
                self.wait_log_quiet();
                self.fail("kai serve did not say where it listens within 30 s")
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Ctrl-C: the graceful stop. Waits for the daemon to end.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let end = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.note(format!("kai serve #{} ended: {status}", self.incarnations));
                break;
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                self.fail("kai serve did not stop within 30 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_log_quiet();
    }

    /// `kill -9`: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.note(format!("kai serve #{} SIGKILLed", self.incarnations));
            self.wait_log_quiet();
        }
    }

    /// Lets the log reader take what the dead process wrote last.
    fn wait_log_quiet(&self) {
        let mut last = usize::MAX;
        poll(Duration::from_secs(2), || {
            let len = self.log.lock().unwrap().len();
            let quiet = len == last;
            last = len;
            quiet
        });
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Every incarnation's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Lines of the log that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits for a log line holding every one of `needles`; returns it.
    pub fn wait_log(&self, needles: &[&str]) -> String {
        let mut found = None;
        if !poll(PATIENCE, || {
            found = self.log_lines(needles).into_iter().next();
            found.is_some()
        }) {
            self.fail(format!("no log line holds all of {needles:?}"));
        }
        found.unwrap()
    }

    /// Sends `body` to `/webhook/github` as GitHub would, under `delivery`.
    pub fn github_as(&self, event: &str, delivery: &str, body: &[u8]) -> Response {
        let secret = self.secret();
        let headers = [
            ("X-GitHub-Event", event.to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-GitHub-Hook-ID", "292430182".to_owned()),
            ("X-Hub-Signature-256", sign(&secret, body)),
        ];
        self.post("/webhook/github", &headers, body)
    }

    /// Sends `body` as a fresh GitHub delivery; returns its id and the answer.
    pub fn github(&self, event: &str, body: &[u8]) -> (String, Response) {
        let id = delivery_id();
        let r = self.github_as(event, &id, body);
        (id, r)
    }

    /// A fresh delivery that must be accepted (`202`); returns its id.
    pub fn deliver(&self, event: &str, body: &[u8]) -> String {
        let (id, r) = self.github(event, body);
        require_eq!(self, r.status, 202, "delivery {id} of {event}: {r}");
        require_eq!(
            self,
            r.json(),
            serde_json::json!({"accepted": true, "delivery_id": id}),
            "the 202 answer"
        );
        id
    }

    pub fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Response {
        post(self.port, path, headers, body)
            .unwrap_or_else(|e| self.fail(format!("POST {path} failed: {e}")))
    }

    /// The journal of `module`: every file under `modules/<module>/events/`, parsed, in name
    /// order (time order).
    pub fn journal(&self, module: &str) -> Vec<Value> {
        let dir = self.module_dir(module).join("events");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| {
                let bytes =
                    std::fs::read(p).unwrap_or_else(|e| self.fail(format!("{}: {e}", p.display())));
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    self.fail(format!("{} is not a journal entry: {e}", p.display()))
                })
            })
            .collect()
    }

    /// Waits until `module`'s journal holds at least `n` entries; returns them.
    pub fn wait_journal(&self, module: &str, n: usize) -> Vec<Value> {
        if !poll(PATIENCE, || self.journal(module).len() >= n) {
            self.fail(format!(
                "{module} should have {n} journal entries; it has {}",
                self.journal(module).len()
            ));
        }
        self.journal(module)
    }

    /// The context a test module saved for `run_id` (see [`SAVE_CONTEXT`]).
    pub fn saved_context(&self, module: &str, run_id: &str) -> Value {
        let path = self.module_dir(module).join(format!("ctx-{run_id}.json"));
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| self.fail(format!("{}: {e}", path.display())));
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| self.fail(format!("{}: {e}", path.display())))
    }

    /// A connection to the ledger.
    pub fn db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.data_dir().join("kai.db"))
            .unwrap_or_else(|e| self.fail(format!("cannot open kai.db: {e}")));
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn
    }

    /// Every run in the ledger, oldest first.
    pub fn runs(&self) -> Vec<RunRow> {
        let conn = self.db();
        let mut stmt = conn
            .prepare(
                "SELECT run_id, module, entity, phase, status, attempt,
                        json_extract(COALESCE(trigger_json,
                            (SELECT d.trigger_json FROM deliveries d WHERE d.seq = runs.delivery_seq)),
                            '$.delivery_id')
                 FROM runs ORDER BY created_at, rowid",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok(RunRow {
                run_id: r.get(0)?,
                module: r.get(1)?,
                entity: r.get(2)?,
                phase: r.get(3)?,
                status: r.get(4)?,
                attempt: r.get(5)?,
                delivery_id: r.get(6)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// The why-not log, oldest first, optionally of one module.
    pub fn decisions(&self, module: Option<&str>) -> Vec<DecisionRow> {
        let conn = self.db();
        let mut stmt = conn
            .prepare(
                "SELECT module, entity, trigger, delivery_id, reason, detail FROM decisions
                 WHERE ?1 IS NULL OR module = ?1 ORDER BY id",
            )
            .unwrap();
        stmt.query_map([module], |r| {
            Ok(DecisionRow {
                module: r.get(0)?,
                entity: r.get(1)?,
                trigger: r.get(2)?,
                delivery_id: r.get(3)?,
                reason: r.get(4)?,
                detail: r.get(5)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// Decisions of `module` with `reason`.
    pub fn decisions_for(&self, module: &str, reason: &str) -> Vec<DecisionRow> {
        self.decisions(Some(module))
            .into_iter()
            .filter(|d| d.reason == reason)
            .collect()
    }

    /// The delivery ids in the inbox, in arrival order.
    pub fn inbox(&self) -> Vec<(String, String, bool)> {
        let conn = self.db();
        let mut stmt = conn
            .prepare("SELECT source, delivery_id, dispatched FROM deliveries ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Whether everything accepted is dispatched and every run is finished.
    pub fn settled(&self) -> bool {
        self.inbox().iter().all(|(_, _, dispatched)| *dispatched)
            && self.runs().iter().all(|r| r.phase == "finished")
    }

    /// Waits until [`Kaid::settled`].
    pub fn wait_settled(&self) {
        if !poll(PATIENCE, || self.settled()) {
            self.fail("the daemon did not settle: deliveries undispatched or runs unfinished");
        }
    }

    /// Prints the notes (shown with `--nocapture`, or when the test fails).
    pub fn print_notes(&self) {
        for n in self.notes.lock().unwrap().iter() {
            println!("note: {n}");
        }
    }

    /// Fails with `message` and the full diagnosis.
    #[track_caller]
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        let mut text = format!("{message}\n\n");
        for n in self.notes.lock().unwrap().iter() {
            let _ = writeln!(text, "note: {n}");
        }
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let skip = lines.len().saturating_sub(600);
        let _ = writeln!(
            text,
            "\n----- daemon log ({} lines{}) -----",
            lines.len(),
            if skip > 0 { ", the last 600" } else { "" }
        );
        for l in &lines[skip..] {
            let _ = writeln!(text, "{l}");
        }
        text.push_str(&listing(&self.data_dir()));
        panic!("{text}");
    }
}

impl Drop for Kaid {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A module script that saves its context (`ctx-<run id>.json` in its directory) and answers
/// done.
pub const SAVE_CONTEXT: &str = "#!/bin/sh\n\
cat > \"$KAI_MODULE_DIR/ctx-$KAI_RUN_ID.json\"\n\
echo '{\"status\":\"done\",\"summary\":\"ok\"}'\n";

/// A module script that reads its context and answers done after `secs` seconds.
pub fn sleeper(secs: &str) -> String {
    format!(
        "#!/bin/sh\ncat > \"$KAI_MODULE_DIR/ctx-$KAI_RUN_ID.json\"\nsleep {secs}\n\
         echo '{{\"status\":\"done\",\"summary\":\"slept {secs}s\"}}'\n"
    )
}

/// The manifest lines of one GitHub webhook trigger.
pub fn github_trigger(event: &str, actions: Option<&[&str]>) -> String {
    let mut t = format!("  - webhook: github\n    event: {event}\n");
    if let Some(actions) = actions {
        let _ = writeln!(t, "    actions: [{}]", actions.join(", "));
    }
    t
}
