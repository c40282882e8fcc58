//! Questions in the ledger: an index of the checkpoint files (`pending/<run_id>.json` stays the
//! truth a person reads) that makes answering atomic. A question is recorded in the same
//! transaction as its run's outcome (`finishing`), before any file is written or any message
//! sent, so an answer can never arrive for a question kai does not know yet. The first answer
//! closes it in one transaction; the resume run is queued in that transaction too, or, when
//! the paused run's files are still being written, in the one that ends the run.

use anyhow::{Context as _, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use kai_core::question::{answered_text, Timeline};
use kai_sdk::{Question, Trigger, TriggerType};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

use super::outbox::enqueue;
use super::{insert_delivery, parse_time, Delivery, Finish, Ledger, OutMessage, Tx};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS questions (
    run_id         TEXT PRIMARY KEY,
    module         TEXT NOT NULL,
    entity         TEXT NOT NULL,
    chat_id        INTEGER,
    question       TEXT NOT NULL,  -- JSON: text, options, expires, default
    asked_at       TEXT NOT NULL,
    remind_at      TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    reminded       INTEGER NOT NULL DEFAULT 0,
    message_chat   INTEGER,        -- where the question message landed, once sent
    message_thread INTEGER,
    message_id     INTEGER,
    closed         TEXT,           -- NULL while open; answered | expired | withdrawn
    answer         TEXT,
    answered_by    TEXT,
    answered_at    TEXT,
    answered_via   TEXT
);
CREATE INDEX IF NOT EXISTS questions_open ON questions (module) WHERE closed IS NULL;
";

/// A question as the ledger knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub run_id: String,
    pub module: String,
    pub entity: String,
    pub chat_id: Option<i64>,
    pub question: Question,
    pub timeline: Timeline,
    pub reminded: bool,
    /// The question message: chat, topic, message id; once sent.
    pub message: Option<(i64, Option<i64>, i64)>,
    /// `answered`, `expired` or `withdrawn`; `None` while open.
    pub closed: Option<String>,
    pub answer: Option<Answer>,
}

impl Asked {
    /// The question's message once answered: its text with the answer, and no buttons.
    /// `None` while it is not answered or its message is not sent yet.
    pub fn answered_edit(&self) -> Option<OutMessage> {
        let (chat, _, message_id) = self.message?;
        let a = self
            .answer
            .as_ref()
            .filter(|_| self.closed.as_deref() == Some("answered"))?;
        Some(OutMessage {
            edit_of: Some(message_id),
            ..OutMessage::to_chat(
                Some(chat),
                None,
                answered_text(&self.entity, &self.question, &a.text, &a.by),
            )
        })
    }
}

/// Who answered what, when, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub by: String,
    pub at: DateTime<Utc>,
    /// button, reply, text, command, api, cli, expiry.
    pub via: String,
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    /// The first answer: the question is closed and the run resumes.
    Accepted(Asked),
    /// Closed before: by an answer (who, when) or by its expiry.
    Already(Asked),
    /// No question of that run.
    Unknown,
}

const COLUMNS: &str = "run_id, module, entity, chat_id, question, asked_at, remind_at, expires_at,
    reminded, message_chat, message_thread, message_id, closed, answer, answered_by, answered_at,
    answered_via";

fn asked(r: &rusqlite::Row<'_>) -> rusqlite::Result<Asked> {
    let time = |i: usize| -> rusqlite::Result<DateTime<Utc>> {
        Ok(parse_time(r.get(i)?).unwrap_or_else(Utc::now))
    };
    let question: String = r.get(4)?;
    let message_id: Option<i64> = r.get(11)?;
    let answer: Option<String> = r.get(13)?;
    Ok(Asked {
        run_id: r.get(0)?,
        module: r.get(1)?,
        entity: r.get(2)?,
        chat_id: r.get(3)?,
        question: serde_json::from_str(&question).unwrap_or_else(|_| Question {
            text: question.clone(),
            options: Vec::new(),
            expires: None,
            default: None,
        }),
        timeline: Timeline {
            asked_at: time(5)?,
            remind_at: time(6)?,
            expires_at: time(7)?,
        },
        reminded: r.get::<_, i64>(8)? != 0,
        message: match (r.get::<_, Option<i64>>(9)?, message_id) {
            (Some(chat), Some(id)) => Some((chat, r.get(10)?, id)),
            _ => None,
        },
        closed: r.get(12)?,
        answer: match answer {
            Some(text) => Some(Answer {
                text,
                by: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
                at: time(15)?,
                via: r.get::<_, Option<String>>(16)?.unwrap_or_default(),
            }),
            None => None,
        },
    })
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Records a paused run's question, from the checkpoint its outcome carries.
pub(super) fn insert_question(conn: &Connection, run_id: &str, finish: &Finish) -> Result<()> {
    let Some(cp) = &finish.checkpoint else {
        return Ok(());
    };
    let at = |key: &str| -> Result<String> {
        let t = cp
            .get(key)
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .with_context(|| format!("run {run_id}: its checkpoint has no valid {key}"))?;
        Ok(text(t.with_timezone(&Utc)))
    };
    let e = &finish.entry;
    conn.execute(
        "INSERT INTO questions (run_id, module, entity, chat_id, question, asked_at, remind_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (run_id) DO NOTHING",
        params![
            run_id,
            e.module,
            e.entity,
            e.chat_id,
            cp.get("question").map(Value::to_string).unwrap_or_default(),
            at("asked_at")?,
            at("remind_at")?,
            at("expires_at")?
        ],
    )?;
    Ok(())
}

fn get(conn: &Connection, run_id: &str) -> Result<Option<Asked>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM questions WHERE run_id = ?1"),
            [run_id],
            asked,
        )
        .optional()?)
}

