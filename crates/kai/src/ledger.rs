//! The run ledger: one row per run in SQLite (`kai.db`), recording the phase each run is in.
//! It is what makes runs durable: a run is in the ledger before anything of it happens, and its
//! outcome is in the ledger before any file of it is written, so that after a crash every run
//! can be carried to exactly one journal file.
//!
//! Phases: `queued` → `running` → `finishing` → `finished`. In `finishing` the row holds the
//! complete journal entry, the new state and the journal file's name; writing those files is
//! idempotent, so recovery simply does it again.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit survives the death of the
//! process (`kill -9`) but not necessarily a power cut, which is the trade the SPEC asks for.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use kai_core::guard::Facts;
use kai_core::JournalEntry;
use kai_sdk::Trigger;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod outbox;
mod questions;

pub use outbox::{OutMessage, Outgoing, Retry};
pub use questions::{Answer, Answered, Asked};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    module       TEXT NOT NULL,
    entity       TEXT NOT NULL,
    trigger_json TEXT,          -- NULL: the trigger is the delivery's (delivery_seq)
    delivery_seq INTEGER,
    chat_id      INTEGER,
    phase        TEXT NOT NULL CHECK (phase IN ('queued', 'running', 'finishing', 'finished')),
    status       TEXT,
    attempt      INTEGER NOT NULL DEFAULT 0,
    owner        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    outcome_json TEXT,
    journal_path TEXT UNIQUE,
    foreground   INTEGER NOT NULL DEFAULT 0,
    not_before   TEXT,
    cost_usd     REAL NOT NULL DEFAULT 0,
    pgid         INTEGER,
    pgid_start   INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_phase ON runs (phase, created_at);
CREATE INDEX IF NOT EXISTS runs_by_entity ON runs (module, entity, created_at);
CREATE INDEX IF NOT EXISTS runs_by_finish ON runs (module, finished_at);
CREATE INDEX IF NOT EXISTS runs_by_entity_finish ON runs (module, entity, finished_at);
CREATE INDEX IF NOT EXISTS runs_by_module_phase ON runs (module, phase);
CREATE INDEX IF NOT EXISTS runs_by_entity_phase ON runs (module, entity, phase);

-- The durable inbox: every accepted trigger, before anything is done with it.
CREATE TABLE IF NOT EXISTS deliveries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    source       TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    trigger_json TEXT NOT NULL,
    module       TEXT,
    entity       TEXT,
    chat_id      INTEGER,
    run_id       TEXT,
    received_at  TEXT NOT NULL,
    dispatched   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (source, delivery_id)
);
CREATE INDEX IF NOT EXISTS deliveries_waiting ON deliveries (dispatched, seq);

-- The why-not log.
CREATE TABLE IF NOT EXISTS decisions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    module      TEXT,
    entity      TEXT,
    trigger     TEXT NOT NULL,
    delivery_id TEXT,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (at);

-- Modules switched off by hand or by their budget; a manual enable lifts the budget for a day.
CREATE TABLE IF NOT EXISTS switches (
    module        TEXT PRIMARY KEY,
    off_reason    TEXT,
    budget_waived TEXT
);

-- The last handled fire time of each schedule trigger.
CREATE TABLE IF NOT EXISTS schedules (
    module    TEXT NOT NULL,
    trigger   TEXT NOT NULL,
    last_fire TEXT NOT NULL,
    PRIMARY KEY (module, trigger)
);
";

/// The phase of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Running,
    Finishing,
    Finished,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Finishing => "finishing",
            Phase::Finished => "finished",
        }
    }

    fn parse(s: &str) -> Phase {
        match s {
            "queued" => Phase::Queued,
            "running" => Phase::Running,
            "finishing" => Phase::Finishing,
            _ => Phase::Finished,
        }
    }
}

/// What the ledger holds about one run.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run_id: String,
    pub module: String,
    pub entity: String,
    pub trigger: Trigger,
    pub chat_id: Option<i64>,
    pub phase: Phase,
    pub attempt: u32,
    pub owner: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub outcome: Option<Finish>,
    pub journal_path: Option<String>,
    /// The process group of the attempt in flight, and when its leader started.
    pub pgid: Option<u32>,
    pub pgid_start: Option<u64>,
}

