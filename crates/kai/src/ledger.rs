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
use kai_core::JournalEntry;
use kai_sdk::Trigger;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    module       TEXT NOT NULL,
    entity       TEXT NOT NULL,
    trigger_json TEXT NOT NULL,
    chat_id      INTEGER,
    phase        TEXT NOT NULL CHECK (phase IN ('queued', 'running', 'finishing', 'finished')),
    status       TEXT,
    attempt      INTEGER NOT NULL DEFAULT 0,
    owner        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    outcome_json TEXT,
    journal_path TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS runs_by_phase ON runs (phase);
CREATE INDEX IF NOT EXISTS runs_by_module ON runs (module, created_at);
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
}

/// Everything a finishing run still has to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub entry: JournalEntry,
    /// The new module state, when the run returned one.
    pub state: Option<Value>,
    /// The checkpoint file's content, when the run paused.
    pub checkpoint: Option<Value>,
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
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)
            .context("cannot create the run ledger's tables")?;
        Ok(Ledger {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a run that starts at once, in the foreground (`kai run`): it is never queued,
    /// so a crash cannot leave it waiting for a daemon to start it.
    pub fn insert_running(&self, run: &NewRun, owner: &str) -> Result<u32> {
        let now = now_text();
        self.conn().execute(
            "INSERT INTO runs (run_id, module, entity, trigger_json, chat_id, phase, attempt, owner, created_at, started_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', 1, ?6, ?7, ?7)",
            params![run.run_id, run.module, run.entity, serde_json::to_string(&run.trigger)?, run.chat_id, owner, now],
        )?;
        Ok(1)
    }

    /// Records a run waiting to start.
    pub fn insert_queued(&self, run: &NewRun) -> Result<()> {
        self.conn().execute(
            "INSERT INTO runs (run_id, module, entity, trigger_json, chat_id, phase, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
            params![
                run.run_id,
                run.module,
                run.entity,
                serde_json::to_string(&run.trigger)?,
                run.chat_id,
                now_text()
            ],
        )?;
        Ok(())
    }

    /// Moves a queued run to running under `owner`; returns its attempt number.
    pub fn start(&self, run_id: &str, owner: &str) -> Result<u32> {
        let conn = self.conn();
        let attempt: u32 = conn
            .query_row(
                "UPDATE runs SET phase = 'running', attempt = attempt + 1, owner = ?2, started_at = ?3
                 WHERE run_id = ?1 AND phase = 'queued' RETURNING attempt",
                params![run_id, owner, now_text()],
                |r| r.get(0),
            )
            .optional()?
            .with_context(|| format!("run {run_id} is not queued"))?;
        Ok(attempt)
    }

    /// Records a running run's outcome and picks its journal file name: the first of
    /// `candidates(n)` for n = 1, 2, ... that neither exists on disk nor is taken by another
    /// run. From here on the run's files can be written again and again with the same result.
    pub fn finishing(
        &self,
        run_id: &str,
        finish: &Finish,
        candidate: impl Fn(u32) -> std::path::PathBuf,
    ) -> Result<String> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 1;
        let path = loop {
            let path = candidate(n);
            let text = path.to_string_lossy().into_owned();
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE journal_path = ?1)",
                [&text],
                |r| r.get(0),
            )?;
            if !taken && !path.exists() {
                break text;
            }
            n += 1;
        };
        let changed = tx.execute(
            "UPDATE runs SET phase = 'finishing', status = ?2, outcome_json = ?3, journal_path = ?4
             WHERE run_id = ?1 AND phase = 'running'",
            params![
                run_id,
                finish.entry.status.as_str(),
                serde_json::to_string(finish)?,
                path
            ],
        )?;
        anyhow::ensure!(changed == 1, "run {run_id} is not running");
        tx.commit()?;
        Ok(path)
    }

    /// The run's files are written: it is over.
    pub fn finished(&self, run_id: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE runs SET phase = 'finished', finished_at = ?2 WHERE run_id = ?1",
            params![run_id, now_text()],
        )?;
        Ok(())
    }

    pub fn get(&self, run_id: &str) -> Result<Option<RunRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = ?1"))?;
        Ok(stmt.query_row([run_id], row).optional()?)
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
        Ok(rows)
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

const COLUMNS: &str =
    "run_id, module, entity, trigger_json, chat_id, phase, attempt, owner, started_at, outcome_json, journal_path";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let json_err = |i, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let trigger: String = r.get(3)?;
    let outcome: Option<String> = r.get(9)?;
    Ok(RunRow {
        run_id: r.get(0)?,
        module: r.get(1)?,
        entity: r.get(2)?,
        trigger: serde_json::from_str(&trigger).map_err(|e| json_err(3, e))?,
        chat_id: r.get(4)?,
        phase: Phase::parse(&r.get::<_, String>(5)?),
        attempt: r.get(6)?,
        owner: r.get(7)?,
        started_at: parse_time(r.get(8)?),
        outcome: outcome
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|e| json_err(9, e))?,
        journal_path: r.get(10)?,
    })
}
