//! The harness of kai's integration tests, in the manner of ripgrep's: every test gets a [`Kai`]
//! with its own temporary data directory, writes real modules into it, and runs the real `kai`
//! binary against it. Nothing is mocked: modules are real processes, the journal is real files,
//! the ledger is the real SQLite database.
//!
//! When a check fails, the panic message holds everything needed to see why without running
//! the test again: each command run so far with its exit code, stdout and stderr, and a
//! recursive listing of the data directory (with the content of its small JSON files).

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../shared/files.rs"]
mod files;
pub use files::{indent, listing, walk};

/// The chat id every test run gets through `KAI_NOTIFY_CHAT`, so that `chat_id` is filled.
pub const CHAT_ID: i64 = 4242;

/// The fields SPEC 3.4 requires in every journal file.
pub const SPEC_FIELDS: [&str; 12] = [
    "run_id",
    "timestamp",
    "module",
    "trigger",
    "delivery_id",
    "entity",
    "chat_id",
    "status",
    "summary",
    "duration_seconds",
    "attempt",
    "details",
];

/// Fields a journal file may hold besides [`SPEC_FIELDS`].
pub const EXTRA_FIELDS: [&str; 4] = ["error", "stderr_tail", "retry", "question"];

pub const STATUSES: [&str; 6] = [
    "done",
    "paused",
    "error",
    "skipped",
    "timeout",
    "interrupted",
];

/// Fails with a message and the full diagnosis of `$ctx` (a [`Kai`] or a [`Run`]) unless
/// `$cond` holds.
#[macro_export]
macro_rules! check {
    ($ctx:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $ctx.fail(format!($($fmt)+));
        }
    };
}

/// `check!` for equality, showing both sides.
#[macro_export]
macro_rules! check_eq {
    ($ctx:expr, $left:expr, $right:expr) => {
        check_eq!($ctx, $left, $right, "they differ")
    };
    ($ctx:expr, $left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (left, right) => {
                if left != right {
                    $ctx.fail(format!(
                        "{} != {}: {}\n  left:  {:?}\n  right: {:?}",
                        stringify!($left),
                        stringify!($right),
                        format!($($fmt)+),
                        left,
                        right
                    ));
                }
            }
        }
    };
}

/// One test's kai: a temporary directory holding the data directory (`data/`) and scratch
/// space (`scratch/`), and the environment every `kai` command gets.
pub struct Kai {
    root: tempfile::TempDir,
    env: BTreeMap<String, Option<String>>,
    inherit_env: bool,
    history: RefCell<Vec<String>>,
}

impl Default for Kai {
    fn default() -> Self {
        Kai::new()
    }
}

impl Kai {
    /// A kai with an empty data directory (not even created: kai creates it on first use).
    pub fn new() -> Kai {
        let root = tempfile::Builder::new()
            .prefix("kai-test-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::create_dir(root.path().join("scratch")).unwrap();
        let mut env = BTreeMap::new();
        env.insert("KAI_NOTIFY_CHAT".to_string(), Some(CHAT_ID.to_string()));
        Kai {
            root,
            env,
            inherit_env: false,
            history: RefCell::new(Vec::new()),
        }
    }

    /// Sets a variable for every later `kai` command.
    pub fn env(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.insert(key.to_string(), Some(value.into()));
        self
    }

    /// Removes a variable from every later `kai` command.
    pub fn env_remove(&mut self, key: &str) -> &mut Self {
        self.env.insert(key.to_string(), None);
        self
    }

    /// Gives `kai` the test's whole environment (less any `KAI_*` variable) instead of just
    /// `PATH` and `HOME`: for modules that need a toolchain (cargo, rustup).
    pub fn inherit_env(&mut self) -> &mut Self {
        self.inherit_env = true;
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// A directory outside the data directory, for the test's own files.
    pub fn scratch(&self) -> PathBuf {
        self.root.path().join("scratch")
    }

    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.data_dir().join("modules").join(module)
    }

    pub fn events_dir(&self, module: &str) -> PathBuf {
        self.module_dir(module).join("events")
    }

    pub fn pending_dir(&self, module: &str) -> PathBuf {
        self.module_dir(module).join("pending")
    }

    /// Writes `modules/<name>/module.yaml` and the module's `files` (path, content), making
    /// executable every file that starts with `#!`. Returns the module's directory.
    pub fn write_module(&self, name: &str, manifest: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.module_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("module.yaml"), manifest).unwrap();
        for (path, text) in files {
            write_file(&dir.join(path), text);
        }
        dir
    }

