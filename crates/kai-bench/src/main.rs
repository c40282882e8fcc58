//! `kai-bench`: what one run of a module costs kai, beside what the machine itself charges.
//!
//! ```text
//! cargo run --release -p kai-bench              # full run (a few minutes on 2 cores)
//! cargo run --release -p kai-bench -- --quick   # smaller N, for a smoke test
//! ```
//!
//! In one process it measures, and prints as a markdown table:
//!
//! 1. the floor: spawn and wait of `/bin/true`; the `noop-module` started directly (pipes,
//!    context in, result out); one atomic file write (`DataDir::write_atomic`: temporary
//!    file, fsync, rename, directory fsync); the run ledger's three writes of one run;
//! 2. `Engine::run_now` of a user module whose manifest runs `noop-module`, one run after the
//!    other, for one entity and for a new entity each run;
//! 3. the same with 4 runs at once (4 tokio tasks on a multi-thread runtime);
//! 4. the real `kai journal MODULE --limit 20` (a subprocess) on a module with 100,000
//!    journal files, unfiltered, `--entity` and `--status error`.
//!
//! `noop-module` is the other binary of this package: `cargo run` builds it next to this one.
//! The `kai` binary is another package's, so this program runs `cargo build -p kai` first
//! (a no-op when it is fresh); `--kai PATH` uses a given binary instead.

use kai_bench::{cpu_model, git_commit, load_average};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use kai::config::{Config, SettingsArgs};
use kai::data_dir::DataDir;
use kai::engine::{Engine, Finished, Invocation};
use kai::ledger::{Finish, Ledger, NewRun};
use kai::runner::{BoxFuture, ModuleRunner, ProcessRunner, ProcessSpec};
use kai_core::outcome::ProcessReport;
use kai_core::{JournalEntry, JournalStatus, LoadedModule};
use kai_sdk::{Trigger, TriggerType};
use serde_json::json;
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

const USAGE: &str = "\
usage: kai-bench [--quick] [--runs N] [--floor N] [--journal-files N] [--journal-reps N]
                 [--dir DIR] [--kai PATH] [--no-build] [--keep]

  --quick            smaller N everywhere (runs 200, floor 200, 10,000 journal files, 10 reps)
  --runs N           end-to-end runs per measurement (default 2000)
  --floor N          repetitions of each floor measurement (default 1000)
  --journal-files N  journal files of the queried module (default 100000)
  --journal-reps N   repetitions of each `kai journal` query (default 50)
  --dir DIR          where the temporary data directories go (default: the system's temp
                     dir); put it on the file system kai's data directory lives on
  --kai PATH         the kai binary to query the journal with (default: next to this one)
  --no-build         do not run `cargo build` for kai and noop-module
  --keep             keep the temporary directory and print its path
";

#[derive(Debug)]
struct Args {
    runs: usize,
    floor: usize,
    journal_files: usize,
    journal_reps: usize,
    dir: Option<PathBuf>,
    kai: Option<PathBuf>,
    build: bool,
    keep: bool,
    quick: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut a = Args {
            runs: 2000,
            floor: 1000,
            journal_files: 100_000,
            journal_reps: 50,
            dir: None,
            kai: None,
            build: true,
            keep: false,
            quick: false,
        };
        let mut it = std::env::args().skip(1);
        let mut explicit: Vec<&str> = Vec::new();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> Result<String> {
                it.next()
                    .ok_or_else(|| format!("{name} needs a value\n\n{USAGE}").into())
            };
            let mut number = |name: &'static str| -> Result<usize> {
                let v = value(name)?;
                v.replace('_', "")
                    .parse()
                    .map_err(|_| format!("{name}: `{v}` is not a number").into())
            };
            match arg.as_str() {
                "--quick" => a.quick = true,
                "--runs" => {
                    a.runs = number("--runs")?;
                    explicit.push("runs");
                }
                "--floor" => {
                    a.floor = number("--floor")?;
                    explicit.push("floor");
                }
                "--journal-files" => {
                    a.journal_files = number("--journal-files")?;
                    explicit.push("files");
                }
                "--journal-reps" => {
                    a.journal_reps = number("--journal-reps")?;
                    explicit.push("reps");
                }
                "--dir" => a.dir = Some(value("--dir")?.into()),
                "--kai" => a.kai = Some(value("--kai")?.into()),
                "--no-build" => a.build = false,
                "--keep" => a.keep = true,
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument `{other}`\n\n{USAGE}").into()),
            }
        }
        if a.quick {
            let set = |what: &str| explicit.contains(&what);
            if !set("runs") {
                a.runs = 200;
            }
            if !set("floor") {
                a.floor = 200;
            }
            if !set("files") {
                a.journal_files = 10_000;
            }
            if !set("reps") {
                a.journal_reps = 10;
            }
        }
        a.runs = a.runs.max(8);
        a.floor = a.floor.max(2);
        a.journal_reps = a.journal_reps.max(2);
        Ok(a)
    }
}

