//! Sending the outbox to Telegram. Messages go out one chat at a time in the order they were
//! written, each chat paced (`KAI_TELEGRAM_PACING`, default one message a second, Telegram's
//! advice); a message that fails holds back the ones after it in the same chat, so parts of a
//! long text never arrive out of order.
//!
//! - `429`: the chat waits `retry_after` seconds; the message is not counted as failed.
//! - "message thread not found" (the user deleted the module's topic): the topic is forgotten
//!   and created again, and the message goes there.
//! - "can't parse entities": sent again as plain text.
//! - the network, a `5xx`: tried again with back-off (1 s, 2 s, 4 s ... 5 min), for ever.
//! - other refusals (a chat that does not exist, a bot removed from it): tried again with
//!   back-off, given up after 8 attempts and logged.
//!
//! The crash window: Telegram has no idempotency key, so a message accepted by Telegram whose
//! answer kai did not get to record (kai killed between the two, or the answer lost on the
//! network after Telegram acted) is sent again after the restart. The window is one HTTP
//! response plus one SQLite commit; nothing else happens in between. Topic creation has the
//! same window (an extra, empty topic).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::api::{ApiError, BotApi, Message};
use crate::engine::{off_runtime, Engine};
use crate::ledger::{Outgoing, Retry};

/// Attempts before a message Telegram keeps refusing is given up.
const MAX_REFUSALS: u32 = 8;

pub struct Sender {
    engine: Arc<Engine>,
    api: BotApi,
    pacing: Duration,
    /// Whether each chat is a forum, as `getChat` said.
    forums: HashMap<i64, bool>,
    /// When each chat may get its next message.
    ready_at: HashMap<i64, Instant>,
}

enum Sent {
    Done,
    /// Try again at once (changed: plain text, no reply, a new topic).
    Again,
    /// Try again later.
    Later(Duration),
}

impl Sender {
    pub fn new(engine: Arc<Engine>, api: BotApi, pacing: Duration) -> Sender {
        Sender {
            engine,
            api,
            pacing,
            forums: HashMap::new(),
            ready_at: HashMap::new(),
        }
    }