    /// A module whose program is the shell script `script` (`main.sh`); `extra` is more
    /// manifest (`timeout: 2s\n`, ...).
    pub fn shell_module(&self, name: &str, extra: &str, script: &str) -> PathBuf {
        let manifest =
            format!("name: {name}\ndescription: a test module\nrun: [\"./main.sh\"]\n{extra}");
        self.write_module(name, &manifest, &[("main.sh", script)])
    }

    /// Copies a directory of the repository (`examples/shell`, say) to `modules/<name>/`.
    pub fn copy_module(&self, from: &Path, name: &str) -> PathBuf {
        let dir = self.module_dir(name);
        copy_dir(from, &dir);
        dir
    }

    /// The `kai` command with this test's environment; nothing else of the host's leaks in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kai"));
        cmd.args(args);
        if self.inherit_env {
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("KAI_") {
                    cmd.env_remove(key);
                }
            }
        } else {
            cmd.env_clear();
            for key in ["PATH", "HOME"] {
                if let Some(value) = std::env::var_os(key) {
                    cmd.env(key, value);
                }
            }
        }
        cmd.env("KAI_DATA_DIR", self.data_dir());
        cmd.env("KAI_LOG", "warn");
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `kai ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Run {
        self.exec(self.command(args))
    }

    /// Runs a command made by [`Kai::command`] (and changed by the test) to its end.
    pub fn exec(&self, mut cmd: Command) -> Run {
        let text = describe(&cmd);
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot start {text}: {e}"));
        self.record(text, output)
    }

    /// Starts `kai ARGS` without waiting for it; finish it with [`Kai::finish`].
    pub fn spawn(&self, args: &[&str]) -> Background {
        let mut cmd = self.command(args);
        let text = describe(&cmd);
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {text}: {e}"));
        Background {
            child: Some(child),
            text,
        }
    }

    /// Waits for a command started with [`Kai::spawn`].
    pub fn finish(&self, mut bg: Background) -> Run {
        let child = bg.child.take().expect("not finished yet");
        let output = child.wait_with_output().unwrap();
        self.record(std::mem::take(&mut bg.text), output)
    }

    fn record(&self, text: String, output: Output) -> Run {
        let run = Run {
            cmd: text,
            output,
            data_dir: self.data_dir(),
        };
        self.history.borrow_mut().push(run.summary());
        run
    }

    /// Fails with `message`, every command run so far and the data directory's listing.
    #[track_caller]
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        let mut text = format!("{message}\n\n");
        for (i, cmd) in self.history.borrow().iter().enumerate() {
            let _ = writeln!(text, "----- command {} -----\n{cmd}", i + 1);
        }
        text.push_str(&listing(&self.data_dir()));
        panic!("{text}");
    }

    /// Runs `kai run MODULE --json ARGS...` and checks what every run must leave behind:
    /// exactly one new journal file, holding every SPEC 3.4 field, equal to what `kai run`
    /// printed. Returns the run and its journal entry.
    pub fn run_module(&self, module: &str, args: &[&str]) -> (Run, Value) {
        let before: BTreeSet<PathBuf> = self.journal_files(module).into_iter().collect();
        let mut all = vec!["run", module, "--json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        let after: BTreeSet<PathBuf> = self.journal_files(module).into_iter().collect();
        let new: Vec<&PathBuf> = after.difference(&before).collect();
        check!(
            run,
            new.len() == 1 && before.is_subset(&after),
            "one run must add exactly one journal file to {}; it added {new:?}",
            self.events_dir(module).display()
        );
        let path = new[0].clone();
        let entry = read_json(&path).unwrap_or_else(|e| run.fail(e));
        check_entry(&run, &path, &entry);
        check_eq!(run, entry["module"], Value::from(module));
        let printed: Value = run.json();
        check_eq!(
            run,
            printed,
            entry,
            "`kai run --json` must print the journal entry it wrote"
        );
        self.check_tmp_empty(&run);
        (run, entry)
    }

    /// Nothing is left in `tmp/` after kai ended normally.
    pub fn check_tmp_empty(&self, run: &Run) {
        let left: Vec<_> = std::fs::read_dir(self.data_dir().join("tmp"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        check!(run, left.is_empty(), "files left in tmp/: {left:?}");
    }

    /// Every file in `modules/<module>/events/`, sorted by name.
    pub fn journal_files(&self, module: &str) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.events_dir(module))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Every journal file of `module`, parsed; a file that does not parse fails the test.
    pub fn journal(&self, module: &str) -> Vec<(PathBuf, Value)> {
        self.journal_files(module)
            .into_iter()
            .map(|p| {
                let v = read_json(&p).unwrap_or_else(|e| self.fail(e));
                (p, v)
            })
            .collect()
    }

    /// The journal file of run `run_id`; fails unless there is exactly one.
    pub fn entry_of(&self, module: &str, run_id: &str) -> (PathBuf, Value) {
        let mut found: Vec<(PathBuf, Value)> = self
            .journal(module)
            .into_iter()
            .filter(|(_, v)| v["run_id"] == run_id)
            .collect();
        check!(
            self,
            found.len() == 1,
            "run {run_id} must have exactly one journal file in {}; it has {}",
            self.events_dir(module).display(),
            found.len()
        );
        found.pop().unwrap()
    }

    /// Every `*.json` file under the data directory parses: none is partial.
    pub fn check_every_json_parses(&self) {
        for path in walk(&self.data_dir()) {
            if path.extension().is_some_and(|e| e == "json") {
                if let Err(e) = read_json(&path) {
                    self.fail(format!("a partial or broken JSON file: {e}"));
                }
            }
        }
    }

    /// `modules/<module>/state.json`, parsed, if it exists.
    pub fn state(&self, module: &str) -> Option<Value> {
        let path = self.module_dir(module).join("state.json");
        path.exists()
            .then(|| read_json(&path).unwrap_or_else(|e| self.fail(e)))
    }

    /// The run ledger's rows: run id to (phase, status, journal path).
    pub fn ledger(&self) -> BTreeMap<String, LedgerRow> {
        let conn = rusqlite::Connection::open_with_flags(
            self.data_dir().join("kai.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap_or_else(|e| self.fail(format!("cannot open kai.db: {e}")));
        let mut stmt = conn
            .prepare("SELECT run_id, module, phase, status, attempt, journal_path FROM runs")
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    LedgerRow {
                        module: r.get(1)?,
                        phase: r.get(2)?,
                        status: r.get(3)?,
                        attempt: r.get(4)?,
                        journal_path: r.get(5)?,
                    },
                ))
            })
            .unwrap()
            .collect::<Result<BTreeMap<_, _>, _>>()
            .unwrap();
        rows
    }

    /// No run is left in phase `running` or `finishing`, and each finished run's journal path
    /// is a file that holds that run.
    pub fn check_ledger_settled(&self) {
        for (run_id, row) in self.ledger() {
            check!(
                self,
                row.phase == "finished",
                "run {run_id} is still in phase {} in the ledger",
                row.phase
            );
            let path = row
                .journal_path
                .as_deref()
                .unwrap_or_else(|| self.fail(format!("run {run_id} has no journal path")));
            let entry = read_json(Path::new(path)).unwrap_or_else(|e| self.fail(e));
            check_eq!(self, entry["run_id"], Value::from(run_id.as_str()));
            check_eq!(
                self,
                Some(entry["status"].clone()),
                row.status.map(Value::from)
            );
        }
    }

    /// The lock files in `owners/`.
    pub fn owner_locks(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.data_dir().join("owners"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub module: String,
    pub phase: String,
    pub status: Option<String>,
    pub attempt: i64,
    pub journal_path: Option<String>,
}

/// A `kai` command started in the background; killed if the test fails before it is
/// finished.
pub struct Background {
    child: Option<Child>,
    text: String,
}

impl Background {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("not finished yet").id() as i32
    }

    /// Sends `signal` to the kai process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(self.pid(), signal) };
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A finished `kai` command.
pub struct Run {
    pub cmd: String,
    pub output: Output,
    data_dir: PathBuf,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn status(&self) -> ExitStatus {
        self.output.status
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Fails unless kai exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Run {
        check!(
            self,
            self.code() == Some(code),
            "expected exit code {code}, got {}",
            exit_text(self.output.status)
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Run {
        self.expect_code(0)
    }

    /// Fails unless kai killed itself (or was killed) with SIGKILL.
    #[track_caller]
    pub fn expect_killed(&self) -> &Run {
        check!(
            self,
            self.output.status.signal() == Some(libc::SIGKILL),
            "expected kai to die of SIGKILL, got {}",
            exit_text(self.output.status)
        );
        self
    }

    /// Standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| self.fail(format!("stdout is not JSON: {e}")))
    }

    fn summary(&self) -> String {
        format!(
            "command: {}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
            self.cmd,
            exit_text(self.output.status),
            indent(&self.stdout()),
            indent(&self.stderr()),
        )
    }

    /// Fails with `message`, this command's output and the data directory's listing.
    #[track_caller]
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        panic!(
            "{message}\n\n{}\n{}",
            self.summary(),
            listing(&self.data_dir)
        );
    }
}

fn exit_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown".into(),
    }
}

fn describe(cmd: &Command) -> String {
    let mut text = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(text, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    text.push_str("kai");
    for arg in cmd.get_args() {
        let _ = write!(text, " {:?}", arg.to_string_lossy());
    }
    text
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    if text.starts_with("#!") {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

/// The entity as journal file names spell it: `octo/repo#42` is `octo-repo_42`; at most 80
/// characters, never starting with a dot, never empty.
pub fn slug(entity: &str) -> String {
    let slug: String = entity
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '#' | '@' | ':' | ' ' | '_' => '_',
            _ => '-',
        })
        .take(80)
        .collect();
    let slug = slug.trim_start_matches('.');
    if slug.is_empty() {
        "-".into()
    } else {
        slug.into()
    }
}

