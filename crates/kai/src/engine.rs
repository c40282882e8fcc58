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
//! them) or with its files written; never two journal files, never a partial one.
//!
//! A run whose process was still going when kai died is, when the daemon ran it and it has
//! attempts left (3 in all), queued again: the module sees `attempt` > 1 and can check its
//! state for work already done. A foreground run (`kai run`), or one on its last attempt, is
//! journaled as `interrupted`. A module that answers `error` with `retry: true` gets the same
//! treatment, after a back-off of 10 s, then 30 s (`KAI_RETRY_BACKOFF` sets the base).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::Utc;
use kai_core::guard::{announce_outcome, retry_delay, MAX_ATTEMPTS};
use kai_core::outcome::{interpret, redact, Outcome, DEFAULT_QUESTION_EXPIRY};
use kai_core::{JournalEntry, JournalStatus, LoadedModule, Origin};
use kai_sdk::{Context, Trigger};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::crash;
use crate::data_dir::DataDir;
use crate::ledger::OutMessage;
use crate::ledger::{Finish, Ledger, NewRun, Phase, RunRow};
use crate::runner::{kill_orphaned_group, process_start, ModuleRunner, ProcessSpec};
use kai_core::manifest::Notify;
use kai_core::question::{ask_text, button_data, timeline, Timeline};
use kai_sdk::TriggerType;

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

/// How an execution ended.
// One of these exists per run and is consumed at once: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RunEnd {
    /// The run is over and journaled.
    Finished(Finished),
    /// The run was no longer startable when its turn came (another start took it, or it
    /// waits for a back-off): nothing was done.
    NotStartable,
    /// The module asked for another attempt; the run waits in the queue until then.
    Retrying {
        attempt: u32,
        not_before: chrono::DateTime<Utc>,
    },
}

/// A run that is over, with where its journal file is.
#[derive(Debug, Clone)]
pub struct Finished {
    pub entry: JournalEntry,
    pub journal_path: PathBuf,
    pub state: Option<Value>,
}

/// What recovery did with one run a dead kai process left in flight.
#[allow(clippy::large_enum_variant)] // as RunEnd: one per run, consumed at once
#[derive(Debug, Clone)]
pub enum Recovered {
    /// Its files were written (its outcome was known, or it is journaled as interrupted).
    Finished(Finished),
    /// A daemon run with attempts left: queued again, to start as its next attempt.
    Requeued {
        run_id: String,
        module: String,
        attempt: u32,
    },
}

/// The start of the UTC day `t` is in: budgets count per UTC day.
pub fn day_start(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    t.date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
}

/// This process's claim on the runs it executes: a lock file held open while kai lives. The
/// kernel drops the lock when the process dies, however it dies; that is how recovery tells a
/// crashed owner from one that is still running (a `kai run` in another terminal, say).
pub struct Owner {
    pub id: String,
    path: PathBuf,
    _lock: File,
}

impl Drop for Owner {
    /// A clean exit leaves no lock file; a crash leaves one for recovery to find.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Owner {
    fn acquire(dir: &Path) -> Result<Owner> {
        let id = format!("o_{}", ulid::Ulid::new());
        let path = dir.join(format!("{id}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .context("cannot create this process's lock file")?;
        file.try_lock()
            .context("cannot lock this process's lock file")?;
        Ok(Owner {
            id,
            path,
            _lock: file,
        })
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
    /// Woken when messages were put in the outbox, so that they go out at once.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    owner: Owner,
    kai_exe: PathBuf,
    retry_base: std::time::Duration,
    /// Tokens of the runs in flight; the API accepts a run token only while it is here.
    pub run_tokens: RunTokens,
}

/// The run tokens kai handed out and that are still valid: one per run in flight. They are
/// kept by their SHA-256, so that looking one up compares digests, never the secret itself.
#[derive(Default)]
pub struct RunTokens(Mutex<HashMap<String, (String, String)>>);

/// Holds a run token valid; dropping it (the run is over, however it ended) revokes it.
pub struct LiveToken<'a> {
    tokens: &'a RunTokens,
    token: String,
}

impl RunTokens {
    fn issue<'a>(&'a self, token: &str, module: &str, run_id: &str) -> LiveToken<'a> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest(token), (module.to_owned(), run_id.to_owned()));
        LiveToken {
            tokens: self,
            token: digest(token),
        }
    }