    /// Sends until shutdown.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let wake = self.engine.outbox_wake.clone();
        loop {
            let pause = match self.round().await {
                Ok(pause) => pause,
                Err(e) => {
                    warn!("the outbox cannot be read, will retry: {e:#}");
                    Duration::from_secs(1)
                }
            };
            if pause.is_zero() {
                if shutdown.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Sends what is due, each chat's messages in order until one has to wait; returns how
    /// long to wait before the next round (zero: go on at once).
    async fn round(&mut self) -> anyhow::Result<Duration> {
        let waiting = off_runtime(|| self.engine.ledger.outbox_waiting(500))?;
        let notify_chat = self.engine.config.chat_id();
        // Chats whose next message cannot go in this round; the others get theirs in order.
        let mut blocked = HashSet::new();
        let mut pause = Duration::from_secs(1);
        let mut sent_any = false;
        for row in waiting {
            let Some(chat) = row.chat_id.or(notify_chat) else {
                let why = "no chat to send to: set KAI_NOTIFY_CHAT or KAI_ALLOWED_USERS";
                warn!(id = row.id, "{why}");
                off_runtime(|| self.engine.ledger.outbox_fail(row.id, why))?;
                continue;
            };
            if blocked.contains(&chat) {
                continue; // a message before this one in the chat waits: this one too
            }
            let now = Instant::now();
            let mut wait = self
                .ready_at
                .get(&chat)
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or_default();
            if let Some(nb) = row.not_before {
                wait = wait.max((nb - Utc::now()).to_std().unwrap_or_default());
            }
            if !wait.is_zero() {
                pause = pause.min(wait);
                blocked.insert(chat);
                continue;
            }
            match self.send(&row, chat).await? {
                Sent::Done => {
                    self.ready_at.insert(chat, Instant::now() + self.pacing);
                    sent_any = true;
                }
                Sent::Again => {
                    // The row changed (plain text, no reply, a new topic): read it again.
                    blocked.insert(chat);
                    sent_any = true;
                }
                Sent::Later(after) => {
                    self.ready_at.insert(chat, Instant::now() + after);
                    blocked.insert(chat);
                }
            }
        }
        Ok(if sent_any { Duration::ZERO } else { pause })
    }

    async fn send(&mut self, row: &Outgoing, chat: i64) -> anyhow::Result<Sent> {
        let engine = self.engine.clone();
        let ledger = &engine.ledger;
        if let Some(message_id) = row.edit_of {
            let params = json!({ "chat_id": chat, "message_id": message_id, "text": row.text });
            return match self.api.call::<Value>("editMessageText", &params).await {
                Ok(_) => {
                    off_runtime(|| ledger.outbox_sent(row.id, chat, None, message_id))?;
                    Ok(Sent::Done)
                }
                Err(e) if e.says("message is not modified") => {
                    off_runtime(|| ledger.outbox_sent(row.id, chat, None, message_id))?;
                    Ok(Sent::Done)
                }
                Err(e)
                    if e.says("message to edit not found") || e.says("message can't be edited") =>
                {
                    off_runtime(|| ledger.outbox_fail(row.id, &e.to_string()))?;
                    Ok(Sent::Again)
                }
                Err(e) => self.failed(row, e),
            };
        }
        let forum = match self.is_forum(chat).await {
            Ok(f) => f,
            Err(e) => return self.failed(row, e),
        };
        let mut text = row.text.clone();
        let mut thread = row.thread_id;
        let mut from_topics = false;
        if let (Some(module), None) = (&row.module, thread) {
            if forum {
                match self.topic(chat, module).await {
                    Ok(Some(t)) => {
                        thread = Some(t);
                        from_topics = true;
                    }
                    Ok(None) => text = format!("[{module}] {text}"),
                    Err(e) => return self.failed(row, e),
                }
            } else {
                text = format!("[{module}] {text}");
            }
        }
        let mut params = json!({ "chat_id": chat, "text": text });
        if let Some(t) = thread.filter(|_| forum) {
            params["message_thread_id"] = json!(t);
        }
        if let Some(mode) = &row.parse_mode {
            params["parse_mode"] = json!(mode);
        }
        if let Some(markup) = &row.markup {
            params["reply_markup"] = markup.clone();
        }
        if let Some(reply) = row.reply_to {
            params["reply_parameters"] = json!({ "message_id": reply });
        }
        match self.api.call::<Message>("sendMessage", &params).await {
            Ok(m) => {
                off_runtime(|| ledger.outbox_sent(row.id, chat, m.topic(), m.message_id))?;
                debug!(id = row.id, chat, message = m.message_id, "sent");
                Ok(Sent::Done)
            }
            Err(e)
                if e.says("thread not found")
                    || e.says("topic_deleted")
                    || e.says("topic_closed") =>
            {
                match (from_topics, thread) {
                    (true, Some(t)) => {
                        info!(chat, thread = t, module = ?row.module, "the module's topic is gone: creating it again");
                        off_runtime(|| ledger.forget_topic(chat, t))?;
                        self.retry(row, Retry::Again, &e)
                    }
                    // A reply into a topic that is gone: it goes to the chat instead.
                    _ => self.retry(row, Retry::General, &e),
                }
            }
            Err(e) if e.says("can't parse entities") && row.parse_mode.is_some() => {
                self.retry(row, Retry::Plain, &e)
            }
            Err(e) if e.says("message to be replied not found") && row.reply_to.is_some() => {
                self.retry(row, Retry::Unreplied, &e)
            }
            Err(e) => self.failed(row, e),
        }
    }

    fn retry(&self, row: &Outgoing, how: Retry, e: &ApiError) -> anyhow::Result<Sent> {
        // A fallback that keeps failing (a topic that is gone again as soon as it is made)
        // goes the way of any refusal: back-off, then given up.
        if row.attempts >= MAX_REFUSALS / 2 {
            return self.failed(row, e.clone());
        }
        off_runtime(|| {
            self.engine
                .ledger
                .outbox_retry(row.id, Utc::now(), &e.to_string(), how)
        })?;
        Ok(Sent::Again)
    }

    /// A send that did not go through: when to try again, or give up.
    fn failed(&self, row: &Outgoing, e: ApiError) -> anyhow::Result<Sent> {
        let ledger = &self.engine.ledger;
        if let ApiError::Telegram {
            code: 429,
            retry_after,
            ..
        } = &e
        {
            let after = Duration::from_secs(retry_after.unwrap_or(1).max(1));
            debug!(id = row.id, "rate limited for {}s", after.as_secs());
            let at = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
            off_runtime(|| ledger.outbox_retry(row.id, at, &e.to_string(), Retry::RateLimited))?;
            return Ok(Sent::Later(after));
        }
        let transient = match e.code() {
            None => true,
            Some(c) => c >= 500,
        };
        if !transient && row.attempts + 1 >= MAX_REFUSALS {
            warn!(
                id = row.id,
                "message given up after {} attempts: {e}",
                row.attempts + 1
            );
            off_runtime(|| ledger.outbox_fail(row.id, &e.to_string()))?;
            return Ok(Sent::Again);
        }
        let after = Duration::from_secs((1u64 << row.attempts.min(9)).min(300));
        warn!(
            id = row.id,
            "cannot send a message, trying again in {}s: {e}",
            after.as_secs()
        );
        let at = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        off_runtime(|| ledger.outbox_retry(row.id, at, &e.to_string(), Retry::Later))?;
        Ok(Sent::Later(after))
    }

    async fn is_forum(&mut self, chat: i64) -> Result<bool, ApiError> {
        if let Some(f) = self.forums.get(&chat) {
            return Ok(*f);
        }
        let c = self.api.get_chat(chat).await?;
        let forum = c.is_forum == Some(true);
        self.forums.insert(chat, forum);
        Ok(forum)
    }

    /// The module's topic in a forum, created the first time. `None`: it cannot be created
    /// (no right to manage topics), and the message goes to General with a `[module]` prefix.
    async fn topic(&mut self, chat: i64, module: &str) -> Result<Option<i64>, ApiError> {
        let ledger = &self.engine.ledger;
        if let Some(t) = off_runtime(|| ledger.topic(chat, module)).map_err(internal)? {
            return Ok(Some(t));
        }
        match self.api.create_forum_topic(chat, module).await {
            Ok(topic) => {
                let t = topic.message_thread_id;
                off_runtime(|| ledger.set_topic(chat, module, t)).map_err(internal)?;
                info!(chat, module, thread = t, "created the module's topic");
                Ok(Some(t))
            }
            Err(e) if e.says("not a forum") => {
                self.forums.insert(chat, false);
                Ok(None)
            }
            Err(
                e @ ApiError::Telegram {
                    code: 400 | 403, ..
                },
            ) if !matches!(e.code(), Some(429)) => {
                warn!(
                    chat,
                    module, "cannot create a topic, posting to General instead: {e}"
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::Network(format!("the ledger: {e:#}"))
}
