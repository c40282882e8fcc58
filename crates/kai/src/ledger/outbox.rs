//! The chat side of the ledger: the durable outbox (every message kai sends is a row before it
//! is sent and is marked after), the topic of each module, the Telegram updates taken in (with
//! the polling offset, in one transaction), and each chat's context.

use anyhow::Result;
use chrono::{DateTime, Utc};
use kai_core::text::{split_message, MESSAGE_PART_LIMIT};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{now_text, parse_time, Ledger, Tx};

pub(super) const SCHEMA: &str = "
-- The durable outbox: a message is a row here before it is sent, and marked sent after.
CREATE TABLE IF NOT EXISTS outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    module      TEXT,            -- its topic; NULL: the chat itself
    chat_id     INTEGER,         -- NULL: the notify chat
    thread_id   INTEGER,         -- a topic named explicitly (a reply in a topic)
    text        TEXT NOT NULL,
    parse_mode  TEXT,
    markup      TEXT,            -- reply_markup, JSON
    reply_to    INTEGER,
    edit_of     INTEGER,         -- set: an edit of that message, not a new one
    question    TEXT,            -- set: the question of this run (its message id is kept)
    created_at  TEXT NOT NULL,
    not_before  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    sent_at     TEXT,
    message_id  INTEGER,
    failed      TEXT             -- set: given up, saying why
);
CREATE INDEX IF NOT EXISTS outbox_waiting ON outbox (id) WHERE sent_at IS NULL AND failed IS NULL;

-- Each module's topic in each forum chat.
CREATE TABLE IF NOT EXISTS topics (
    chat_id   INTEGER NOT NULL,
    module    TEXT NOT NULL,
    thread_id INTEGER NOT NULL,
    PRIMARY KEY (chat_id, module)
);