impl RunRow {
    /// The run as the engine executes it.
    pub fn as_new_run(&self) -> NewRun {
        NewRun {
            run_id: self.run_id.clone(),
            module: self.module.clone(),
            entity: self.entity.clone(),
            trigger: self.trigger.clone(),
            chat_id: self.chat_id,
        }
    }
}

/// Everything a finishing run still has to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub entry: JournalEntry,
    /// The new module state, when the run returned one.
    pub state: Option<Value>,
    /// The checkpoint file's content, when the run paused.
    pub checkpoint: Option<Value>,
    /// What to tell the owner about it (its `notify:`, its question): put in the outbox when
    /// the run ends, in the same transaction, so it is said exactly once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<OutMessage>,
}

/// A queued run, as the queue first sees it.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub run_id: String,
    pub module: String,
    pub entity: String,
}

/// A new run, about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: String,
    pub module: String,
    pub entity: String,
    pub trigger: Trigger,
    pub chat_id: Option<i64>,
}

pub struct Ledger {
    conn: Mutex<Connection>,
    /// How many threads wait for `conn`: the dispatcher ends its transaction early when anyone
    /// does, so that a webhook's acknowledgement never waits for a whole batch.
    waiting: std::sync::atomic::AtomicUsize,
}

/// One entry of the why-not log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub at: DateTime<Utc>,
    pub module: Option<String>,
    pub entity: Option<String>,
    pub trigger: String,
    pub delivery_id: Option<String>,
    pub reason: String,
    pub detail: String,
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Ledger {
    pub fn open(path: &Path) -> Result<Ledger> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the run ledger {}", path.display()))?;
        // Other kai processes (kai run, kai journal) share the file: wait for them, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        for schema in [SCHEMA, outbox::SCHEMA, questions::SCHEMA] {
            conn.execute_batch(schema)
                .context("cannot create the run ledger's tables")?;
        }
        Ok(Ledger {
            conn: Mutex::new(conn),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// For the daemon: moves WAL checkpoints (which fsync the database) off the writers' path
    /// into a thread of their own, so that acknowledging a webhook never waits for one.
    pub fn checkpoint_in_background(&self, path: &Path) -> Result<()> {
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(10))?;
        self.conn().pragma_update(None, "wal_autocheckpoint", 0)?;
        std::thread::Builder::new()
            .name("kai-checkpoint".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(500));
                // PASSIVE never blocks writers; what it cannot copy now, it copies next time.
                let _ = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })?;
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        use std::sync::atomic::Ordering;
        if let Ok(guard) = self.conn.try_lock() {
            return guard;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let guard = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        guard
    }

    /// Whether another thread waits for the ledger right now.
    pub fn contended(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Records a run that starts at once, in the foreground (`kai run`): it is never queued,
    /// so a crash cannot leave it waiting for a daemon to start it.
    pub fn insert_running(&self, run: &NewRun, owner: &str) -> Result<u32> {
        let now = now_text();
        self.conn().execute(
            "INSERT INTO runs (run_id, module, entity, trigger_json, chat_id, phase, attempt, owner, created_at, started_at, foreground)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7, ?7, 1)",
            params![run.run_id, run.module, run.entity, serde_json::to_string(&run.trigger)?, run.chat_id, owner, now],
        )?;
        Ok(1)
    }

    /// Moves a queued run to running under `owner`; returns its attempt number.
    /// `None` when the run is not (or no longer, or not yet) startable: another start took it,
    /// or it waits for a retry's back-off. The update is the only arbiter, so a run never
    /// starts twice.
    pub fn start(&self, run_id: &str, owner: &str) -> Result<Option<u32>> {
        let now = now_text();
        Ok(self
            .conn()
            .query_row(
                "UPDATE runs SET phase = 'running', attempt = attempt + 1, owner = ?2, started_at = ?3
                 WHERE run_id = ?1 AND phase = 'queued' AND (not_before IS NULL OR not_before <= ?3)
                 RETURNING attempt",
                params![run_id, owner, now],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records a running run's outcome and picks its journal file name: a `candidate(n)`,
    /// n = 1, 2, ..., that neither exists on disk nor is taken by another run (the lowest
    /// one when suffixes were taken in order, as kai takes them). From here on the run's files can be written again and again with the same result.
    pub fn finishing(
        &self,
        run_id: &str,
        finish: &Finish,
        candidate: impl Fn(u32) -> std::path::PathBuf,
    ) -> Result<String> {
        let mut conn = self.conn();
        // IMMEDIATE: this transaction reads before it writes, and SQLite does not wait (busy
        // timeout) for a read transaction to become a write one; it fails at once.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let path = finishing_in(&tx, run_id, finish, &candidate)?;
        tx.commit()?;
        Ok(path)
    }

    /// Closes an expired question that has no default: its run `run` (a new one, with no
    /// process) is recorded straight in `finishing` with `finish`, in the transaction that
    /// closes the question. `None` when the question was not open any more.
    pub fn close_expired(
        &self,
        question_run: &str,
        run: &NewRun,
        owner: &str,
        finish: &Finish,
        candidate: impl Fn(u32) -> std::path::PathBuf,
    ) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let closed = tx.execute(
            "UPDATE questions SET closed = 'expired', answered_at = ?2 WHERE run_id = ?1 AND closed IS NULL",
            params![question_run, now_text()],
        )?;
        if closed == 0 {
            return Ok(None);
        }
        let now = now_text();
        tx.execute(
            "INSERT INTO runs (run_id, module, entity, trigger_json, chat_id, phase, attempt, owner, created_at, started_at, foreground)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7, ?7, 1)",
            params![run.run_id, run.module, run.entity, serde_json::to_string(&run.trigger)?, run.chat_id, owner, now],
        )?;
        let path = finishing_in(&tx, &run.run_id, finish, &candidate)?;
        tx.commit()?;
        Ok(Some(path))
    }

    /// The run's files are written: it is over.
    /// Its `notes` (its [`Finish`]'s) go to the outbox, and the resume of a question answered
    /// while the files were written is queued, in the same transaction. A run finished before
    /// changes nothing: its notes went out then.
    pub fn finished(&self, run_id: &str, notes: &[OutMessage]) -> Result<()> {
        self.write(|tx| {
            let closed = tx.tx.execute(
                "UPDATE runs SET phase = 'finished', finished_at = ?2
                 WHERE run_id = ?1 AND phase != 'finished'",
                params![run_id, now_text()],
            )?;
            if closed == 0 {
                return Ok(());
            }
            for note in notes {
                tx.enqueue(note)?;
            }
            questions::queue_resume(&tx.tx, run_id)
        })
    }

    /// Runs `f` in one write transaction: all of it commits, or none.
    pub fn write<R>(&self, f: impl FnOnce(&Tx<'_>) -> Result<R>) -> Result<R> {
        let mut conn = self.conn();
        let tx = Tx {
            tx: conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
        };
        let result = f(&tx)?;
        tx.tx.commit()?;
        Ok(result)
    }

    /// Records the process group of a running run's current attempt.
    pub fn set_pgid(&self, run_id: &str, pgid: u32, leader_start: Option<u64>) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET pgid = ?2, pgid_start = ?3 WHERE run_id = ?1",
            params![run_id, pgid, leader_start.map(|s| s as i64)],
        )?;
        Ok(())
    }

    /// Puts a running run back in the queue, to start again no sooner than `not_before`.
    pub fn requeue(&self, run_id: &str, not_before: DateTime<Utc>) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET phase = 'queued', owner = NULL, not_before = ?2
             WHERE run_id = ?1 AND phase = 'running'",
            params![
                run_id,
                not_before.to_rfc3339_opts(SecondsFormat::Micros, true)
            ],
        )?;
        Ok(())
    }

    /// Queued runs that may start at `now`, oldest first.
    /// (Only ids, modules and entities: most waiting runs cannot start yet, and their triggers
    /// can be large.)
    pub fn startable(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Waiting>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT run_id, module, entity FROM runs WHERE phase = 'queued'
             AND (not_before IS NULL OR not_before <= ?1) ORDER BY created_at, rowid LIMIT ?2",
        )?;
        let now = now.to_rfc3339_opts(SecondsFormat::Micros, true);
        let rows = stmt
            .query_map(params![now, limit as i64], |r| {
                Ok(Waiting {
                    run_id: r.get(0)?,
                    module: r.get(1)?,
                    entity: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The earliest time a queued run waits for, if any waits.
    pub fn next_not_before(&self) -> Result<Option<DateTime<Utc>>> {
        let text: Option<String> = self.conn().query_row(
            "SELECT MIN(not_before) FROM runs WHERE phase = 'queued' AND not_before IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(parse_time(text))
    }

    /// Accepts a trigger into the inbox; `false` when its delivery id was seen before.
    pub fn accept(&self, d: &Delivery) -> Result<bool> {
        // The same connection as everything else, on purpose: a second one would wait for
        // SQLite's write lock in the busy handler's sleeps (1 ms, 2 ms, ... 100 ms), while
        // waiting on the mutex ends the moment the lock is free.
        let json = serde_json::to_string(&d.trigger)?;
        let changed = insert_delivery(&self.conn(), d, &json)?;
        Ok(changed == 1)
    }

    /// Deliveries accepted but not dispatched yet, oldest first, with their place in the inbox.
    pub fn undispatched(&self, limit: usize) -> Result<Vec<(i64, Delivery)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, source, delivery_id, trigger_json, module, entity, chat_id, run_id
             FROM deliveries WHERE dispatched = 0 ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(3)?,
                    Delivery {
                        source: r.get(1)?,
                        delivery_id: r.get(2)?,
                        trigger: unparsed_trigger(),
                        module: r.get(4)?,
                        entity: r.get(5)?,
                        chat_id: r.get(6)?,
                        run_id: r.get(7)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        // Payloads can be megabytes: parse them without holding the ledger.
        rows.into_iter()
            .map(|(seq, json, mut d)| {
                d.trigger = serde_json::from_str(&json)
                    .with_context(|| format!("delivery {seq}: its trigger is not valid"))?;
                Ok((seq, d))
            })
            .collect()
    }

    /// Dispatches a batch of deliveries in one transaction: the runs they become are queued,
    /// their decisions logged and they are marked done, all or nothing. A crash before the
    /// commit leaves them to dispatch again; after it, nothing of them is done twice. Facts
    /// read inside see the runs queued earlier in the same batch.
    pub fn dispatch<R>(&self, f: impl FnOnce(&Dispatch<'_>) -> Result<R>) -> Result<R> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let batch = Dispatch {
            tx,
            now: now_text(),
        };
        let result = f(&batch)?;
        batch.tx.commit()?;
        Ok(result)
    }

    /// Logs one decision on its own.
    pub fn decide(&self, d: &Decision) -> Result<()> {
        insert_decision(&self.conn(), d)
    }

    /// The why-not log, newest first.
    pub fn decisions(
        &self,
        module: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Decision>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, module, entity, trigger, delivery_id, reason, detail FROM decisions
             WHERE (?1 IS NULL OR module = ?1) AND (?2 IS NULL OR at >= ?2)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let since = since.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
        let rows = stmt
            .query_map(params![module, since, limit as i64], |r| {
                Ok(Decision {
                    at: parse_time(r.get(0)?).unwrap_or_default(),
                    module: r.get(1)?,
                    entity: r.get(2)?,
                    trigger: r.get(3)?,
                    delivery_id: r.get(4)?,
                    reason: r.get(5)?,
                    detail: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// What the guardrails need to know about `module` and `entity`.
    pub fn facts(
        &self,
        module: &str,
        entity: &str,
        budget_day: Option<DateTime<Utc>>,
    ) -> Result<Facts> {
        facts_on(&self.conn(), module, entity, budget_day)
    }

    /// Money a module spent since `day_start`.
    pub fn spent_since(&self, module: &str, day_start: DateTime<Utc>) -> Result<f64> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM runs WHERE module = ?1 AND finished_at >= ?2",
            params![
                module,
                day_start.to_rfc3339_opts(SecondsFormat::Micros, true)
            ],
            |r| r.get(0),
        )?)
    }

    /// Switches a module off (`Some(reason)`) or on; switching on lifts its budget for today.
    pub fn switch(&self, module: &str, off_reason: Option<&str>) -> Result<()> {
        let waived = off_reason.is_none().then(now_text);
        self.conn().execute(
            "INSERT INTO switches (module, off_reason, budget_waived) VALUES (?1, ?2, ?3)
             ON CONFLICT (module) DO UPDATE SET off_reason = ?2, budget_waived = COALESCE(?3, budget_waived)",
            params![module, off_reason, waived],
        )?;
        Ok(())
    }

    /// The status of the last finished run for this entity before `run_id`.
    pub fn previous_status(
        &self,
        module: &str,
        entity: &str,
        run_id: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT status FROM runs WHERE module = ?1 AND entity = ?2 AND run_id != ?3
                 AND phase = 'finished' AND status IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
                params![module, entity, run_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn last_fire(&self, module: &str, trigger: &str) -> Result<Option<DateTime<Utc>>> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT last_fire FROM schedules WHERE module = ?1 AND trigger = ?2",
                params![module, trigger],
                |r| r.get(0),
            )
            .optional()?;
        Ok(parse_time(text))
    }

    /// Records a schedule's new last fire time together with the fire's delivery (if it fires)
    /// and its decisions, in one transaction: a fire time is handled once, whatever crashes.
    pub fn schedule_handled(
        &self,
        module: &str,
        trigger: &str,
        last_fire: DateTime<Utc>,
        fire: Option<&Delivery>,
        decisions: &[Decision],
    ) -> Result<()> {
        let fire_json = fire
            .map(|d| serde_json::to_string(&d.trigger))
            .transpose()?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO schedules (module, trigger, last_fire) VALUES (?1, ?2, ?3)
             ON CONFLICT (module, trigger) DO UPDATE SET last_fire = ?3",
            params![
                module,
                trigger,
                last_fire.to_rfc3339_opts(SecondsFormat::Micros, true)
            ],
        )?;
        if let (Some(d), Some(json)) = (fire, &fire_json) {
            insert_delivery(&tx, d, json)?;
        }
        for d in decisions {
            insert_decision(&tx, d)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, run_id: &str) -> Result<Option<RunRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = ?1"))?;
        let raw = stmt.query_row([run_id], row).optional()?;
        drop(stmt);
        drop(conn);
        raw.map(RawRun::parse).transpose()
    }

    /// Whether a run was started in the foreground (`kai run`), where nobody waits for a retry.
    pub fn is_foreground(&self, run_id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT foreground FROM runs WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Runs that were running or finishing, owned by someone other than `except_owner`.
    pub fn in_flight(&self, except_owner: &str) -> Result<Vec<RunRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM runs WHERE phase IN ('running', 'finishing')
             AND (owner IS NULL OR owner != ?1) ORDER BY created_at"
        ))?;
        let rows = stmt
            .query_map([except_owner], row)?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        rows.into_iter().map(RawRun::parse).collect()
    }

    /// How many runs are in each phase, for status displays and tests.
    pub fn count_phase(&self, phase: Phase) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM runs WHERE phase = ?1",
            [phase.as_str()],
            |r| r.get(0),
        )?)
    }
}