/// Queues the run that resumes an answered question: a delivery whose id names the paused
/// run, so it is queued once whatever happens around it.
pub(super) fn queue_resume(conn: &Connection, run_id: &str) -> Result<()> {
    let Some(q) = get(conn, run_id)? else {
        return Ok(());
    };
    let (Some("answered"), Some(answer)) = (q.closed.as_deref(), &q.answer) else {
        return Ok(());
    };
    let outcome: Option<String> = conn
        .query_row(
            "SELECT outcome_json FROM runs WHERE run_id = ?1",
            [run_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let finish: Finish = serde_json::from_str(
        &outcome.with_context(|| format!("run {run_id} has no recorded outcome"))?,
    )?;
    let cp = finish.checkpoint.unwrap_or(Value::Null);
    let payload = json!({
        "run_id": run_id,
        "question": q.question,
        "answer": answer.text,
        "answered_by": answer.by,
        "answered_at": text(answer.at),
        "answered_via": answer.via,
        "checkpoint": cp.get("checkpoint").cloned().unwrap_or(Value::Null),
        "original_trigger": cp.get("original_trigger").cloned().unwrap_or(Value::Null),
    });
    let delivery_id = format!("resume-{run_id}");
    let trigger = Trigger {
        kind: TriggerType::Resume,
        source: Some("kai".into()),
        event: Some("resume".into()),
        action: None,
        delivery_id: Some(delivery_id.clone()),
        payload,
    };
    let d = Delivery {
        source: "kai".into(),
        delivery_id,
        module: Some(q.module),
        entity: Some(q.entity),
        chat_id: q.chat_id,
        run_id: None,
        trigger,
    };
    insert_delivery(conn, &d, &serde_json::to_string(&d.trigger)?)?;
    Ok(())
}

impl Tx<'_> {
    /// The first answer wins: closes the question, has its message show the answer, and
    /// queues its resume (at once when the paused run is over, else when it is). Later
    /// answers learn who was first.
    pub fn answer(&self, run_id: &str, answer: &Answer) -> Result<Answered> {
        let Some(q) = get(&self.tx, run_id)? else {
            return Ok(Answered::Unknown);
        };
        if q.closed.is_some() {
            return Ok(Answered::Already(q));
        }
        self.tx.execute(
            "UPDATE questions SET closed = 'answered', answer = ?2, answered_by = ?3,
                answered_at = ?4, answered_via = ?5
             WHERE run_id = ?1 AND closed IS NULL",
            params![run_id, answer.text, answer.by, text(answer.at), answer.via],
        )?;
        let phase: Option<String> = self
            .tx
            .query_row("SELECT phase FROM runs WHERE run_id = ?1", [run_id], |r| {
                r.get(0)
            })
            .optional()?;
        if phase.as_deref() == Some("finished") {
            queue_resume(&self.tx, run_id)?;
        }
        let q = get(&self.tx, run_id)?.context("the question was just answered")?;
        if let Some(edit) = q.answered_edit() {
            enqueue(&self.tx, &edit)?;
        }
        Ok(Answered::Accepted(q))
    }

    /// Closes an open question without an answer (`expired`, `withdrawn`); false when it was
    /// not open any more.
    pub fn close_question(&self, run_id: &str, how: &str) -> Result<bool> {
        Ok(self.tx.execute(
            "UPDATE questions SET closed = ?2, answered_at = ?3 WHERE run_id = ?1 AND closed IS NULL",
            params![run_id, how, text(Utc::now())],
        )? == 1)
    }

    /// Marks an open question reminded; false when that was done already.
    pub fn reminded(&self, run_id: &str) -> Result<bool> {
        Ok(self.tx.execute(
            "UPDATE questions SET reminded = 1 WHERE run_id = ?1 AND reminded = 0 AND closed IS NULL",
            [run_id],
        )? == 1)
    }

    pub fn question(&self, run_id: &str) -> Result<Option<Asked>> {
        get(&self.tx, run_id)
    }
}

impl Ledger {
    pub fn question(&self, run_id: &str) -> Result<Option<Asked>> {
        get(&self.conn(), run_id)
    }

    /// Open questions, oldest first; of one module, or all.
    pub fn open_questions(&self, module: Option<&str>) -> Result<Vec<Asked>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM questions WHERE closed IS NULL AND (?1 IS NULL OR module = ?1)
             ORDER BY asked_at, run_id"
        ))?;
        let rows = stmt
            .query_map([module], asked)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The question whose message this is.
    pub fn question_by_message(&self, chat_id: i64, message_id: i64) -> Result<Option<Asked>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM questions WHERE message_chat = ?1 AND message_id = ?2"
                ),
                params![chat_id, message_id],
                asked,
            )
            .optional()?)
    }

    /// Closed questions, for tidying their checkpoint files away.
    pub fn closed_questions(&self, run_ids: &[String]) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut closed = Vec::new();
        for id in run_ids {
            let c: Option<Option<String>> = conn
                .query_row(
                    "SELECT closed FROM questions WHERE run_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            if matches!(c, Some(Some(_))) {
                closed.push(id.clone());
            }
        }
        Ok(closed)
    }
}