/// `2026-04-04T14:23:01Z`: RFC 3339 in UTC, to the second.
pub fn is_spec_timestamp(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'Z'
}

/// Checks one journal file against SPEC 3.4: every field present and filled, of the right
/// type, no field the SPEC does not know, and a file name that matches the entry.
#[track_caller]
pub fn check_entry(run: &Run, path: &Path, entry: &Value) {
    let Some(obj) = entry.as_object() else {
        run.fail(format!("{} is not a JSON object", path.display()));
    };
    for field in SPEC_FIELDS {
        check!(
            run,
            obj.get(field).is_some_and(|v| !v.is_null()),
            "{}: field `{field}` is missing or null",
            path.display()
        );
    }
    for key in obj.keys() {
        check!(
            run,
            SPEC_FIELDS.contains(&key.as_str()) || EXTRA_FIELDS.contains(&key.as_str()),
            "{}: unexpected field `{key}`",
            path.display()
        );
    }
    let s = |k: &str| obj[k].as_str().unwrap_or_default().to_owned();
    check!(
        run,
        s("run_id").starts_with("r_"),
        "run_id: {}",
        obj["run_id"]
    );
    check!(run, !s("delivery_id").is_empty(), "delivery_id is empty");
    check!(run, !s("trigger").is_empty(), "trigger is empty");
    check!(
        run,
        is_spec_timestamp(&s("timestamp")),
        "timestamp {} is not like 2026-04-04T14:23:01Z",
        obj["timestamp"]
    );
    let status = s("status");
    check!(
        run,
        STATUSES.contains(&status.as_str()),
        "unknown status {status}"
    );
    check!(
        run,
        obj["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0),
        "duration_seconds: {}",
        obj["duration_seconds"]
    );
    check!(
        run,
        obj["attempt"].as_u64().is_some_and(|a| a >= 1),
        "attempt: {}",
        obj["attempt"]
    );
    check!(run, obj["details"].is_object(), "details is not an object");
    check!(run, obj["chat_id"].is_i64(), "chat_id is not a number");
    check!(run, obj["summary"].is_string(), "summary is not a string");
    let failure = ["error", "timeout", "interrupted"].contains(&status.as_str());
    check!(
        run,
        obj.get("error").is_some_and(Value::is_string) == failure,
        "`error` must be there exactly when the run failed (status {status})"
    );
    check!(
        run,
        obj.get("question").is_some_and(Value::is_object) == (status == "paused"),
        "`question` must be there exactly when the run paused (status {status})"
    );
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let stem = format!("{}_{}", &s("timestamp")[..19], slug(&s("entity")));
    let suffix_ok = name
        .strip_prefix(&stem)
        .and_then(|rest| rest.strip_suffix(".json"))
        .is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('_')
                    .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 2))
        });
    check!(
        run,
        suffix_ok,
        "the file name {name} does not match the entry (expected {stem}.json or {stem}_N.json)"
    );
}