// --- statistics --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    median: Duration,
    p99: Duration,
    max: Duration,
}

/// Median and p99 by nearest rank.
fn stats(mut samples: Vec<Duration>) -> Stats {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_unstable();
    let n = samples.len();
    let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Stats {
        n,
        median: rank(0.50),
        p99: rank(0.99),
        max: samples[n - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn signed_ms(a: Duration, b: Duration) -> String {
    let diff = a.as_secs_f64() - b.as_secs_f64();
    format!("{:+.3}", diff * 1000.0)
}

/// CPU time (user + system) of this process and of its children that were waited for, from
/// `/proc/self/stat` (in clock ticks of 1/100 s).
fn process_cpu() -> Duration {
    let Some(stat) = read_trimmed("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11) // state is field 3; utime, stime, cutime, cstime are 14 to 17
                .take(4)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

// --- the machine -------------------------------------------------------------------------

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn mem_total() -> String {
    read_trimmed("/proc/meminfo")
        .and_then(|text| {
            let kb: u64 = text
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The file system type and device `path` lives on, from `/proc/mounts` (longest mount point).
fn file_system(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = read_trimmed("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0], f[1], f[2]))
        })
        .filter(|(_, mount, _)| path.starts_with(mount))
        .max_by_key(|(_, mount, _)| mount.len())
        .map(|(dev, mount, fs)| format!("{fs} ({dev} on {mount})"))
        .unwrap_or_else(|| "unknown".into())
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// --- binaries ----------------------------------------------------------------------------

/// Builds `kai` and `noop-module` in this binary's profile, so that both sit next to it.
fn build_binaries() -> Result<()> {
    let manifest = workspace_dir().join("Cargo.toml");
    if !manifest.is_file() {
        eprintln!("note: no workspace at {}; not building", manifest.display());
        return Ok(());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "-p",
            "kai",
            "-p",
            "kai-bench",
            "--bin",
            "kai",
            "--bin",
            "noop-module",
        ]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    eprintln!("building kai and noop-module: {cmd:?}");
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("cargo build failed: {status}").into());
    }
    Ok(())
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found; build it: cargo build --release -p kai -p kai-bench",
            path.display()
        )
        .into())
    }
}

// --- the floor ---------------------------------------------------------------------------

fn spawn_true(n: usize, samples: &mut Vec<Duration>) -> Result<()> {
    for _ in 0..n {
        let (d, status) = time(|| {
            Command::new("/bin/true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        });
        if !status?.success() {
            return Err("/bin/true failed".into());
        }
        samples.push(d);
    }
    Ok(())
}

/// The module on its own: started with piped stdio, the context written, the result read.
fn spawn_noop_direct(
    noop: &Path,
    context: &[u8],
    n: usize,
    samples: &mut Vec<Duration>,
) -> Result<()> {
    for _ in 0..n {
        let start = Instant::now();
        let mut child = Command::new(noop)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(context)?;
        drop(stdin);
        let mut out = Vec::new();
        child.stdout.take().expect("piped").read_to_end(&mut out)?;
        let status = child.wait()?;
        samples.push(start.elapsed());
        if !status.success() || !out.starts_with(b"{\"status\":\"done\"") {
            return Err("noop-module did not answer done".into());
        }
    }
    Ok(())
}

fn sample_entry(i: usize, timestamp: DateTime<Utc>, entity: &str) -> JournalEntry {
    let status = if i.is_multiple_of(50) {
        JournalStatus::Error
    } else if i % 10 == 3 {
        JournalStatus::Skipped
    } else {
        JournalStatus::Done
    };
    let failed = status == JournalStatus::Error;
    JournalEntry {
        run_id: format!("r_bench{i:08}"),
        timestamp,
        module: "big".into(),
        trigger: "webhook:pull_request:synchronize".into(),
        delivery_id: Some(format!("d-{i:08}")),
        entity: entity.to_owned(),
        chat_id: Some(123_456_789),
        status,
        summary: match status {
            JournalStatus::Error => "GitHub returned 502 twice".to_owned(),
            JournalStatus::Skipped => "Draft PR, nothing to do".to_owned(),
            _ => format!("Reviewed {entity}: {} warnings", i % 4),
        },
        duration_seconds: ((i % 900) as f64) / 10.0 + 0.3,
        attempt: 1,
        details: json!({"cost_usd": ((i % 40) as f64) / 100.0, "findings": i % 5}),
        error: failed.then(|| "exit code 1".to_owned()),
        stderr_tail: failed.then(|| "Traceback (most recent call last):\n  boom".to_owned()),
        retry: false,
        question: None,
    }
}

/// A journal file's bytes, as the engine writes them.
fn pretty(entry: &JournalEntry) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(entry).expect("an entry serializes");
    bytes.push(b'\n');
    bytes
}

/// One atomic write of a new journal-sized file (about 500 bytes), as a run's journal file is
/// written: `DataDir::write_atomic`.
struct AtomicWrites {
    data: DataDir,
    events: PathBuf,
    next: usize,
}

impl AtomicWrites {
    fn open(root: &Path) -> Result<AtomicWrites> {
        let data = DataDir::open(&root.join("floor-data"))?;
        let events = data.events_dir("floor");
        std::fs::create_dir_all(&events)?;
        Ok(AtomicWrites {
            data,
            events,
            next: 0,
        })
    }

    fn measure(&mut self, n: usize, samples: &mut Vec<Duration>) -> Result<()> {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for _ in 0..n {
            self.next += 1;
            let ts = t0 + chrono::Duration::seconds(self.next as i64);
            let entry = sample_entry(self.next, ts, "octo/repo#42");
            let bytes = pretty(&entry);
            let path = self.events.join(entry.file_name(1));
            let (d, r) = time(|| self.data.write_atomic(&path, &bytes));
            r?;
            samples.push(d);
        }
        Ok(())
    }
}

/// The ledger's part of one run: insert as running, record the outcome and pick the journal
/// file's name (one transaction), mark finished. Three commits, no file written.
struct LedgerWrites {
    ledger: Ledger,
    events: PathBuf,
    next: usize,
    /// `Some(k)`: every run is about the same entity, and k runs finish in each second, so
    /// their journal names collide and take the suffixes `_2` to `_k`.
    per_second: Option<usize>,
}

impl LedgerWrites {
    fn open(root: &Path, per_second: Option<usize>) -> Result<LedgerWrites> {
        let dir = match per_second {
            None => root.join("ledger-only"),
            Some(k) => root.join(format!("ledger-only-{k}-per-second")),
        };
        std::fs::create_dir_all(&dir)?;
        Ok(LedgerWrites {
            ledger: Ledger::open(&dir.join("kai.db")).map_err(|e| format!("{e:#}"))?,
            events: dir.join("events"),
            next: 0,
            per_second,
        })
    }

    fn measure(&mut self, n: usize, samples: &mut Vec<Duration>) -> Result<()> {
        for _ in 0..n {
            self.next += 1;
            let (entity, timestamp) = match self.per_second {
                None => (format!("e{}", self.next), Utc::now()),
                Some(k) => {
                    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
                    let second = ((self.next - 1) / k) as i64;
                    ("invoke".to_owned(), t0 + chrono::Duration::seconds(second))
                }
            };
            let run = NewRun {
                run_id: format!("r_ledger{:08}", self.next),
                module: "floor".into(),
                entity,
                trigger: invoke_trigger(),
                chat_id: None,
            };
            let finish = Finish {
                entry: sample_entry(self.next, timestamp, &run.entity),
                state: None,
                checkpoint: None,
                notes: Vec::new(),
            };
            let events = &self.events;
            let start = Instant::now();
            self.ledger.insert_running(&run, "o_bench")?;
            self.ledger.finishing(&run.run_id, &finish, |k| {
                events.join(finish.entry.file_name(k))
            })?;
            self.ledger.finished(&run.run_id, &finish.notes)?;
            samples.push(start.elapsed());
        }
        Ok(())
    }
}

// --- end to end --------------------------------------------------------------------------

fn invoke_trigger() -> Trigger {
    Trigger {
        kind: TriggerType::Invoke,
        source: None,
        event: None,
        action: None,
        delivery_id: None,
        payload: json!({}),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Entities {
    /// Every run about the same entity (what `kai run noop` does: the entity is `invoke`).
    One,
    /// A new entity each run.
    Distinct,
}

/// The real runner, timed: from the start of `ModuleRunner::run` (spawn) to its report (the
/// process reaped, its output read). What a run costs beyond this is the engine's own work.
#[derive(Default)]
struct TimedRunner {
    inner: ProcessRunner,
    samples: Mutex<Vec<Duration>>,
}

impl ModuleRunner for TimedRunner {
    fn run<'a>(
        &'a self,
        spec: ProcessSpec,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, ProcessReport> {
        Box::pin(async move {
            let start = Instant::now();
            let report = self.inner.run(spec, cancel).await;
            let elapsed = start.elapsed();
            self.samples.lock().expect("not poisoned").push(elapsed);
            report
        })
    }
}

impl TimedRunner {
    fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.samples.lock().expect("not poisoned"))
    }
}

struct Bench {
    engine: Engine,
    runner: Arc<TimedRunner>,
    /// Time in the runner, runs one after the other and 4 at once.
    sequential_runner: Vec<Duration>,
    parallel_runner: Vec<Duration>,
    module: LoadedModule,
    kind: Entities,
    /// Latency of each run, one after the other, and the wall time of them all.
    sequential: Vec<Duration>,
    sequential_wall: Duration,
    sequential_cpu: Duration,
    /// Latency of each run, 4 at once, and the wall time of them all.
    parallel: Vec<Duration>,
    parallel_wall: Duration,
    parallel_cpu: Duration,
}

impl Bench {
    fn open(data_dir: &Path, noop: &Path, kind: Entities) -> Result<Bench> {
        let module_dir = data_dir.join("modules/noop");
        std::fs::create_dir_all(&module_dir)?;
        let manifest = format!(
            "name: noop\ndescription: Does nothing, as fast as it can (kai-bench)\nrun: [{}]\ntimeout: 1m\n",
            serde_json::to_string(&noop.to_string_lossy())?
        );
        std::fs::write(module_dir.join("module.yaml"), manifest)?;
        let config = Config::resolve(&SettingsArgs {
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        })
        .map_err(|e| format!("{e:#}"))?;
        let registry = kai::modules::load_registry(&config.data_dir.join("modules"));
        if let Some(e) = registry.errors().first() {
            return Err(format!("manifest did not load: {e}").into());
        }
        let module = registry
            .get("noop")
            .ok_or("the noop module did not load")?
            .clone();
        let runner = Arc::new(TimedRunner::default());
        let engine = Engine::open(config, runner.clone()).map_err(|e| format!("{e:#}"))?;
        Ok(Bench {
            engine,
            runner,
            sequential_runner: Vec::new(),
            parallel_runner: Vec::new(),
            module,
            kind,
            sequential: Vec::new(),
            sequential_wall: Duration::ZERO,
            sequential_cpu: Duration::ZERO,
            parallel: Vec::new(),
            parallel_wall: Duration::ZERO,
            parallel_cpu: Duration::ZERO,
        })
    }

    async fn run(&self, entity: String) -> Result<Duration> {
        let start = Instant::now();
        let finished: Finished = self
            .engine
            .run_now(
                &self.module,
                Invocation {
                    trigger: invoke_trigger(),
                    entity,
                    chat_id: None,
                },
                CancellationToken::new(),
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        let elapsed = start.elapsed();
        let e = &finished.entry;
        if e.status != JournalStatus::Done {
            return Err(format!(
                "a run ended {}: {} {:?} {:?}",
                e.status, e.summary, e.error, e.stderr_tail
            )
            .into());
        }
        Ok(elapsed)
    }

    fn entity(&self, task: usize, i: usize) -> String {
        match self.kind {
            Entities::One => "invoke".into(),
            Entities::Distinct => format!("bench/{task}#{i}"),
        }
    }

    async fn warm_up(&self) -> Result<()> {
        for i in 0..WARM_UP_RUNS {
            self.run(format!("warmup#{i}")).await?;
        }
        self.runner.take();
        Ok(())
    }

    async fn measure_sequential(&mut self, n: usize) -> Result<()> {
        let offset = self.sequential.len();
        let cpu = process_cpu();
        let start = Instant::now();
        for i in 0..n {
            let d = self.run(self.entity(0, offset + i)).await?;
            self.sequential.push(d);
        }
        self.sequential_wall += start.elapsed();
        self.sequential_cpu += process_cpu().saturating_sub(cpu);
        let in_runner = self.runner.take();
        self.sequential_runner.extend(in_runner);
        Ok(())
    }

    /// `n` runs by `tasks` tokio tasks at once; each task runs its share one after the other.
    async fn measure_parallel(self: &mut Arc<Self>, n: usize, tasks: usize) -> Result<()> {
        let offset = self.parallel.len();
        let cpu = process_cpu();
        let start = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let bench = Arc::clone(self);
            let count = n / tasks + usize::from(t < n % tasks);
            handles.push(tokio::spawn(async move {
                let mut samples = Vec::with_capacity(count);
                for i in 0..count {
                    samples.push(bench.run(bench.entity(t + 1, offset + i)).await?);
                }
                Ok::<_, Error>(samples)
            }));
        }
        let mut samples = Vec::with_capacity(n);
        for h in handles {
            samples.extend(h.await??);
        }
        let wall = start.elapsed();
        let cpu = process_cpu().saturating_sub(cpu);
        let me = Arc::get_mut(self).expect("the tasks are over");
        me.parallel_cpu += cpu;
        me.parallel.extend(samples);
        me.parallel_wall += wall;
        let in_runner = me.runner.take();
        me.parallel_runner.extend(in_runner);
        Ok(())
    }
}

const WARM_UP_RUNS: usize = 20;

/// The measurements are interleaved in this many rounds.
const ROUNDS: usize = 10;

/// Runs of one entity finishing in the same second, for the ledger measurement with name
/// collisions: about what 4 runs at once of a no-op module reach.
const COLLIDING_PER_SECOND: usize = 400;

// --- the journal -------------------------------------------------------------------------

const JOURNAL_ENTITIES: usize = 500;

/// `n` journal files of module `big`, written directly (no fsync: this is set-up, not the
/// thing measured). One file every 7 seconds over the days before 2026-03-01, entities spread
/// over 500 pull requests, 1 in 50 an error, 1 in 10 skipped, 1 in 250 the second run of its
/// entity that second (a `_2` name).
fn make_journal(data_dir: &Path, n: usize) -> Result<Duration> {
    let data = DataDir::open(data_dir)?;
    let events = data.events_dir("big");
    std::fs::create_dir_all(&events)?;
    let end = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let start = end - chrono::Duration::seconds(7 * n as i64);
    let (d, r) = time(|| -> Result<()> {
        let mut written = 0;
        let mut i = 0;
        while written < n {
            i += 1;
            let ts = start + chrono::Duration::seconds(7 * i as i64);
            let entity = format!("octo/repo#{}", (i * 7919) % JOURNAL_ENTITIES);
            let entry = sample_entry(i, ts, &entity);
            std::fs::write(events.join(entry.file_name(1)), pretty(&entry))?;
            written += 1;
            if i.is_multiple_of(250) && written < n {
                let mut again = sample_entry(i + 1, ts, &entity);
                again.run_id.push('b');
                std::fs::write(events.join(again.file_name(2)), pretty(&again))?;
                written += 1;
            }
        }
        Ok(())
    });
    r?;
    Ok(d)
}

/// One `kai journal big --limit 20 EXTRA`, timed from spawn to exit; and the lines it printed.
fn query_journal(kai: &Path, data_dir: &Path, extra: &[&str]) -> Result<(Duration, usize)> {
    let mut cmd = Command::new(kai);
    cmd.env_clear()
        .arg("--data-dir")
        .arg(data_dir)
        .args(["journal", "big", "--limit", "20"])
        .args(extra)
        .stdin(Stdio::null());
    let (d, out) = time(|| cmd.output());
    let out = out?;
    if !out.status.success() {
        return Err(format!(
            "kai journal failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if let [_, value] = extra {
        if !text.lines().all(|l| l.contains(value)) {
            return Err(format!(
                "kai journal {extra:?} printed entries that do not match:\n{text}"
            )
            .into());
        }
    }
    Ok((d, text.lines().filter(|l| !l.is_empty()).count()))
}

// --- main --------------------------------------------------------------------------------

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("kai-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse()?;
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; its figures say little. Use --release.");
    }
    if args.build {
        build_binaries()?;
    }
    let noop = sibling("noop-module")?;
    let kai_bin = match &args.kai {
        Some(p) => p.clone(),
        None => sibling("kai")?,
    };
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("kai-bench-")
        .tempdir_in(&parent)?;
    let root = tmp.path().to_path_buf();

    let started_at = Utc::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = String::new();
    writeln!(
        out,
        "## kai-bench, {}",
        started_at.format("%Y-%m-%d %H:%M UTC")
    )?;
    writeln!(out)?;
    writeln!(out, "| machine | |")?;
    writeln!(out, "|---|---|")?;
    writeln!(out, "| cpu | {} × {} |", cores, cpu_model())?;
    writeln!(out, "| memory | {} |", mem_total())?;
    writeln!(
        out,
        "| kernel | {} |",
        read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into())
    )?;
    writeln!(
        out,
        "| file system of the data dirs | {} |",
        file_system(&root)
    )?;
    writeln!(out, "| kai commit | {} |", git_commit())?;
    let load_before = load_average();
    writeln!(
        out,
        "| build | {} |",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )?;
    writeln!(
        out,
        "| command | `kai-bench{}` |",
        std::env::args()
            .skip(1)
            .map(|a| format!(" {a}"))
            .collect::<String>()
    )?;
    writeln!(out)?;

    // 1-3. The floor and the runs, interleaved: ROUNDS rounds, each doing a share of every
    // measurement, so that whatever else the machine does falls on all of them alike.
    let context = serde_json::to_vec(&json!({
        "protocol": 1, "run_id": "r_01JDBENCH0000000000000000", "module": "noop",
        "attempt": 1, "trigger": {"type": "invoke", "payload": {}}, "entity": "invoke",
        "chat_id": null, "settings": {}, "state": {}, "resume": null
    }))?;
    let mut true_floor = Vec::new();
    let mut noop_direct = Vec::new();
    let mut writes = Vec::new();
    let mut ledger = Vec::new();
    let mut atomic = AtomicWrites::open(&root)?;
    let mut ledger_writes = LedgerWrites::open(&root, None)?;
    let mut ledger_collisions = LedgerWrites::open(&root, Some(COLLIDING_PER_SECOND))?;
    let mut ledger_colliding = Vec::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    kai::runner::become_subreaper();
    let mut benches: Vec<(&str, Arc<Bench>)> = Vec::new();
    for (label, kind) in [
        ("one entity", Entities::One),
        ("a new entity each run", Entities::Distinct),
    ] {
        let dir = root.join(format!("e2e-{kind:?}").to_lowercase());
        let bench = Arc::new(Bench::open(&dir, &noop, kind)?);
        runtime.block_on(bench.warm_up())?;
        benches.push((label, bench));
    }
    let share = |total: usize, round: usize| total / ROUNDS + usize::from(round < total % ROUNDS);
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        spawn_true(share(args.floor, round), &mut true_floor)?;
        spawn_noop_direct(&noop, &context, share(args.floor, round), &mut noop_direct)?;
        atomic.measure(share(args.floor, round), &mut writes)?;
        ledger_writes.measure(share(args.floor, round), &mut ledger)?;
        ledger_collisions.measure(
            share(2 * COLLIDING_PER_SECOND, round),
            &mut ledger_colliding,
        )?;
        for (_, bench) in &mut benches {
            let runs = share(args.runs, round);
            runtime.block_on(async {
                Arc::get_mut(bench)
                    .expect("no task holds it")
                    .measure_sequential(runs)
                    .await?;
                bench.measure_parallel(runs, 4).await
            })?;
        }
    }
    for (_, bench) in &benches {
        let files = count_files(&bench.engine.data.events_dir("noop"));
        let expected = WARM_UP_RUNS + 2 * args.runs;
        if files != expected {
            return Err(format!("expected {expected} journal files, found {files}").into());
        }
    }
    let true_floor = stats(true_floor);
    let noop_direct = stats(noop_direct);
    let write = stats(writes);
    let ledger = stats(ledger);
    let ledger_colliding = stats(ledger_colliding);

    writeln!(
        out,
        "### One run of a no-op module, and the floor beside it"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| what | n | median ms | p99 ms | max ms | runs/s | CPU ms/run |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
    // `rate`: the runs per second of wall time, and the CPU time per run (kai and module).
    let row =
        |out: &mut String, what: &str, s: &Stats, rate: Option<(f64, f64)>| -> std::fmt::Result {
            let (per_sec, cpu) = match rate {
                Some((r, c)) => (format!("{r:.0}"), format!("{c:.2}")),
                None => (String::new(), String::new()),
            };
            writeln!(
                out,
                "| {what} | {} | {} | {} | {} | {per_sec} | {cpu} |",
                s.n,
                ms(s.median),
                ms(s.p99),
                ms(s.max),
            )
        };
    let rate = |n: usize, wall: Duration, cpu: Duration| {
        Some((
            n as f64 / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0 / n as f64,
        ))
    };
    row(
        &mut out,
        "floor: spawn + wait `/bin/true`",
        &true_floor,
        None,
    )?;
    row(
        &mut out,
        "floor: `noop-module` started directly (pipes, context in, result out)",
        &noop_direct,
        None,
    )?;
    row(
        &mut out,
        "floor: one atomic file write (tmp, fsync, rename, dir fsync)",
        &write,
        None,
    )?;
    row(
        &mut out,
        "floor: the ledger's 3 commits of one run (no files)",
        &ledger,
        None,
    )?;
    row(
        &mut out,
        &format!(
            "floor: the same 3 commits, one entity, {COLLIDING_PER_SECOND} runs finishing in each second (journal names `_2` to `_{COLLIDING_PER_SECOND}`)"
        ),
        &ledger_colliding,
        None,
    )?;
    let mut sequential = Vec::new();
    let mut targets: Vec<String> = Vec::new();
    for (label, bench) in &benches {
        let seq = stats(bench.sequential.clone());
        let par = stats(bench.parallel.clone());
        let own: Vec<Duration> = bench
            .sequential
            .iter()
            .zip(&bench.sequential_runner)
            .map(|(total, runner)| total.saturating_sub(*runner))
            .collect();
        row(
            &mut out,
            &format!("**`Engine::run_now`, one after the other** ({label})"),
            &seq,
            rate(seq.n, bench.sequential_wall, bench.sequential_cpu),
        )?;
        row(
            &mut out,
            "&nbsp;&nbsp;of which the runner: spawn to report",
            &stats(bench.sequential_runner.clone()),
            None,
        )?;
        row(
            &mut out,
            "&nbsp;&nbsp;of which the engine: ledger, journal file, the rest",
            &stats(own),
            None,
        )?;
        row(
            &mut out,
            &format!("**`Engine::run_now`, 4 at once** ({label}; latency of each run)"),
            &par,
            rate(par.n, bench.parallel_wall, bench.parallel_cpu),
        )?;
        row(
            &mut out,
            "&nbsp;&nbsp;of which the runner: spawn to report",
            &stats(bench.parallel_runner.clone()),
            None,
        )?;
        let par_rate = par.n as f64 / bench.parallel_wall.as_secs_f64();
        let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
        targets.push(format!(
            "| median per run ≤ 3 ms, one after the other ({label}) | {} ms (p99 {} ms) | {} |",
            ms(seq.median),
            ms(seq.p99),
            verdict(seq.median <= Duration::from_millis(3))
        ));
        targets.push(format!(
            "| ≥ 500 runs/s with 4 at once ({label}) | {par_rate:.0} runs/s | {} |",
            verdict(par_rate >= 500.0)
        ));
        sequential.push((label, seq));
    }
    // One step of the engine looked at alone: after each run, `announce` asks the ledger for
    // the entity's previous outcome (`notify: changes`). Timed on the two ledgers as the runs
    // left them.
    let mut previous = Vec::new();
    for (_, bench) in &benches {
        let history = bench
            .engine
            .ledger
            .count_phase(kai::ledger::Phase::Finished)?;
        let (what, entity) = match bench.kind {
            Entities::One => ("an entity with earlier runs", "invoke"),
            Entities::Distinct => ("an entity's first run", "never-seen"),
        };
        let mut samples = Vec::with_capacity(100);
        for _ in 0..100 {
            let (d, r) = time(|| {
                bench
                    .engine
                    .ledger
                    .previous_status("noop", entity, "r_none")
            });
            r?;
            samples.push(d);
        }
        previous.push((
            format!("engine step: ledger `previous_status` for {what}, module with {history} runs"),
            stats(samples),
        ));
    }
    for (what, s) in &previous {
        row(&mut out, what, s, None)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Overhead of kai per run (median, one after the other):"
    )?;
    writeln!(out)?;
    for (label, seq) in &sequential {
        writeln!(
            out,
            "- {label}: {} ms over spawning `/bin/true`, {} ms over starting `noop-module` directly",
            signed_ms(seq.median, true_floor.median),
            signed_ms(seq.median, noop_direct.median),
        )?;
    }
    writeln!(out)?;
    drop(benches);
    drop(runtime);

    // 4. the journal
    let journal_dir = root.join("journal-data");
    eprintln!("journal: writing {} files", args.journal_files);
    let made_in = make_journal(&journal_dir, args.journal_files)?;
    let files = count_files(&journal_dir.join("modules/big/events"));
    eprintln!("journal: {files} files in {:.1}s", made_in.as_secs_f64());
    let entity = "octo/repo#7".to_string();
    let queries: Vec<(String, Vec<&str>)> = vec![
        ("`kai journal big --limit 20`".into(), vec![]),
        (
            format!("`kai journal big --limit 20 --entity {entity}`"),
            vec!["--entity", entity.as_str()],
        ),
        (
            "`kai journal big --limit 20 --status error`".into(),
            vec!["--status", "error"],
        ),
    ];
    writeln!(
        out,
        "### `kai journal` on a module with {files} journal files (warm page cache)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| query | n | entries shown | median ms | p99 ms | max ms |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    // Interleaved like the runs: each repetition takes one sample of every measurement.
    let events = journal_dir.join("modules/big/events");
    let mut start_floor = Vec::new();
    let mut list_floor = Vec::new();
    let mut query_samples: Vec<Vec<Duration>> = vec![Vec::new(); queries.len()];
    let mut shown = vec![0; queries.len()];
    for (_, extra) in &queries {
        query_journal(&kai_bin, &journal_dir, extra)?; // warm-up, untimed
    }
    eprintln!("journal: {} repetitions", args.journal_reps);
    for _ in 0..args.journal_reps {
        let (d, status) = time(|| {
            Command::new(&kai_bin)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
        });
        if !status?.success() {
            return Err("kai --version failed".into());
        }
        start_floor.push(d);
        let (d, names) = time(|| -> Result<Vec<std::ffi::OsString>> {
            std::fs::read_dir(&events)?
                .map(|e| Ok(e?.file_name()))
                .collect()
        });
        if names?.len() != files {
            return Err("the journal directory changed".into());
        }
        list_floor.push(d);
        for (i, (_, extra)) in queries.iter().enumerate() {
            let (d, lines) = query_journal(&kai_bin, &journal_dir, extra)?;
            query_samples[i].push(d);
            shown[i] = lines;
        }
    }
    let floor_row = |out: &mut String, what: &str, s: &Stats| {
        writeln!(
            out,
            "| {what} | {} | | {} | {} | {} |",
            s.n,
            ms(s.median),
            ms(s.p99),
            ms(s.max)
        )
    };
    floor_row(
        &mut out,
        "floor: start and exit of the `kai` binary (`kai --version`)",
        &stats(start_floor),
    )?;
    floor_row(
        &mut out,
        &format!(
            "floor: read the {files} names of the directory (in-process `read_dir`, no sort, no file opened)"
        ),
        &stats(list_floor),
    )?;
    for (((label, extra), samples), lines) in queries.iter().zip(query_samples).zip(shown) {
        let s = stats(samples);
        writeln!(
            out,
            "| {label} | {} | {lines} | {} | {} | {} |",
            s.n,
            ms(s.median),
            ms(s.p99),
            ms(s.max)
        )?;
        if extra.is_empty() {
            targets.push(format!(
                "| {label} on {files} files ≤ 50 ms | median {} ms, p99 {} ms | {} |",
                ms(s.median),
                ms(s.p99),
                if s.median <= Duration::from_millis(50) {
                    "met"
                } else {
                    "**missed**"
                }
            ));
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "Journal set-up: {files} files written in {:.1} s; 1 in 50 is an error, 1 in 10 skipped; \
         {JOURNAL_ENTITIES} entities, so `--entity` matches about 1 file in {JOURNAL_ENTITIES}.",
        made_in.as_secs_f64()
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Load average (1, 5, 15 min) before the bench: {load_before}; after: {}. On a shared \
         machine, anything above 0 is someone else's work competing with the bench.",
        load_average()
    )?;
    writeln!(out)?;
    writeln!(out, "### Targets")?;
    writeln!(out)?;
    writeln!(out, "| target | result | |")?;
    writeln!(out, "|---|---|---|")?;
    for t in &targets {
        writeln!(out, "{t}")?;
    }
    writeln!(
        out,
        "\nTotal bench time: {:.0} s.",
        (Utc::now() - started_at).num_milliseconds() as f64 / 1000.0
    )?;

    print!("{out}");
    std::io::stdout().flush()?;
    if args.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    } else {
        eprintln!("removing {}", root.display());
        drop(tmp);
    }
    Ok(())
}