/// What the guardrails need to know about `module` and `entity`, read on `conn`.
/// `budget_day`: the start of the day whose spending counts, for a module with a budget (the
/// sum is skipped for the others: it grows with the day's runs).
fn facts_on(
    conn: &Connection,
    module: &str,
    entity: &str,
    budget_day: Option<DateTime<Utc>>,
) -> Result<Facts> {
    let day = budget_day
        .map(|d| d.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default();
    let (off_reason, waived): (Option<String>, Option<String>) = conn
        .query_row(
            "SELECT off_reason, budget_waived FROM switches WHERE module = ?1",
            [module],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((None, None));
    let spent: f64 = match budget_day {
        Some(_) => conn.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM runs WHERE module = ?1 AND finished_at >= ?2",
            params![module, day],
            |r| r.get(0),
        )?,
        None => 0.0,
    };
    let last: Option<String> = conn.query_row(
        "SELECT MAX(created_at) FROM runs WHERE module = ?1 AND entity = ?2",
        params![module, entity],
        |r| r.get(0),
    )?;
    let in_phase = |phases: &str| -> Result<Option<String>> {
        Ok(conn
                .query_row(
                    &format!("SELECT run_id FROM runs WHERE module = ?1 AND entity = ?2 AND phase IN ({phases}) ORDER BY created_at LIMIT 1"),
                    params![module, entity],
                    |r| r.get(0),
                )
                .optional()?)
    };
    Ok(Facts {
        switched_off: off_reason,
        spent_today_usd: spent,
        budget_waived: waived.as_deref().is_some_and(|w| w >= day.as_str()),
        last_run_at: parse_time(last),
        queued: in_phase("'queued'")?,
        running: in_phase("'running', 'finishing'")?,
        active_runs: conn.query_row(
            // Capped: only "at the concurrency limit or not" matters (at most 64), and a long
            // backlog must not make every dispatch slower.
            "SELECT COUNT(*) FROM (SELECT 1 FROM runs WHERE module = ?1
             AND phase IN ('queued', 'running', 'finishing') LIMIT 64)",
            [module],
            |r| r.get(0),
        )?,
    })
}