// --- processes -------------------------------------------------------------------------------

/// Whether process `pid` is gone: no such process, or a zombie (dead, not yet reaped).
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Waits up to `limit` for process `pid` to be gone.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if process_gone(pid) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for `path` to exist and be non-empty; returns its content.
pub fn wait_for_file(path: &Path, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return Some(text);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process id a module wrote into `path` (one line).
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills, when dropped, the processes it was given that are still alive: whatever a failing
/// test left behind (a module's `sleep 300`) must not outlive the test.
#[derive(Default)]
pub struct Reaper {
    pids: Vec<(i32, String)>,
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()
}

impl Reaper {
    pub fn watch(&mut self, pid: i32) {
        self.pids.push((pid, comm(pid)));
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, name) in &self.pids {
            let pid = *pid;
            // The name check guards against a pid reused by some other process meanwhile.
            if pid > 1 && !process_gone(pid) && comm(pid) == *name {
                // SAFETY: kill(2) on a process this test's module started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

// --- time ------------------------------------------------------------------------------------

/// Seconds since the Unix epoch of a `2026-04-04T14:23:01Z` timestamp.
pub fn epoch_seconds(text: &str) -> Option<i64> {
    if !is_spec_timestamp(text) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from civil, after Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The live children of process `pid`, found by scanning `/proc`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && state != "Z" && state != "X" {
            children.push(child);
        }
    }
    children
}