    /// The module and run a token belongs to, while that run is in flight.
    pub fn lookup(&self, token: &str) -> Option<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest(token))
            .cloned()
    }
}

fn digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

impl Drop for LiveToken<'_> {
    fn drop(&mut self) {
        self.tokens
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

/// Runs blocking work (SQLite, fsync) from async code without stalling the runtime's other
/// tasks: on the daemon's multi-thread runtime the worker hands its tasks to another thread
/// first; on `kai run`'s single thread there is nothing else to stall.
pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
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
        let retry_base = std::env::var("KAI_RETRY_BACKOFF")
            .ok()
            .and_then(|v| v.parse::<kai_core::Duration>().ok())
            .map(|d| d.std())
            .unwrap_or(std::time::Duration::from_secs(10));
        Ok(Engine {
            data,
            ledger,
            config,
            runner,
            outbox_wake: Arc::new(tokio::sync::Notify::new()),
            owner,
            kai_exe,
            retry_base,
            run_tokens: RunTokens::default(),
        })
    }

    /// Puts messages in the outbox and wakes whoever sends them.
    pub fn tell(&self, messages: &[OutMessage]) -> Result<()> {
        off_runtime(|| self.ledger.enqueue(messages))?;
        self.outbox_wake.notify_one();
        Ok(())
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
        match self.execute(module, &run, attempt, cancel).await? {
            RunEnd::Finished(f) => Ok(f),
            RunEnd::Retrying { .. } | RunEnd::NotStartable => {
                unreachable!("foreground runs are never retried nor queued")
            }
        }
    }

    /// Starts a queued run: moves it to running under this owner and executes it.
    pub async fn start_queued(
        &self,
        module: &LoadedModule,
        row: &RunRow,
        cancel: CancellationToken,
    ) -> Result<RunEnd> {
        let Some(attempt) = off_runtime(|| self.ledger.start(&row.run_id, &self.owner.id))? else {
            return Ok(RunEnd::NotStartable);
        };
        let run = row.as_new_run();
        self.execute(module, &run, attempt, cancel).await
    }

    /// Ends a queued run without starting its module (the module is gone), journaled as an
    /// error that says why.
    pub fn abandon(&self, row: &RunRow, reason: String) -> Result<Option<Finished>> {
        let Some(attempt) = self.ledger.start(&row.run_id, &self.owner.id)? else {
            return Ok(None);
        };
        let run = row.as_new_run();
        let outcome = Outcome::failure(JournalStatus::Error, reason, "");
        let mut finish = self.finish_for(&run, attempt, outcome, 0.0);
        finish.notes.extend(self.notes_for(None, &finish.entry));
        self.finish(&row.run_id, finish).map(Some)
    }

    /// Closes a question that expired with no default to go on with: a run of its own, with
    /// no process, journaled `expired` under the question's entity, and said in the topic.
    /// `None` when the question was closed meanwhile (answered at the last moment).
    pub fn close_expired(&self, q: &crate::ledger::Asked) -> Result<Option<Finished>> {
        let delivery_id = format!("expire-{}", q.run_id);
        let run = NewRun {
            run_id: new_run_id(),
            module: q.module.clone(),
            entity: q.entity.clone(),
            trigger: Trigger {
                kind: TriggerType::Resume,
                source: Some("kai".into()),
                event: Some("expired".into()),
                action: None,
                delivery_id: Some(delivery_id),
                payload: json!({ "run_id": q.run_id, "question": q.question }),
            },
            chat_id: q.chat_id,
        };
        let outcome = Outcome {
            status: JournalStatus::Expired,
            summary: format!("no answer in time, closed: {}", q.question.text),
            details: json!({ "question_run_id": q.run_id }),
            state: None,
            question: None,
            checkpoint: None,
            retry: false,
            error: None,
            stderr_tail: None,
        };
        let mut finish = self.finish_for(&run, 1, outcome, 0.0);
        finish.notes.push(OutMessage::to_module(
            &q.module,
            kai_core::question::expired_text(&q.entity, &q.question),
        ));
        let events = self.data.events_dir(&q.module);
        let entry = finish.entry.clone();
        let Some(path) =
            self.ledger
                .close_expired(&q.run_id, &run, &self.owner.id, &finish, |n| {
                    events.join(entry.file_name(n))
                })?
        else {
            return Ok(None);
        };
        self.close(&run.run_id, finish, path).map(Some)
    }

    /// Executes a run the ledger already holds as running under this owner.
    pub async fn execute(
        &self,
        module: &LoadedModule,
        run: &NewRun,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<RunEnd> {
        let name = module.name();
        let started = Instant::now();
        let module_dir = self.data.module_dir(name);
        std::fs::create_dir_all(&module_dir)
            .with_context(|| format!("cannot create {}", module_dir.display()))?;
        let token = random_token();
        let _live = self.run_tokens.issue(&token, name, &run.run_id);
        let outcome = match off_runtime(|| self.read_state(name)) {
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
                    resume: match run.trigger.kind {
                        TriggerType::Resume => {
                            serde_json::from_value(run.trigger.payload.clone()).ok()
                        }
                        _ => None,
                    },
                };
                let mut spec = self.process_spec(module, &ctx, &token)?;
                let (spawned, pid) = tokio::sync::oneshot::channel();
                spec.on_spawn = Some(spawned);
                // The group is recorded as soon as it exists, so that recovery after a crash
                // can kill what the module left running.
                let record = async {
                    if let Ok(pid) = pid.await {
                        let _ = off_runtime(|| {
                            self.ledger.set_pgid(&run.run_id, pid, process_start(pid))
                        });
                    }
                };
                let (report, ()) = tokio::join!(self.runner.run(spec, cancel), record);
                interpret(&report)
            }
        };
        crash::point("after-exit");
        let mut secrets = self.config.secrets();
        secrets.push(&token);
        let outcome = redact_outcome(outcome, &secrets);
        if outcome.retry
            && attempt < MAX_ATTEMPTS
            && !off_runtime(|| self.ledger.is_foreground(&run.run_id))?
        {
            if let Some(state) = &outcome.state {
                self.data
                    .write_atomic(&self.data.state_file(name), &pretty(state)?)?;
            }
            let delay = retry_delay(self.retry_base, attempt + 1);
            let not_before = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            self.ledger.requeue(&run.run_id, not_before)?;
            return Ok(RunEnd::Retrying {
                attempt,
                not_before,
            });
        }
        let mut finish = self.finish_for(run, attempt, outcome, started.elapsed().as_secs_f64());
        off_runtime(|| {
            finish
                .notes
                .extend(self.notes_for(Some(module), &finish.entry));
            let finished = self.finish(&run.run_id, finish)?;
            Ok(RunEnd::Finished(finished))
        })
    }

    /// What to tell the owner about an outcome, as the module's `notify:` asks (`changes`
    /// when the module is not at hand), and about a budget this run used up. A question's
    /// message is made with the checkpoint, by `finish_for`.
    fn notes_for(&self, module: Option<&LoadedModule>, e: &JournalEntry) -> Vec<OutMessage> {
        let mut notes = Vec::new();
        if e.status == JournalStatus::Paused {
            return notes;
        }
        let previous = self
            .ledger
            .previous_status(&e.module, &e.entity, &e.run_id)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok());
        let notify = module.map(|m| m.manifest.notify).unwrap_or(Notify::Changes);
        if announce_outcome(notify, e.status, previous) {
            let text = format!("{} {}: {}", e.status, e.entity, e.summary);
            notes.push(OutMessage::to_module(&e.module, text));
        }
        if let Some(budget) = module.and_then(|m| m.manifest.budget) {
            let cost = e.cost_usd();
            // This run's cost is not in the ledger yet: it is recorded with the outcome.
            let before = self
                .ledger
                .spent_since(&e.module, day_start(Utc::now()))
                .unwrap_or(0.0);
            let spent = before + cost;
            let limit = budget.usd_per_day.0;
            if cost > 0.0 && spent >= limit && before < limit {
                let text = format!(
                    "budget reached: ${spent:.2} spent today of ${limit:.2}; no more runs until tomorrow (UTC) or `kai modules enable {}`",
                    e.module
                );
                notes.push(OutMessage::to_module(&e.module, text));
            }
        }
        notes
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
            on_spawn: None,
        })
    }

    fn finish_for(&self, run: &NewRun, attempt: u32, o: Outcome, duration: f64) -> Finish {
        let now = Utc::now();
        let mut notes = Vec::new();
        let checkpoint = (o.status == JournalStatus::Paused).then(|| {
            let question = o.question.clone().expect("a paused outcome has a question");
            let expires = question
                .expires
                .as_deref()
                .and_then(|e| e.parse().ok())
                .unwrap_or(DEFAULT_QUESTION_EXPIRY);
            let t = timeline(now, expires.std());
            notes.push(ask_note(run, &question, &t));
            // A chain of questions keeps the trigger that started it.
            let original = match run.trigger.kind {
                TriggerType::Resume => run
                    .trigger
                    .payload
                    .get("original_trigger")
                    .cloned()
                    .unwrap_or(Value::Null),
                _ => serde_json::to_value(&run.trigger).unwrap_or(Value::Null),
            };
            let at =
                |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            json!({
                "run_id": run.run_id,
                "module": run.module,
                "entity": run.entity,
                "chat_id": run.chat_id,
                "question": question,
                "asked_at": at(t.asked_at),
                "remind_at": at(t.remind_at),
                "expires_at": at(t.expires_at),
                "checkpoint": o.checkpoint.clone().unwrap_or(Value::Null),
                "state": o.state,
                "original_trigger": original,
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
            notes,
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
        self.close(run_id, finish, path)
    }

    /// Writes a finishing run's files and closes it (its notes go to the outbox then).
    fn close(&self, run_id: &str, finish: Finish, path: String) -> Result<Finished> {
        self.write_files(&finish, Path::new(&path))?;
        crash::point("after-journal");
        self.ledger.finished(run_id, &finish.notes)?;
        self.outbox_wake.notify_one();
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
    pub fn recover(&self) -> Result<Vec<Recovered>> {
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
                // Read again under the lock: another kai may have recovered it meanwhile.
                let Some(row) = self.ledger.get(&row.run_id)? else {
                    continue;
                };
                if !matches!(row.phase, Phase::Running | Phase::Finishing) {
                    continue;
                }
                recovered.push(self.recover_run(row)?);
            }
            drop(lock);
            let _ = std::fs::remove_file(owners.join(format!("{owner}.lock")));
        }
        Ok(recovered)
    }

    fn recover_run(&self, row: RunRow) -> Result<Recovered> {
        if let (Some(finish), Some(path)) = (&row.outcome, &row.journal_path) {
            return self
                .close(&row.run_id, finish.clone(), path.clone())
                .map(Recovered::Finished);
        }
        if let Some(pgid) = row.pgid {
            kill_orphaned_group(pgid, row.pgid_start);
        }
        if row.attempt < MAX_ATTEMPTS && !self.ledger.is_foreground(&row.run_id)? {
            self.ledger.requeue(&row.run_id, Utc::now())?;
            return Ok(Recovered::Requeued {
                run_id: row.run_id,
                module: row.module,
                attempt: row.attempt,
            });
        }
        let since = row.started_at.unwrap_or_else(Utc::now);
        let reason = "interrupted: kai stopped while the run was in flight".to_string();
        let outcome = Outcome::failure(JournalStatus::Interrupted, reason, "");
        let run = row.as_new_run();
        let duration = (Utc::now() - since).num_milliseconds().max(0) as f64 / 1000.0;
        let mut finish = self.finish_for(&run, row.attempt, outcome, duration);
        finish.notes.extend(self.notes_for(None, &finish.entry));
        self.finish(&row.run_id, finish).map(Recovered::Finished)
    }
}

/// The question of a paused run, as it goes to the module's topic: its options as buttons.
fn ask_note(run: &NewRun, q: &kai_sdk::Question, t: &Timeline) -> OutMessage {
    OutMessage {
        buttons: q
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| (o.clone(), button_data(&run.run_id, i)))
            .collect(),
        question: Some(run.run_id.clone()),
        ..OutMessage::to_module(&run.module, ask_text(&run.entity, q, t))
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
    o.question = o.question.map(|mut q| {
        q.text = redact(&q.text, secrets);
        q.options = q.options.iter().map(|x| redact(x, secrets)).collect();
        q.default = q.default.map(|d| redact(&d, secrets));
        q
    });
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