/// One dispatch transaction; see [`Ledger::dispatch`].
pub struct Dispatch<'a> {
    tx: rusqlite::Transaction<'a>,
    now: String,
}

impl Dispatch<'_> {
    pub fn facts(
        &self,
        module: &str,
        entity: &str,
        budget_day: Option<DateTime<Utc>>,
    ) -> Result<Facts> {
        facts_on(&self.tx, module, entity, budget_day)
    }

    /// Queues `run`, whose trigger is delivery `seq`'s: it is not copied (payloads can be
    /// large), the run refers to it.
    pub fn queue(&self, run: &NewRun, seq: i64) -> Result<()> {
        self.tx.execute(
            "INSERT INTO runs (run_id, module, entity, delivery_seq, chat_id, phase, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
            params![
                run.run_id,
                run.module,
                run.entity,
                seq,
                run.chat_id,
                self.now
            ],
        )?;
        Ok(())
    }

    pub fn decide(&self, d: &Decision) -> Result<()> {
        insert_decision(&self.tx, d)
    }

    pub fn enqueue(&self, m: &OutMessage) -> Result<()> {
        outbox::enqueue(&self.tx, m)
    }

    pub fn done(&self, seq: i64) -> Result<()> {
        self.tx
            .execute("UPDATE deliveries SET dispatched = 1 WHERE seq = ?1", [seq])?;
        Ok(())
    }
}

