//! Starting a module's process under the run protocol, and reporting what it did.
//!
//! The process runs in its own process group, with a clean environment, the context on stdin
//! and its stdout and stderr read as they come. Whatever ends the run (exit, wall-clock
//! timeout, idle timeout, an oversized result, shutdown), the whole group is then killed, so
//! nothing a module started outlives its run; kai is a child subreaper, so those grandchildren
//! come back to it and are reaped rather than left as zombies.

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kai_core::duration::Duration as KaiDuration;
use kai_core::outcome::{Exit, ProcessReport, Stop};
use kai_sdk::MAX_RESULT_BYTES;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How much of standard error is kept (its tail).
pub const STDERR_TAIL_BYTES: usize = 4096;

/// What to start.
#[derive(Debug)]
pub struct ProcessSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub timeout: KaiDuration,
    pub idle_timeout: Option<KaiDuration>,
    /// Told the process (and process group) id as soon as the process exists, so that it can
    /// be recorded before anything else can go wrong.
    pub on_spawn: Option<tokio::sync::oneshot::Sender<u32>>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one module process. The real one starts processes; tests can put anything here.
pub trait ModuleRunner: Send + Sync {
    fn run<'a>(
        &'a self,
        spec: ProcessSpec,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, ProcessReport>;
}

/// The runner that starts real processes.
#[derive(Debug, Default)]
pub struct ProcessRunner;

/// Direct children of runs in flight, which the stray reaper must leave to tokio.
static LIVE_CHILDREN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn live_children() -> std::sync::MutexGuard<'static, Option<HashSet<u32>>> {
    LIVE_CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes this process a child subreaper: orphaned descendants of modules are re-parented to
/// kai instead of init, so that they can be reaped.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reaps zombie children that are no run's direct child: descendants that escaped their
/// process group and ended after their parent. Cheap enough to call every few seconds.
pub fn reap_strays() {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let live = live_children();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if live.as_ref().is_some_and(|l| l.contains(&pid)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if state == Some("Z") && ppid == Some(me.as_str()) {
            let mut status = 0;
            // SAFETY: waitpid on a specific pid that is our zombie child.
            unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        }
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; pgid > 0 is checked.
    if pgid > 0 {
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// When a process started, in clock ticks since boot (`/proc/<pid>/stat` field 22); `None`
/// when there is no such process. With the pid it names a process unambiguously.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills what is left of the process group of a run that a dead kai process was running.
/// `leader_start` guards against pid reuse: when a process with the group's id exists but
/// started at another time, the number was reused and nothing is killed. When no such process
/// exists, the leader is dead and the group, if any member is left, is still the run's (Linux
/// does not reuse a pid that still names a process group).
pub fn kill_orphaned_group(pgid: u32, leader_start: Option<u64>) {
    let ours = match process_start(pgid) {
        None => true,
        Some(start) => Some(start) == leader_start,
    };
    if ours {
        kill_group(pgid as i32);
    }
}

/// Reaps what is left of a killed process group, for at most a second.
async fn reap_group(pgid: i32) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own process group; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) };
        if pid < 0 || Instant::now() > deadline {
            return; // ECHILD: none left
        }
        if pid == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ModuleRunner for ProcessRunner {
    fn run<'a>(
        &'a self,
        spec: ProcessSpec,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, ProcessReport> {
        Box::pin(run_process(spec, cancel))
    }
}

async fn run_process(mut spec: ProcessSpec, cancel: CancellationToken) -> ProcessReport {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let spawned = {
        let mut live = live_children();
        let spawned = cmd.spawn();
        if let Ok(child) = &spawned {
            live.get_or_insert_with(HashSet::new).extend(child.id());
        }
        spawned
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return ProcessReport {
                exit: Exit::NotStarted,
                stdout: Vec::new(),
                stderr_tail: String::new(),
                stopped: None,
                spawn_error: Some(format!("{}: {e}", spec.program.display())),
            }
        }
    };
    let pid = child.id().unwrap_or(0);
    let pgid = pid as i32;
    if let Some(tx) = spec.on_spawn.take() {
        let _ = tx.send(pid);
    }

    let last_output = Arc::new(AtomicU64::new(0));
    let overflow = CancellationToken::new();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = spec.stdin;
    let writer = tokio::spawn(async move {
        // A module that does not read its context closes the pipe: that is its business.
        let _ = stdin.write_all(&input).await;
        let _ = stdin.shutdown().await;
    });
    let stdout_reader = tokio::spawn(read_capped(
        child.stdout.take().expect("stdout is piped"),
        MAX_RESULT_BYTES + 1,
        false,
        started,
        last_output.clone(),
        Some(overflow.clone()),
    ));
    let stderr_reader = tokio::spawn(read_capped(
        child.stderr.take().expect("stderr is piped"),
        STDERR_TAIL_BYTES,
        true,
        started,
        last_output.clone(),
        None,
    ));

    let deadline = tokio::time::Instant::now() + spec.timeout.std();
    let idle = spec.idle_timeout;
    let idle_watch = async {
        let Some(idle) = idle else {
            return std::future::pending::<()>().await;
        };
        loop {
            let last = Duration::from_millis(last_output.load(Ordering::Relaxed));
            let due = started + last + idle.std();
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    };

    let mut stopped = None;
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = tokio::time::sleep_until(deadline) => { stopped = Some(Stop::WallClock(spec.timeout)); None }
        _ = idle_watch => { stopped = idle.map(Stop::Idle); None }
        _ = overflow.cancelled() => { stopped = Some(Stop::OutputTooLarge); None }
        _ = cancel.cancelled() => { stopped = Some(Stop::Shutdown); None }
    };
    kill_group(pgid);
    let status = match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    };
    if let Some(l) = live_children().as_mut() {
        l.remove(&pid);
    }
    reap_group(pgid).await;
    writer.abort();
    // Descendants that left the group may still hold the pipes open: wait a little, not forever.
    let grace = Duration::from_millis(500);
    let stdout = collect(stdout_reader, grace).await;
    let stderr = collect(stderr_reader, grace).await;
    let out = Output { stdout, stderr };

    let exit = match status {
        Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        },
        None => Exit::Signal(libc::SIGKILL),
    };
    ProcessReport {
        exit,
        stdout: out.stdout,
        stderr_tail: tail_text(&out.stderr),
        stopped,
        spawn_error: None,
    }
}

