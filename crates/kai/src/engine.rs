//! One run's lifecycle, and recovery after a crash.
//!
//! ```text
//! ledger: running ──▶ runner: the process ──▶ core: interpret ──▶ ledger: finishing
//!     ──▶ files: checkpoint, state.json, journal ──▶ ledger: finished
//! ```
//!
//! The invariant: a run's journal file is written only after the ledger holds its complete
//! outcome and the file's name, and writing it again gives the same file. So a crash at any
//! point leaves each run either in the ledger with its files still to write (recovery writes
//! them) or with its files written; never two journal files, never a partial one. A run whose
//! process was still going when kai died is recorded as `interrupted`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::Utc;
use kai_core::outcome::{interpret, redact, Outcome, DEFAULT_QUESTION_EXPIRY};
use kai_core::{JournalEntry, JournalStatus, LoadedModule, Origin};
use kai_sdk::{Context, Trigger};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::crash;
use crate::data_dir::DataDir;
use crate::ledger::{Finish, Ledger, NewRun, RunRow};
use crate::runner::{ModuleRunner, ProcessSpec};

/// Host variables every module gets, when kai has them, besides the `KAI_*` ones.
const BASE_ENV: [&str; 8] = [
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// What starts a run and what it is about.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub trigger: Trigger,
    pub entity: String,
    pub chat_id: Option<i64>,
}

/// A run that is over, with where its journal file is.
#[derive(Debug, Clone)]
pub struct Finished {
    pub entry: JournalEntry,
    pub journal_path: PathBuf,
    pub state: Option<Value>,
}

/// This process's claim on the runs it executes: a lock file held open while kai lives. The
/// kernel drops the lock when the process dies, however it dies; that is how recovery tells a
/// crashed owner from one that is still running (a `kai run` in another terminal, say).
pub struct Owner {
    pub id: String,
    _lock: File,
}

impl Owner {
    fn acquire(dir: &Path) -> Result<Owner> {
        let id = format!("o_{}", ulid::Ulid::new());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{id}.lock")))
            .context("cannot create this process's lock file")?;
        file.try_lock()
            .context("cannot lock this process's lock file")?;
        Ok(Owner { id, _lock: file })
    }

    /// Takes over a dead owner's lock; `None` while that owner still lives.
    fn take_over(dir: &Path, id: &str) -> Option<Option<File>> {
        let path = dir.join(format!("{id}.lock"));
        match OpenOptions::new().write(true).open(&path) {
            Ok(file) => file.try_lock().ok().map(|()| Some(file)),
            Err(_) => Some(None),
        }
    }
}

pub struct Engine {
    pub data: DataDir,
    pub ledger: Ledger,
    pub config: Config,
    runner: Arc<dyn ModuleRunner>,
    owner: Owner,
    kai_exe: PathBuf,
}