/// One write transaction; see [`Ledger::write`].
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl Tx<'_> {
    /// Accepts a trigger into the inbox; `false` when its delivery id was seen before.
    pub fn accept(&self, d: &Delivery) -> Result<bool> {
        Ok(insert_delivery(&self.tx, d, &serde_json::to_string(&d.trigger)?)? == 1)
    }
}

/// The body of [`Ledger::finishing`], inside a transaction.
fn finishing_in(
    tx: &Connection,
    run_id: &str,
    finish: &Finish,
    candidate: &dyn Fn(u32) -> std::path::PathBuf,
) -> Result<String> {
    let free = |n: u32| -> Result<Option<String>> {
        let path = candidate(n);
        let text = path.to_string_lossy().into_owned();
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE journal_path = ?1)",
            [&text],
            |r| r.get(0),
        )?;
        Ok((!taken && !path.exists()).then_some(text))
    };
    // Suffixes are taken from 1 up, so doubling then bisecting finds a free one in
    // O(log k) probes for the k-th run of an entity in one second, not k.
    let (mut taken, mut probe) = (0u32, 1u32);
    let (mut n, mut path) = loop {
        match free(probe)? {
            Some(p) => break (probe, p),
            None => {
                taken = probe;
                probe = probe.saturating_mul(2);
            }
        }
    };
    while n - taken > 1 {
        let mid = taken + (n - taken) / 2;
        match free(mid)? {
            Some(p) => (n, path) = (mid, p),
            None => taken = mid,
        }
    }
    let changed = tx.execute(
        "UPDATE runs SET phase = 'finishing', status = ?2, outcome_json = ?3, journal_path = ?4,
             cost_usd = ?5 WHERE run_id = ?1 AND phase = 'running'",
        params![
            run_id,
            finish.entry.status.as_str(),
            serde_json::to_string(finish)?,
            path,
            finish.entry.cost_usd()
        ],
    )?;
    anyhow::ensure!(changed == 1, "run {run_id} is not running");
    questions::insert_question(tx, run_id, finish)?;
    Ok(path)
}

