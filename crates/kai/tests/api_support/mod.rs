//! The harness of the management API's tests: a real `kai serve` on `127.0.0.1:0` with its own
//! data directory, a plain HTTP/1.1 client over `TcpStream` (so a test can send exactly the
//! bytes it means: raw `..` segments, broken headers, oversized bodies), modules that hold their
//! run open until told, and a fingerprint of everything kai writes, to prove a refused request
//! wrote nothing.
//!
//! When a check fails, the message carries the server's log and the requests made so far.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../shared/files.rs"]
mod files;
pub use files::files;

/// How long anything a test waits for may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How a request authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    /// The whole `Authorization` header value, as given.
    Header(String),
    Bearer(String),
}

impl Auth {
    pub fn bearer(token: &str) -> Auth {
        Auth::Bearer(token.to_owned())
    }
}

/// An answer, as read off the wire.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The request, for messages.
    pub request: String,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Value::Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    pub fn describe(&self) -> String {
        let body: String = self.text().chars().take(600).collect();
        format!("{} -> {} {body}", self.request, self.status)
    }
}

/// A module whose run writes its token to `tokens/<run id>` in its data directory, then waits
/// until the file `release` exists there (one minute at most), then ends `done`.
pub const BLOCKER: &str = r#"#!/bin/sh
cat > /dev/null
mkdir -p "$KAI_MODULE_DIR/tokens"
printf '%s\n' "$KAI_RUN_TOKEN" > "$KAI_MODULE_DIR/tokens/$KAI_RUN_ID.tmp"
mv "$KAI_MODULE_DIR/tokens/$KAI_RUN_ID.tmp" "$KAI_MODULE_DIR/tokens/$KAI_RUN_ID"
i=0
while [ ! -e "$KAI_MODULE_DIR/release" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
echo '{"status":"done","summary":"released","details":{"waited":true}}'
"#;

/// A module that keeps its whole context in `context.json` and ends `done`, with a state.
pub const RECORDER: &str = r#"#!/bin/sh
cat > "$KAI_MODULE_DIR/context.json"
echo '{"status":"done","summary":"recorded","details":{"cost_usd":0},"state":{"seen":true}}'
"#;

/// A test's kai: the data directory, and the server once started.
pub struct Kai {
    root: tempfile::TempDir,
    env: BTreeMap<String, String>,
    server: Option<Server>,
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    requests: Mutex<Vec<String>>,
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Default for Kai {
    fn default() -> Self {
        Kai::new()
    }
}

impl Kai {
    pub fn new() -> Kai {
        let root = tempfile::Builder::new()
            .prefix("kai-api-")
            .tempdir()
            .expect("a temporary directory");
        let mut env = BTreeMap::new();
        env.insert(
            "KAI_API_TOKEN".into(),
            "admin-token-for-the-api-tests-0123456789".into(),
        );
        env.insert("KAI_NOTIFY_CHAT".into(), "4242".into());
        env.insert("KAI_LOG".into(), "info,kai::api=debug".into());
        Kai {
            root,
            env,
            server: None,
            log: Arc::default(),
            stdout: Arc::default(),
            requests: Mutex::new(Vec::new()),
        }
    }

    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn env_remove(&mut self, key: &str) -> &mut Self {
        self.env.remove(key);
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn module_dir(&self, name: &str) -> PathBuf {
        self.data_dir().join("modules").join(name)
    }

    /// The admin token: the configured one, else the generated file's.
    pub fn admin(&self) -> String {
        match self.env.get("KAI_API_TOKEN") {
            Some(t) => t.clone(),
            None => read_token(&self.data_dir().join("api_token")),
        }
    }

    pub fn chat(&self) -> String {
        read_token(&self.data_dir().join("chat_token"))
    }

    /// Writes a module whose program is the shell script `script`; `extra` is more manifest.
    pub fn shell_module(&self, name: &str, extra: &str, script: &str) {
        let dir = self.module_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("module.yaml"),
            format!("name: {name}\ndescription: a test module\nrun: [\"./main.sh\"]\n{extra}"),
        )
        .unwrap();
        let script_path = dir.join("main.sh");
        std::fs::write(&script_path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Starts `kai serve` and waits for it to say where it listens.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "already started");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kai"));
        cmd.arg("serve").env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env("KAI_DATA_DIR", self.data_dir())
            .env("KAI_HTTP_ADDR", "127.0.0.1:0")
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let from = self.log.lock().unwrap().len();
        let mut child = cmd.spawn().expect("kai serve starts");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        for (pipe, sink) in [
            (Box::new(out) as Box<dyn Read + Send>, self.stdout.clone()),
            (Box::new(err), self.log.clone()),
        ] {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = String::new();
                while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let marker = "kai is listening on http://";
        let deadline = Instant::now() + PATIENCE;
        let addr = loop {
            let found = {
                let log = self.log.lock().unwrap();
                log[from..].find(marker).and_then(|at| {
                    let rest = &log[from + at + marker.len()..];
                    rest.split(';').next()?.trim().parse::<SocketAddr>().ok()
                })
            };
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                self.fail(format!("kai serve ended at start: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.fail("kai serve did not say where it listens");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.server = Some(Server { child, addr });
    }

    /// Ctrl-C, and waits for kai to end.
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(server.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + PATIENCE;
        while server.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = server.child.kill();
                let _ = server.child.wait();
                self.fail("kai serve did not stop within 30 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("started").addr
    }

    /// What kai wrote on standard error (its log) so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// What kai wrote on standard output so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Fails with `message`, the requests so far and the server's log.
    #[track_caller]
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        let requests = self.requests.lock().unwrap().join("\n");
        let log: String = {
            let log = self.log();
            let mut start = log.len().saturating_sub(20_000);
            while !log.is_char_boundary(start) {
                start += 1;
            }
            log[start..].to_owned()
        };
        panic!("{message}\n\n--- requests ---\n{requests}\n\n--- kai's log ---\n{log}");
    }

    /// Sends one request; `path` goes on the wire as given.
    pub fn request(&self, method: &str, path: &str, auth: &Auth, body: Option<&[u8]>) -> Answer {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr()
        );
        match auth {
            Auth::None => {}
            Auth::Header(v) => head.push_str(&format!("Authorization: {v}\r\n")),
            Auth::Bearer(t) => head.push_str(&format!("Authorization: Bearer {t}\r\n")),
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if method == "POST" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let shown_auth = match auth {
            Auth::None => "no token".to_owned(),
            Auth::Header(v) => format!("Authorization: {}", v.chars().take(12).collect::<String>()),
            Auth::Bearer(t) => format!("Bearer {}…", t.chars().take(6).collect::<String>()),
        };
        let shown_body = body
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
            .unwrap_or_default();
        let request = format!(
            "{method} {} ({shown_auth}) {shown_body}",
            path.chars().take(120).collect::<String>()
        );
        let answer = send(self.addr(), head.as_bytes(), body, &request)
            .unwrap_or_else(|e| self.fail(format!("{request}: {e}")));
        self.requests
            .lock()
            .unwrap()
            .push(answer.describe().chars().take(300).collect());
        answer
    }

    /// Sends `bytes` as they are: a whole request, head and body.
    pub fn raw(&self, bytes: &[u8], what: &str) -> Answer {
        let answer = send(self.addr(), bytes, None, what)
            .unwrap_or_else(|e| self.fail(format!("{what}: {e}")));
        self.requests
            .lock()
            .unwrap()
            .push(answer.describe().chars().take(300).collect());
        answer
    }

    pub fn get(&self, path: &str, auth: &Auth) -> Answer {
        self.request("GET", path, auth, None)
    }

    pub fn post(&self, path: &str, auth: &Auth, body: &Value) -> Answer {
        self.request("POST", path, auth, Some(body.to_string().as_bytes()))
    }

    /// A request that must answer `status`; returns the body as JSON.
    #[track_caller]
    pub fn expect(&self, answer: Answer, status: u16) -> Value {
        if answer.status != status {
            self.fail(format!("expected {status}: {}", answer.describe()));
        }
        let json = answer.json();
        if json.is_null() {
            self.fail(format!("the answer is not JSON: {}", answer.describe()));
        }
        json
    }

    /// Invokes `module` with the admin token; returns the run id.
    #[track_caller]
    pub fn invoke(&self, module: &str, body: &Value) -> String {
        let a = self.post(
            &format!("/api/modules/{module}/invoke"),
            &Auth::bearer(&self.admin()),
            body,
        );
        let v = self.expect(a, 202);
        v["run_id"].as_str().unwrap().to_owned()
    }

    /// Starts a run of a [`BLOCKER`] module and waits until it holds its token: the token is
    /// live until [`Kai::release`].
    #[track_caller]
    pub fn live_run(&self, module: &str, entity: &str) -> (String, String) {
        let run_id = self.invoke(module, &serde_json::json!({ "entity": entity }));
        let file = self.module_dir(module).join("tokens").join(&run_id);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if text.ends_with('\n') {
                    return (run_id, text.trim().to_owned());
                }
            }
            if Instant::now() > deadline {
                self.fail(format!("run {run_id} of {module} did not write its token"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets every run of a [`BLOCKER`] module end (and later ones run straight through).
    pub fn release(&self, module: &str) {
        std::fs::create_dir_all(self.module_dir(module)).unwrap();
        std::fs::write(self.module_dir(module).join("release"), "").unwrap();
    }

    /// Makes later runs of a [`BLOCKER`] module wait again.
    pub fn hold(&self, module: &str) {
        let _ = std::fs::remove_file(self.module_dir(module).join("release"));
    }

    /// Waits for a run to be finished; returns `GET /api/runs/{id}`.
    #[track_caller]
    pub fn wait_finished(&self, run_id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let a = self.get(&format!("/api/runs/{run_id}"), &Auth::bearer(&self.admin()));
            let v = self.expect(a, 200);
            if v["phase"] == "finished" {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(format!("run {run_id} did not finish: {v}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything kai may write for a request: the ledger's tables, and the files under
    /// `modules/` (journal, state, checkpoints), with their sizes.
    pub fn fingerprint(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let conn = rusqlite::Connection::open_with_flags(
            self.data_dir().join("kai.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| self.fail(format!("cannot open kai.db: {e}")));
        for (table, query) in [
            ("runs", "SELECT run_id || ' ' || phase FROM runs ORDER BY run_id"),
            ("deliveries", "SELECT source || ' ' || delivery_id || ' ' || dispatched FROM deliveries ORDER BY seq"),
            ("decisions", "SELECT id || ' ' || reason FROM decisions ORDER BY id"),
            ("switches", "SELECT module || ' ' || COALESCE(off_reason, '-') FROM switches ORDER BY module"),
        ] {
            let mut stmt = conn.prepare(query).unwrap();
            let rows: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            out.insert(format!("table {table}"), rows.join("\n"));
        }
        for path in files(&self.data_dir().join("modules")) {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            out.insert(path.display().to_string(), size.to_string());
        }
        out
    }
}

impl Drop for Kai {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
    }
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// One request on a fresh connection, read to its end.
fn send(
    addr: SocketAddr,
    head: &[u8],
    body: Option<&[u8]>,
    request: &str,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(head)?;
    // The body goes out from another thread while this one reads: a server that answers
    // early (413) and closes must not leave its answer stuck behind our writing.
    let writer = body.map(|b| {
        let mut out = stream.try_clone().expect("a socket clones");
        let b = b.to_vec();
        std::thread::spawn(move || {
            let _ = out.write_all(&b);
        })
    });
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    if let Some(w) = writer {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = w.join();
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "no HTTP answer: {:?}",
                String::from_utf8_lossy(&raw)
            ))
        })?;
    let head_text = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Answer {
        status,
        headers,
        body,
        request: request.to_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