/// A fresh run id: `r_` and a ULID, so ids sort by creation time.
pub fn new_run_id() -> String {
    format!("r_{}", ulid::Ulid::new())
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Engine {
    pub fn open(config: Config, runner: Arc<dyn ModuleRunner>) -> Result<Engine> {
        let data = DataDir::open(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        let ledger = Ledger::open(&data.ledger_file())?;
        let owner = Owner::acquire(&data.owners_dir())?;
        let kai_exe = std::env::current_exe().context("cannot find kai's own executable")?;
        Ok(Engine {
            data,
            ledger,
            config,
            runner,
            owner,
            kai_exe,
        })
    }

    pub fn owner_id(&self) -> &str {
        &self.owner.id
    }

    /// Runs a module now, in the foreground: recorded as running at once, executed, journaled.
    pub async fn run_now(
        &self,
        module: &LoadedModule,
        invocation: Invocation,
        cancel: CancellationToken,
    ) -> Result<Finished> {
        let run = NewRun {
            run_id: new_run_id(),
            module: module.name().to_owned(),
            entity: invocation.entity,
            trigger: invocation.trigger,
            chat_id: invocation.chat_id,
        };
        let attempt = self.ledger.insert_running(&run, &self.owner.id)?;
        self.execute(module, &run, attempt, cancel).await
    }

    /// Executes a run the ledger already holds as running under this owner.
    pub async fn execute(
        &self,
        module: &LoadedModule,
        run: &NewRun,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<Finished> {
        let name = module.name();
        let started = Instant::now();
        let module_dir = self.data.module_dir(name);
        std::fs::create_dir_all(&module_dir)
            .with_context(|| format!("cannot create {}", module_dir.display()))?;
        let token = random_token();
        let outcome = match self.read_state(name) {
            Err(e) => Outcome::failure(JournalStatus::Error, e, ""),
            Ok(state) => {
                let ctx = Context {
                    protocol: kai_sdk::PROTOCOL_VERSION,
                    run_id: run.run_id.clone(),
                    module: name.to_owned(),
                    attempt,
                    trigger: run.trigger.clone(),
                    entity: run.entity.clone(),
                    chat_id: run.chat_id,
                    settings: Value::Object(module.manifest.settings.clone()),
                    state,
                    resume: None,
                };
                let spec = self.process_spec(module, &ctx, &token)?;
                let report = self.runner.run(spec, cancel).await;
                interpret(&report)
            }
        };
        crash::point("after-exit");
        let mut secrets = self.config.secrets();
        secrets.push(&token);
        let outcome = redact_outcome(outcome, &secrets);
        let finish = self.finish_for(run, attempt, outcome, started.elapsed().as_secs_f64());
        self.finish(&run.run_id, finish)
    }

    fn read_state(&self, module: &str) -> Result<Value, String> {
        let path = self.data.state_file(module);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not valid JSON ({e}); fix or remove it",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn process_spec(
        &self,
        module: &LoadedModule,
        ctx: &Context,
        token: &str,
    ) -> Result<ProcessSpec> {
        let manifest = &module.manifest;
        let data_dir = self.data.module_dir(module.name());
        let code_dir = match &module.origin {
            Origin::User { dir } => dir.clone(),
            Origin::BuiltIn => data_dir.clone(),
        };
        let program = manifest.run.program();
        let program = if module.is_builtin() && program == "kai" {
            self.kai_exe.clone()
        } else if program.contains('/') {
            code_dir.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut env: Vec<(String, String)> = BASE_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        let c = &self.config;
        env.extend([
            (
                "KAI_PROTOCOL".to_string(),
                kai_sdk::PROTOCOL_VERSION.to_string(),
            ),
            ("KAI_MODULE".into(), module.name().to_owned()),
            ("KAI_RUN_ID".into(), ctx.run_id.clone()),
            (
                "KAI_MODULE_DIR".into(),
                data_dir.to_string_lossy().into_owned(),
            ),
            ("KAI_API_URL".into(), c.api_url()),
            ("KAI_RUN_TOKEN".into(), token.to_owned()),
            ("KAI_CLAUDE_BIN".into(), c.claude_bin.clone()),
        ]);
        for name in &manifest.env {
            let name = name.as_str();
            let from_config = match name {
                "KAI_GITHUB_TOKEN" => c.github_token.as_ref().map(|s| s.expose().to_owned()),
                "KAI_GITHUB_API_URL" => Some(c.github_api_url.clone()),
                "KAI_TELEGRAM_API_URL" => Some(c.telegram_api_url.clone()),
                "KAI_DATA_DIR" => Some(self.data.root().to_string_lossy().into_owned()),
                "KAI_WORKSPACE_BASE" => c
                    .workspace_base
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                _ => None,
            };
            if let Some(value) = from_config.or_else(|| std::env::var(name).ok()) {
                env.retain(|(k, _)| k != name);
                env.push((name.to_owned(), value));
            }
        }
        Ok(ProcessSpec {
            program,
            args: manifest.run.args().to_vec(),
            dir: code_dir,
            env,
            stdin: serde_json::to_vec(ctx)?,
            timeout: manifest.timeout.0,
            idle_timeout: manifest.idle_timeout.map(|t| t.0),
        })
    }

    fn finish_for(&self, run: &NewRun, attempt: u32, o: Outcome, duration: f64) -> Finish {
        let now = Utc::now();
        let checkpoint = (o.status == JournalStatus::Paused).then(|| {
            let question = o.question.clone().expect("a paused outcome has a question");
            let expires = question
                .expires
                .as_deref()
                .and_then(|e| e.parse().ok())
                .unwrap_or(DEFAULT_QUESTION_EXPIRY);
            let expires_at = now + chrono::Duration::seconds(expires.as_secs() as i64);
            json!({
                "run_id": run.run_id,
                "module": run.module,
                "entity": run.entity,
                "chat_id": run.chat_id,
                "question": question,
                "asked_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "checkpoint": o.checkpoint.clone().unwrap_or(Value::Null),
                "state": o.state,
                "original_trigger": run.trigger,
                "attempt": attempt,
            })
        });
        Finish {
            entry: JournalEntry {
                run_id: run.run_id.clone(),
                timestamp: now,
                module: run.module.clone(),
                trigger: run.trigger.label(),
                delivery_id: run.trigger.delivery_id.clone(),
                entity: run.entity.clone(),
                chat_id: run.chat_id,
                status: o.status,
                summary: o.summary,
                duration_seconds: (duration * 1000.0).round() / 1000.0,
                attempt,
                details: o.details,
                error: o.error,
                stderr_tail: o.stderr_tail,
                retry: o.retry,
                question: o.question,
            },
            state: o.state,
            checkpoint,
        }
    }

    /// Records the outcome, then writes the run's files, then closes the run.
    fn finish(&self, run_id: &str, finish: Finish) -> Result<Finished> {
        let events = self.data.events_dir(&finish.entry.module);
        let entry = finish.entry.clone();
        let path = self
            .ledger
            .finishing(run_id, &finish, |n| events.join(entry.file_name(n)))?;
        crash::point("before-journal");
        self.write_files(&finish, Path::new(&path))?;
        crash::point("after-journal");
        self.ledger.finished(run_id)?;
        Ok(Finished {
            entry: finish.entry,
            journal_path: PathBuf::from(path),
            state: finish.state,
        })
    }

    /// Writes a finishing run's files; doing it twice gives the same files.
    fn write_files(&self, finish: &Finish, journal_path: &Path) -> Result<()> {
        let module = &finish.entry.module;
        if let Some(checkpoint) = &finish.checkpoint {
            let path = self
                .data
                .pending_dir(module)
                .join(format!("{}.json", finish.entry.run_id));
            self.data.write_atomic(&path, &pretty(checkpoint)?)?;
        }
        if let Some(state) = &finish.state {
            self.data
                .write_atomic(&self.data.state_file(module), &pretty(state)?)?;
        }
        self.data
            .write_atomic(journal_path, &pretty(&finish.entry)?)
            .with_context(|| format!("cannot write {}", journal_path.display()))
    }

    /// Carries every run a dead kai process left in flight to its end: runs whose outcome was
    /// recorded get their files written; runs whose process was still going are journaled as
    /// `interrupted`. Runs of owners still alive are left alone. Returns what it did.
    pub fn recover(&self) -> Result<Vec<Finished>> {
        let mut by_owner: BTreeMap<String, Vec<RunRow>> = BTreeMap::new();
        for row in self.ledger.in_flight(&self.owner.id)? {
            by_owner
                .entry(row.owner.clone().unwrap_or_default())
                .or_default()
                .push(row);
        }
        let owners = self.data.owners_dir();
        let mut recovered = Vec::new();
        for (owner, rows) in by_owner {
            let Some(lock) = Owner::take_over(&owners, &owner) else {
                continue; // that kai process is alive and will finish its own runs
            };
            for row in rows {
                recovered.push(self.recover_run(row)?);
            }
            drop(lock);
            let _ = std::fs::remove_file(owners.join(format!("{owner}.lock")));
        }
        Ok(recovered)
    }

    fn recover_run(&self, row: RunRow) -> Result<Finished> {
        if let (Some(finish), Some(path)) = (&row.outcome, &row.journal_path) {
            self.write_files(finish, Path::new(path))?;
            self.ledger.finished(&row.run_id)?;
            return Ok(Finished {
                entry: finish.entry.clone(),
                journal_path: path.into(),
                state: finish.state.clone(),
            });
        }
        let since = row.started_at.unwrap_or_else(Utc::now);
        let reason = "interrupted: kai stopped while the run was in flight".to_string();
        let outcome = Outcome::failure(JournalStatus::Interrupted, reason, "");
        let run = NewRun {
            run_id: row.run_id.clone(),
            module: row.module.clone(),
            entity: row.entity.clone(),
            trigger: row.trigger.clone(),
            chat_id: row.chat_id,
        };
        let duration = (Utc::now() - since).num_milliseconds().max(0) as f64 / 1000.0;
        let finish = self.finish_for(&run, row.attempt, outcome, duration);
        self.finish(&row.run_id, finish)
    }
}

fn pretty<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Secrets never reach the journal: whatever a module printed is scrubbed of them.
fn redact_outcome(mut o: Outcome, secrets: &[&str]) -> Outcome {
    o.summary = redact(&o.summary, secrets);
    o.error = o.error.map(|e| redact(&e, secrets));
    o.stderr_tail = o.stderr_tail.map(|t| redact(&t, secrets));
    o.details = redact_value(o.details, secrets);
    o.state = o.state.map(|v| redact_value(v, secrets));
    o.checkpoint = o.checkpoint.map(|v| redact_value(v, secrets));
    o
}

fn redact_value(v: Value, secrets: &[&str]) -> Value {
    let text = v.to_string();
    let clean = redact(&text, secrets);
    if clean == text {
        v
    } else {
        serde_json::from_str(&clean).unwrap_or(Value::String("[redacted]".into()))
    }
}