fn insert_decision(conn: &Connection, d: &Decision) -> Result<()> {
    conn.execute(
        "INSERT INTO decisions (at, module, entity, trigger, delivery_id, reason, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            d.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            d.module,
            d.entity,
            d.trigger,
            d.delivery_id,
            d.reason,
            d.detail
        ],
    )?;
    Ok(())
}

/// A trigger for the inbox: on its way in, or read back to be dispatched.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: String,
    pub delivery_id: String,
    pub trigger: Trigger,
    pub module: Option<String>,
    pub entity: Option<String>,
    pub chat_id: Option<i64>,
    /// The id the run gets, when the caller must know it in advance (an API invoke).
    pub run_id: Option<String>,
}

/// Inserts into the inbox; 0 rows when the delivery id was seen before.
fn insert_delivery(conn: &Connection, d: &Delivery, trigger_json: &str) -> Result<usize> {
    Ok(conn.execute(
        "INSERT INTO deliveries (source, delivery_id, trigger_json, module, entity, chat_id, run_id, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (source, delivery_id) DO NOTHING",
        params![
            d.source,
            d.delivery_id,
            trigger_json,
            d.module,
            d.entity,
            d.chat_id,
            d.run_id,
            now_text()
        ],
    )?)
}

const COLUMNS: &str =
    "run_id, module, entity,
     COALESCE(trigger_json, (SELECT d.trigger_json FROM deliveries d WHERE d.seq = runs.delivery_seq)),
     chat_id, phase, attempt, owner, started_at, outcome_json, journal_path, pgid, pgid_start";