async fn collect(task: tokio::task::JoinHandle<Arc<Mutex<Vec<u8>>>>, grace: Duration) -> Vec<u8> {
    let handle = task.abort_handle();
    match tokio::time::timeout(grace, task).await {
        Ok(Ok(buf)) => std::mem::take(&mut *buf.lock().unwrap_or_else(|p| p.into_inner())),
        _ => {
            handle.abort();
            Vec::new()
        }
    }
}

/// Reads a pipe to its end, keeping at most `cap` bytes: the first ones, or with `keep_tail`
/// the last ones. Every read marks the time of the last output. When `overflow` is given, it
/// fires once more than `cap - 1` bytes have arrived.
async fn read_capped(
    mut pipe: impl AsyncRead + Unpin,
    cap: usize,
    keep_tail: bool,
    started: Instant,
    last_output: Arc<AtomicU64>,
    overflow: Option<CancellationToken>,
) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let mut chunk = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n;
        last_output.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
        if keep_tail {
            b.extend_from_slice(&chunk[..n]);
            if b.len() > cap {
                let excess = b.len() - cap;
                b.drain(..excess);
            }
        } else if b.len() < cap {
            let room = cap - b.len();
            b.extend_from_slice(&chunk[..n.min(room)]);
        }
        drop(b);
        if let Some(o) = &overflow {
            if total >= cap {
                o.cancel();
            }
        }
    }
    buf
}

/// The stderr tail as text: lossy UTF-8, starting at a line boundary when one is near.
fn tail_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end();
    if bytes.len() >= STDERR_TAIL_BYTES {
        if let Some(nl) = text.find('\n').filter(|&i| i < 200) {
            return text[nl + 1..].to_owned();
        }
    }
    text.to_owned()
}
