//! The Telegram side of the end-to-end tests: the real `kai serve` (a [`Kaid`]) pointed at the
//! fake Bot API of `crates/fake-telegram`, with one owner, a stranger, and a forum or the
//! owner's private chat as the notify chat. A failing check shows the daemon's diagnosis and
//! everything the bot said and was asked.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::Duration;

use fake_telegram::{FakeTelegram, SentMessage, User};
use serde_json::Value;

use crate::daemon_support::*;

pub const OWNER: i64 = 1001;
pub const STRANGER: i64 = 666;
pub const FORUM: i64 = -100_123_456;
/// The admin token of every test daemon's API.
pub const ADMIN: &str = "admin-token-of-the-telegram-tests";

pub struct Tg {
    pub kaid: Kaid,
    pub tg: FakeTelegram,
    pub owner: User,
    pub stranger: User,
    /// The notify chat: the forum, or the owner's private chat.
    pub chat: i64,
}

impl Tg {
    /// A daemon (not started) talking to a fresh fake; `forum`: the notify chat is a forum.
    pub fn new(forum: bool) -> Tg {
        let tg = FakeTelegram::start();
        let owner = FakeTelegram::user(OWNER, "Olive", "olive");
        let stranger = FakeTelegram::user(STRANGER, "Mallory", "mallory");
        tg.add_private_chat(&owner);
        tg.add_private_chat(&stranger);
        let chat = if forum {
            tg.add_forum(FORUM, "kai");
            FORUM
        } else {
            OWNER
        };
        let mut kaid = Kaid::new();
        kaid.set_env("KAI_TELEGRAM_TOKEN", fake_telegram::TOKEN)
            .set_env("KAI_TELEGRAM_API_URL", &tg.url())
            .set_env("KAI_ALLOWED_USERS", &OWNER.to_string())
            .set_env("KAI_NOTIFY_CHAT", &chat.to_string())
            .set_env("KAI_TELEGRAM_PACING", "0s")
            .set_env("KAI_API_TOKEN", ADMIN);
        Tg {
            kaid,
            tg,
            owner,
            stranger,
            chat,
        }
    }

    /// `POST /api/modules/{module}/invoke` with the admin token; the answer's JSON.
    #[track_caller]
    pub fn invoke(&self, module: &str, entity: &str) -> Value {
        let body = serde_json::json!({ "entity": entity }).to_string();
        let r = self.kaid.post(
            &format!("/api/modules/{module}/invoke"),
            &[("Authorization", format!("Bearer {ADMIN}"))],
            body.as_bytes(),
        );
        if r.status != 202 {
            self.fail(format!("invoke {module}: {} {}", r.status, r.text()));
        }
        r.json()
    }

    /// What the bot said in a chat, in order (edits included, as they are now).
    pub fn texts(&self, chat: i64) -> Vec<String> {
        self.tg.messages(chat).into_iter().map(|m| m.text).collect()
    }

    /// The thread id of a module's topic in the forum.
    pub fn topic_of(&self, module: &str) -> Option<i64> {
        self.tg
            .topics(self.chat)
            .into_iter()
            .find(|t| t.name == module)
            .map(|t| t.thread_id)
    }

    /// The messages in a module's topic.
    pub fn in_topic(&self, module: &str) -> Vec<SentMessage> {
        let Some(thread) = self.topic_of(module) else {
            return Vec::new();
        };
        self.tg
            .messages(self.chat)
            .into_iter()
            .filter(|m| m.thread_id == Some(thread))
            .collect()
    }

    /// How many calls of `method` kai made (failed ones included).
    pub fn calls_of(&self, method: &str) -> usize {
        self.tg
            .calls()
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// Waits for `what` to hold, failing with the whole picture after the patience runs out.
    #[track_caller]
    pub fn wait(&self, what: &str, cond: impl Fn(&Tg) -> bool) {
        if !poll(PATIENCE, || cond(self)) {
            self.fail(format!("waited 30 s for: {what}"));
        }
    }

    /// Fails with the daemon's diagnosis and the bot's side of things.
    #[track_caller]
    pub fn fail(&self, message: impl std::fmt::Display) -> ! {
        self.kaid.fail(format!("{message}\n{}", self.picture()))
    }

    /// Everything the fake saw: messages per chat, topics, calls.
    pub fn picture(&self) -> String {
        let mut out = String::from("\n----- fake Telegram -----\n");
        for chat in [self.chat, OWNER, STRANGER] {
            let msgs = self.tg.messages(chat);
            let _ = writeln!(out, "chat {chat}: {} messages", msgs.len());
            for m in msgs {
                let _ = writeln!(
                    out,
                    "  #{} thread {:?}{} {:?}{}",
                    m.message_id,
                    m.thread_id,
                    if m.edited { " (edited)" } else { "" },
                    m.text.chars().take(300).collect::<String>(),
                    if m.reply_markup.is_some() {
                        " [buttons]"
                    } else {
                        ""
                    }
                );
            }
            if chat == OWNER {
                break;
            }
        }
        let _ = writeln!(
            out,
            "topics: {:?}",
            self.tg
                .topics(self.chat)
                .iter()
                .map(|t| (t.thread_id, t.name.clone()))
                .collect::<Vec<_>>()
        );
        let calls = self.tg.calls();
        let _ = writeln!(out, "{} calls, the last 40:", calls.len());
        for c in calls.iter().rev().take(40).rev() {
            let mut params = c.params.clone();
            if let Some(t) = params.get_mut("text") {
                *t = Value::String(t.as_str().unwrap_or_default().chars().take(80).collect());
            }
            let _ = writeln!(out, "  {} {:?} {}", c.method, c.error_code, params);
        }
        out
    }

    /// The owner writes in a chat (a topic, a reply); returns the message id.
    pub fn owner_says(
        &self,
        chat: i64,
        text: &str,
        thread: Option<i64>,
        reply_to: Option<i64>,
    ) -> i64 {
        self.tg.send_text(chat, &self.owner, text, thread, reply_to)
    }

    /// Messages in `chat` after the first `skip`, once at least `n` more have come.
    #[track_caller]
    pub fn wait_new(&self, chat: i64, skip: usize, n: usize) -> Vec<SentMessage> {
        self.wait(&format!("{n} new message(s) in chat {chat}"), |t| {
            t.tg.messages(chat).len() >= skip + n
        });
        self.tg.messages(chat).into_iter().skip(skip).collect()
    }

    /// Nothing more happens for a while (the outbox is drained and quiet).
    pub fn quiet(&self, chat: i64, period: Duration) -> usize {
        let mut last = self.tg.messages(chat).len();
        loop {
            std::thread::sleep(period);
            let now = self.tg.messages(chat).len();
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

/// A module that answers `done` with the summary `$1`-less text `summary`.
pub fn says(summary: &str) -> String {
    format!(
        "#!/bin/sh\ncat > /dev/null\necho '{{\"status\":\"done\",\"summary\":\"{summary}\"}}'\n"
    )
}