/// Stands in for a trigger read as text and not parsed yet.
fn unparsed_trigger() -> Trigger {
    Trigger {
        kind: kai_sdk::TriggerType::Invoke,
        source: None,
        event: None,
        action: None,
        delivery_id: None,
        payload: Value::Null,
    }
}

/// A run's row as read, its JSON still text: parsing happens after the lock is released.
struct RawRun {
    row: RunRow,
    trigger: String,
    outcome: Option<String>,
}

impl RawRun {
    fn parse(mut self) -> Result<RunRow> {
        self.row.trigger = serde_json::from_str(&self.trigger).with_context(|| {
            format!(
                "run {}: its trigger in the ledger is not valid",
                self.row.run_id
            )
        })?;
        self.row.outcome = self
            .outcome
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .with_context(|| {
                format!(
                    "run {}: its outcome in the ledger is not valid",
                    self.row.run_id
                )
            })?;
        Ok(self.row)
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRun> {
    Ok(RawRun {
        trigger: r.get(3)?,
        outcome: r.get(9)?,
        row: RunRow {
            run_id: r.get(0)?,
            module: r.get(1)?,
            entity: r.get(2)?,
            trigger: unparsed_trigger(),
            chat_id: r.get(4)?,
            phase: Phase::parse(&r.get::<_, String>(5)?),
            attempt: r.get(6)?,
            owner: r.get(7)?,
            started_at: parse_time(r.get(8)?),
            outcome: None,
            journal_path: r.get(10)?,
            pgid: r.get(11)?,
            pgid_start: r.get::<_, Option<i64>>(12)?.map(|s| s as u64),
        },
    })
}

/// A module's recent activity, as the management API shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// Runs finished since the given time, and how many of them failed.
    pub finished: u64,
    pub failures: u64,
    pub queued: u64,
    /// Running or finishing.
    pub running: u64,
    pub last: Option<LastRun>,
}

/// The last finished run of a module.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRun {
    pub run_id: String,
    pub status: String,
    pub entity: String,
    pub finished_at: DateTime<Utc>,
}