-- Telegram updates taken in, with the offset that confirms them, in one transaction.
CREATE TABLE IF NOT EXISTS updates (
    update_id INTEGER PRIMARY KEY,
    body      TEXT NOT NULL,
    handled   INTEGER NOT NULL DEFAULT 0,
    at        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS telegram (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The module context each chat is switched to (`/module NAME`).
CREATE TABLE IF NOT EXISTS contexts (
    chat_id INTEGER PRIMARY KEY,
    module  TEXT NOT NULL,
    since   TEXT NOT NULL
);
";

/// A message to send: to a module's topic (or with its `[module]` prefix), or to a chat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutMessage {
    /// The module it comes from: it goes to the module's topic. `None`: the chat itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The chat; `None`: the notify chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// A topic named explicitly (a reply to a message in that topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<i64>,
    pub text: String,
    /// `HTML`, `Markdown` or `MarkdownV2`; a text Telegram cannot parse is resent plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<String>,
    /// Inline buttons, one per row: (label, callback data). They go on the last part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<i64>,
    /// Set: replaces the text of this message (and drops its buttons) instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_of: Option<i64>,
    /// Set: this is the question of that run; its message id is recorded when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

impl OutMessage {
    pub fn to_module(module: &str, text: impl Into<String>) -> OutMessage {
        OutMessage {
            module: Some(module.to_owned()),
            text: text.into(),
            ..OutMessage::default()
        }
    }

    pub fn to_chat(chat_id: Option<i64>, thread_id: Option<i64>, text: impl Into<String>) -> Self {
        OutMessage {
            chat_id,
            thread_id,
            text: text.into(),
            ..OutMessage::default()
        }
    }
}

/// A row of the outbox waiting to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub id: i64,
    pub module: Option<String>,
    pub chat_id: Option<i64>,
    pub thread_id: Option<i64>,
    pub text: String,
    pub parse_mode: Option<String>,
    pub markup: Option<Value>,
    pub reply_to: Option<i64>,
    pub edit_of: Option<i64>,
    pub question: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub attempts: u32,
}

/// Puts a message in the outbox: cut into parts below Telegram's limit, in order, the
/// buttons on the last part. An edit is one part (cut short if it has to be).
pub(super) fn enqueue(conn: &Connection, m: &OutMessage) -> Result<()> {
    let mut parts = split_message(&m.text, MESSAGE_PART_LIMIT);
    if parts.is_empty() {
        return Ok(()); // nothing to say
    }
    if m.edit_of.is_some() && parts.len() > 1 {
        parts.truncate(1);
        parts[0].push_str(" …");
    }
    let markup = (!m.buttons.is_empty()).then(|| {
        let rows: Vec<Value> = m
            .buttons
            .iter()
            .map(|(text, data)| serde_json::json!([{ "text": text, "callback_data": data }]))
            .collect();
        serde_json::json!({ "inline_keyboard": rows }).to_string()
    });
    let last = parts.len() - 1;
    let now = now_text();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO outbox (module, chat_id, thread_id, text, parse_mode, markup, reply_to, edit_of, question, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for (i, part) in parts.into_iter().enumerate() {
        let is_last = i == last;
        stmt.execute(params![
            m.module,
            m.chat_id,
            m.thread_id,
            part,
            m.parse_mode,
            markup.as_ref().filter(|_| is_last),
            m.reply_to.filter(|_| i == 0),
            m.edit_of,
            m.question.as_ref().filter(|_| is_last),
            now
        ])?;
    }
    Ok(())
}

impl Tx<'_> {
    pub fn enqueue(&self, m: &OutMessage) -> Result<()> {
        enqueue(&self.tx, m)
    }

    /// Marks a Telegram update handled: its effects commit with this transaction.
    pub fn handled(&self, update_id: i64) -> Result<()> {
        self.tx.execute(
            "UPDATE updates SET handled = 1 WHERE update_id = ?1",
            [update_id],
        )?;
        Ok(())
    }

    /// Switches a chat into a module's context, or back to the main one (`None`).
    pub fn set_context(&self, chat_id: i64, module: Option<&str>) -> Result<()> {
        match module {
            Some(m) => self.tx.execute(
                "INSERT INTO contexts (chat_id, module, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT (chat_id) DO UPDATE SET module = ?2, since = ?3",
                params![chat_id, m, now_text()],
            )?,
            None => self
                .tx
                .execute("DELETE FROM contexts WHERE chat_id = ?1", [chat_id])?,
        };
        Ok(())
    }
}

impl Ledger {
    /// Puts messages in the outbox, all or none.
    pub fn enqueue(&self, messages: &[OutMessage]) -> Result<()> {
        self.write(|tx| {
            for m in messages {
                tx.enqueue(m)?;
            }
            Ok(())
        })
    }

    /// Messages waiting to be sent, oldest first.
    pub fn outbox_waiting(&self, limit: usize) -> Result<Vec<Outgoing>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, module, chat_id, thread_id, text, parse_mode, markup, reply_to, edit_of,
                    question, not_before, attempts
             FROM outbox WHERE sent_at IS NULL AND failed IS NULL ORDER BY id LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(Outgoing {
                    id: r.get(0)?,
                    module: r.get(1)?,
                    chat_id: r.get(2)?,
                    thread_id: r.get(3)?,
                    text: r.get(4)?,
                    parse_mode: r.get(5)?,
                    markup: r
                        .get::<_, Option<String>>(6)?
                        .and_then(|m| serde_json::from_str(&m).ok()),
                    reply_to: r.get(7)?,
                    edit_of: r.get(8)?,
                    question: r.get(9)?,
                    not_before: parse_time(r.get(10)?),
                    attempts: r.get(11)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// How many messages wait in the outbox.
    pub fn outbox_len(&self) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// A message was sent: marked at once, with where it landed. A question's message id is
    /// recorded with its question, so that replies to it can be recognised.
    pub fn outbox_sent(
        &self,
        id: i64,
        chat_id: i64,
        thread_id: Option<i64>,
        message_id: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.tx.execute(
                "UPDATE outbox SET sent_at = ?2, message_id = ?3 WHERE id = ?1",
                params![id, now_text(), message_id],
            )?;
            let question: Option<String> = tx
                .tx
                .query_row("SELECT question FROM outbox WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten();
            let Some(run_id) = question else {
                return Ok(());
            };
            tx.tx.execute(
                "UPDATE questions SET message_chat = ?2, message_thread = ?3, message_id = ?4
                 WHERE run_id = ?1",
                params![run_id, chat_id, thread_id, message_id],
            )?;
            // Answered before its message went out (over the API, say): the message shows the
            // answer at once, and its buttons go.
            if let Some(edit) = tx.question(&run_id)?.and_then(|q| q.answered_edit()) {
                tx.enqueue(&edit)?;
            }
            Ok(())
        })
    }

    /// A send failed and is tried again at `not_before`; `plain` drops its formatting,
    /// `unreplied` its reply.
    pub fn outbox_retry(
        &self,
        id: i64,
        not_before: DateTime<Utc>,
        error: &str,
        change: Retry,
    ) -> Result<()> {
        let at = not_before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        self.conn().execute(
            "UPDATE outbox SET not_before = ?2, last_error = ?3, attempts = attempts + ?4,
                parse_mode = CASE WHEN ?5 THEN NULL ELSE parse_mode END,
                reply_to = CASE WHEN ?6 THEN NULL ELSE reply_to END,
                thread_id = CASE WHEN ?7 THEN NULL ELSE thread_id END
             WHERE id = ?1",
            params![
                id,
                at,
                error,
                !matches!(change, Retry::RateLimited) as i64,
                matches!(change, Retry::Plain),
                matches!(change, Retry::Unreplied),
                matches!(change, Retry::General)
            ],
        )?;
        Ok(())
    }

    /// Gives a message up, saying why (a chat that does not exist, a bot removed from it).
    pub fn outbox_fail(&self, id: i64, why: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE outbox SET failed = ?2 WHERE id = ?1",
            params![id, why],
        )?;
        Ok(())
    }

    /// Forgets sent messages and handled updates older than `before`.
    pub fn prune_chat(&self, before: DateTime<Utc>) -> Result<()> {
        let at = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let conn = self.conn();
        conn.execute(
            "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?1",
            [&at],
        )?;
        conn.execute(
            "DELETE FROM updates WHERE handled = 1 AND at < ?1 AND update_id <
             (SELECT MAX(update_id) FROM updates)",
            [&at],
        )?;
        Ok(())
    }

    pub fn topic(&self, chat_id: i64, module: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT thread_id FROM topics WHERE chat_id = ?1 AND module = ?2",
                params![chat_id, module],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The module whose topic a thread is.
    pub fn topic_module(&self, chat_id: i64, thread_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT module FROM topics WHERE chat_id = ?1 AND thread_id = ?2",
                params![chat_id, thread_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_topic(&self, chat_id: i64, module: &str, thread_id: i64) -> Result<()> {
        self.conn().execute(
            "INSERT INTO topics (chat_id, module, thread_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (chat_id, module) DO UPDATE SET thread_id = ?3",
            params![chat_id, module, thread_id],
        )?;
        Ok(())
    }

    /// The topic is gone (the user deleted it): the next message creates it again.
    pub fn forget_topic(&self, chat_id: i64, thread_id: i64) -> Result<()> {
        self.conn().execute(
            "DELETE FROM topics WHERE chat_id = ?1 AND thread_id = ?2",
            params![chat_id, thread_id],
        )?;
        Ok(())
    }

    /// The offset to poll Telegram with: one past the last update taken in.
    pub fn update_offset(&self) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM telegram WHERE key = 'offset'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .and_then(|v| v.parse().ok()))
    }

    /// Takes updates in: stored (those worth handling) and the offset moved past all of them,
    /// in one transaction, so an update is neither lost nor handled twice across a restart.
    pub fn take_updates(&self, keep: &[(i64, String)], next_offset: i64) -> Result<()> {
        self.write(|tx| {
            let now = now_text();
            for (id, body) in keep {
                tx.tx.execute(
                    "INSERT INTO updates (update_id, body, at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (update_id) DO NOTHING",
                    params![id, body, now],
                )?;
            }
            tx.tx.execute(
                "INSERT INTO telegram (key, value) VALUES ('offset', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = ?1",
                [next_offset.to_string()],
            )?;
            Ok(())
        })
    }

    /// Updates taken in and not handled yet, oldest first.
    pub fn unhandled_updates(&self) -> Result<Vec<(i64, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT update_id, body FROM updates WHERE handled = 0 ORDER BY update_id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The module context a chat is in, if any.
    pub fn context(&self, chat_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT module FROM contexts WHERE chat_id = ?1",
                [chat_id],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// How a failed message is tried again. Every way but `RateLimited` counts as an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Later, as it is.
    Later,
    /// When Telegram's `retry_after` says: not counted as an attempt, the message did nothing
    /// wrong.
    RateLimited,
    /// At once, without its formatting (Telegram could not parse it).
    Plain,
    /// At once, without the reply (the message it answered is gone).
    Unreplied,
    /// At once, as it is (its topic is being created again).
    Again,
    /// At once, to the chat's General topic (the topic it was a reply in is gone).
    General,
}