/// When a run was created, started and finished, and its status once known.
#[derive(Debug, Clone, PartialEq)]
pub struct RunTimes {
    pub created_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: Option<String>,
}

// Read-only queries for the management API (`crate::api`). Each one goes through an index, so
// that a module list stays cheap however long the ledger grows.
impl Ledger {
    /// What `module` did since `since`, what it has waiting and going, and its last run.
    pub fn activity(&self, module: &str, since: DateTime<Utc>) -> Result<Activity> {
        let conn = self.conn();
        let since = since.to_rfc3339_opts(SecondsFormat::Micros, true);
        let (finished, failures): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(status IN ('error', 'timeout', 'interrupted')), 0)
             FROM runs WHERE module = ?1 AND finished_at >= ?2",
            params![module, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (queued, running): (i64, i64) = conn.query_row(
            "SELECT COALESCE(SUM(phase = 'queued'), 0), COALESCE(SUM(phase != 'queued'), 0)
             FROM runs WHERE module = ?1 AND phase IN ('queued', 'running', 'finishing')",
            [module],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last = conn
            .query_row(
                "SELECT run_id, status, entity, finished_at FROM runs
                 WHERE module = ?1 AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
                [module],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?
            .and_then(|(run_id, status, entity, at)| {
                Some(LastRun {
                    run_id,
                    status: status?,
                    entity,
                    finished_at: parse_time(at)?,
                })
            });
        Ok(Activity {
            finished: finished.max(0) as u64,
            failures: failures.max(0) as u64,
            queued: queued.max(0) as u64,
            running: running.max(0) as u64,
            last,
        })
    }

    /// Why `module` is switched off, if it is.
    pub fn switched_off(&self, module: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT off_reason FROM switches WHERE module = ?1",
                [module],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    pub fn run_times(&self, run_id: &str) -> Result<Option<RunTimes>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT created_at, started_at, finished_at, status FROM runs WHERE run_id = ?1",
                [run_id],
                |r| {
                    Ok(RunTimes {
                        created_at: parse_time(r.get(0)?),
                        started_at: parse_time(r.get(1)?),
                        finished_at: parse_time(r.get(2)?),
                        status: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Whether a delivery in the inbox was dispatched; `None` when there is no such delivery.
    pub fn delivery_dispatched(&self, source: &str, delivery_id: &str) -> Result<Option<bool>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT dispatched FROM deliveries WHERE source = ?1 AND delivery_id = ?2",
                params![source, delivery_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The newest decision logged for a delivery id.
    /// (No index on `delivery_id`: this is asked once per declined invoke, not in a loop.)
    pub fn decision_for_delivery(&self, delivery_id: &str) -> Result<Option<Decision>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT at, module, entity, trigger, delivery_id, reason, detail FROM decisions
                 WHERE delivery_id = ?1 ORDER BY id DESC LIMIT 1",
                [delivery_id],
                |r| {
                    Ok(Decision {
                        at: parse_time(r.get(0)?).unwrap_or_default(),
                        module: r.get(1)?,
                        entity: r.get(2)?,
                        trigger: r.get(3)?,
                        delivery_id: r.get(4)?,
                        reason: r.get(5)?,
                        detail: r.get(6)?,
                    })
                },
            )
            .optional()?)
    }
}
