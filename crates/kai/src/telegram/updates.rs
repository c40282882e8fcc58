//! Taking updates in from Telegram and acting on them.
//!
//! Long polling (`getUpdates` with an offset): a batch of updates is stored in the ledger and
//! the offset moved past it in one transaction, before Telegram is told (the next poll's
//! offset confirms them). Each stored update is then handled in one transaction of its own:
//! what it does (an answer, a run queued, replies put in the outbox, a context switched) and
//! its "handled" mark commit together. So an update is never lost and never acted on twice,
//! whatever kills kai when. Updates from people not in `KAI_ALLOWED_USERS` are not stored:
//! no answer, no trace but a debug line.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kai_core::question::parse_button_data;
use kai_sdk::{Trigger, TriggerType};
use serde::Deserialize as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::api::{ApiError, BotApi, CallbackQuery, Message, Update, POLL_SECONDS};
use super::commands;
use crate::daemon::Daemon;
use crate::engine::{new_run_id, off_runtime};
use crate::ledger::{Answer, Answered, Delivery, OutMessage, Tx};
use crate::questions;

pub struct Poller {
    daemon: Arc<Daemon>,
    api: BotApi,
}

/// A reply to a button press, made after the update's transaction commits.
struct Toast {
    id: String,
    text: String,
    alert: bool,
}

impl Poller {
    pub fn new(daemon: Arc<Daemon>, api: BotApi) -> Poller {
        Poller { daemon, api }
    }

    /// Polls until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        self.handle_stored().await;
        let mut backoff = Duration::ZERO;
        loop {
            if !backoff.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            let offset = match off_runtime(|| self.daemon.engine.ledger.update_offset()) {
                Ok(o) => o,
                Err(e) => {
                    warn!("cannot read the Telegram offset: {e:#}");
                    backoff = Duration::from_secs(1);
                    continue;
                }
            };
            let got = tokio::select! {
                got = self.api.get_updates(offset, POLL_SECONDS) => got,
                _ = shutdown.cancelled() => return,
            };
            match got {
                Ok(updates) => {
                    backoff = Duration::ZERO;
                    if updates.is_empty() {
                        continue;
                    }
                    if let Err(e) = self.take(updates) {
                        warn!("cannot store Telegram updates, will poll again: {e:#}");
                        backoff = Duration::from_secs(1);
                        continue;
                    }
                    self.handle_stored().await;
                }
                Err(e) => {
                    backoff = next_backoff(&e, backoff);
                    match e.code() {
                        Some(409) => error!(
                            "another program is reading this bot's updates (Telegram answered 409 Conflict): only one kai, and nothing else, may poll a bot token; trying again in {}s",
                            backoff.as_secs()
                        ),
                        Some(401 | 404) => error!(
                            "Telegram refused the bot token (KAI_TELEGRAM_TOKEN): {e}; trying again in {}s",
                            backoff.as_secs()
                        ),
                        _ => warn!("cannot poll Telegram, trying again in {}s: {e}", backoff.as_secs()),
                    }
                }
            }
        }
    }

    /// Stores the updates worth handling and moves the offset past all of them.
    fn take(&self, updates: Vec<Value>) -> anyhow::Result<()> {
        let allowed = &self.daemon.engine.config.allowed_users;
        let mut next = 0;
        let mut keep = Vec::new();
        for raw in updates {
            let Some(id) = raw.get("update_id").and_then(Value::as_i64) else {
                continue;
            };
            next = next.max(id + 1);
            let from = Update::deserialize(&raw)
                .ok()
                .and_then(|u| u.from().map(|f| f.id));
            match from {
                Some(user) if allowed.contains(&user) => keep.push((id, raw.to_string())),
                Some(user) => debug!(update = id, user, "update from a stranger dropped"),
                None => debug!(update = id, "update with no sender dropped"),
            }
        }
        off_runtime(|| self.daemon.engine.ledger.take_updates(&keep, next))
    }

    /// Handles every stored update not handled yet, in order.
    async fn handle_stored(&self) {
        let stored = match off_runtime(|| self.daemon.engine.ledger.unhandled_updates()) {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot read stored updates: {e:#}");
                return;
            }
        };
        for (id, body) in stored {
            let handled = match serde_json::from_str::<Update>(&body) {
                Ok(update) => off_runtime(|| self.handle(&update)),
                Err(e) => {
                    warn!(update = id, "an update kai cannot read is skipped: {e}");
                    off_runtime(|| self.daemon.engine.ledger.write(|tx| tx.handled(id)))
                        .map(|()| None)
                }
            };
            // A run queued (a command, a resume) starts now, not after the button's toast.
            self.daemon.wake();
            self.daemon.engine.outbox_wake.notify_one();
            match handled {
                Ok(Some(toast)) => {
                    if let Err(e) = self
                        .api
                        .answer_callback_query(&toast.id, &toast.text, toast.alert)
                        .await
                    {
                        debug!("cannot answer a button press: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(update = id, "cannot handle an update, will retry: {e:#}"),
            }
        }
    }

    fn handle(&self, update: &Update) -> anyhow::Result<Option<Toast>> {
        let id = update.update_id;
        if let Some(cq) = &update.callback_query {
            return self.button(id, cq).map(Some);
        }
        match &update.message {
            Some(m) if m.text.is_some() => {
                self.message(id, m)?;
            }
            _ => self.daemon.engine.ledger.write(|tx| tx.handled(id))?,
        }
        Ok(None)
    }

    fn button(&self, id: i64, cq: &CallbackQuery) -> anyhow::Result<Toast> {
        let engine = &self.daemon.engine;
        let toast = |text: String, alert: bool| Toast {
            id: cq.id.clone(),
            text,
            alert,
        };
        let data = cq.data.as_deref().unwrap_or_default();
        let question = match parse_button_data(data) {
            Some((run_id, option)) => engine
                .ledger
                .question(run_id)?
                .and_then(|q| Some((run_id, q.question.options.get(option)?.clone()))),
            None => None,
        };
        let Some((run_id, option)) = question else {
            engine.ledger.write(|tx| tx.handled(id))?;
            return Ok(toast("This button is not one kai knows.".into(), true));
        };
        let a = Answer {
            text: option.clone(),
            by: cq.from.display(),
            at: Utc::now(),
            via: "button".into(),
        };
        let result = questions::answer(engine, run_id, a, |tx, _| tx.handled(id))?;
        Ok(match result {
            Answered::Accepted(_) => toast(format!("✅ {option}"), false),
            Answered::Already(q) => toast(questions::already_text(&q), true),
            Answered::Unknown => toast("This question is not known.".into(), true),
        })
    }

    fn message(&self, id: i64, m: &Message) -> anyhow::Result<()> {
        let engine = &self.daemon.engine;
        let text = m.text.as_deref().unwrap_or_default().trim();
        let chat = m.chat.id;
        let thread = m.topic();
        let from = m.from.as_ref().map(|f| f.display()).unwrap_or_default();
        let reply = |t: String| OutMessage::to_chat(Some(chat), thread, t);
        if let Some(command) = text.strip_prefix('/') {
            return self.command(id, m, command);
        }
        // A reply to a question's message answers it.
        if let Some(replied) = &m.reply_to_message {
            if let Some(q) = engine
                .ledger
                .question_by_message(chat, replied.message_id)?
            {
                return self.answer(id, &q.run_id, text, &from, "reply", reply);
            }
        }
        // Text in a module's topic answers its question, when exactly one is open there.
        let module = match thread {
            Some(t) => engine.ledger.topic_module(chat, t)?,
            None => None,
        };
        if let Some(module) = &module {
            let open: Vec<_> = engine
                .ledger
                .open_questions(Some(module))?
                .into_iter()
                .filter(|q| q.message.is_some_and(|(c, _, _)| c == chat))
                .collect();
            match open.as_slice() {
                [q] => return self.answer(id, &q.run_id, text, &from, "text", reply),
                [] => {}
                several => {
                    let t = commands::question_list(
                        format!(
                            "{} questions are open here. Reply to the one you mean (or use /module {module} answer RUN_ID TEXT):",
                            several.len()
                        ),
                        several,
                        Utc::now(),
                    );
                    return self.reply(id, vec![reply(t)]);
                }
            }
        }
        let context = match module {
            Some(m) => Some(m),
            None => engine.ledger.context(chat)?,
        };
        let t = match context {
            Some(m) => format!("No question of {m} is open here. Talking with Claude in a module's context is not part of this kai yet; /help lists what works."),
            None => "Talking with Claude is not part of this kai yet; /help lists what works.".to_owned(),
        };
        self.reply(id, vec![reply(t)])
    }

    /// Answers a question from a chat message; a late answer is told who was first.
    fn answer(
        &self,
        id: i64,
        run_id: &str,
        text: &str,
        by: &str,
        via: &str,
        reply: impl Fn(String) -> OutMessage,
    ) -> anyhow::Result<()> {
        if text.is_empty() {
            return self.reply(id, vec![reply("An answer needs some text.".into())]);
        }
        let a = Answer {
            text: text.to_owned(),
            by: by.to_owned(),
            at: Utc::now(),
            via: via.into(),
        };
        questions::answer(&self.daemon.engine, run_id, a, |tx, result| {
            match result {
                Answered::Accepted(_) => {}
                Answered::Already(q) => tx.enqueue(&reply(questions::already_text(q)))?,
                Answered::Unknown => {
                    tx.enqueue(&reply(format!("No question {run_id} is known.")))?
                }
            }
            tx.handled(id)
        })?;
        Ok(())
    }

    fn reply(&self, id: i64, messages: Vec<OutMessage>) -> anyhow::Result<()> {
        self.daemon.engine.ledger.write(|tx| {
            for m in &messages {
                tx.enqueue(m)?;
            }
            tx.handled(id)
        })
    }

    fn command(&self, id: i64, m: &Message, command: &str) -> anyhow::Result<()> {
        let engine = &self.daemon.engine;
        let registry = self.daemon.registry();
        let chat = m.chat.id;
        let thread = m.topic();
        let reply = |t: String| OutMessage::to_chat(Some(chat), thread, t);
        let (name, args) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let name = name
            .split('@')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let args = args.trim();
        let now = Utc::now();
        let topic_module = match thread {
            Some(t) => engine.ledger.topic_module(chat, t)?,
            None => None,
        };
        match name.as_str() {
            "help" | "start" => self.reply(id, vec![reply(commands::help(&registry))]),
            "status" => {
                let context = match &topic_module {
                    Some(m) => Some(m.clone()),
                    None => engine.ledger.context(chat)?,
                };
                let t = commands::status(engine, &registry, context.as_deref())?;
                self.reply(id, vec![reply(t)])
            }
            "module" => {
                let mut words = args.splitn(3, char::is_whitespace);
                let target = words.next().unwrap_or_default();
                let second = words.next().unwrap_or_default();
                let rest = words.next().unwrap_or_default().trim();
                if target.is_empty() {
                    let t = commands::module_list(engine, &registry, now)?;
                    return self.reply(id, vec![reply(t)]);
                }
                if target == "main" {
                    return engine.ledger.write(|tx| {
                        tx.set_context(chat, None)?;
                        tx.enqueue(&reply("Back in the main context.".into()))?;
                        tx.handled(id)
                    });
                }
                let Some(module) = registry.get(target) else {
                    return self.reply(
                        id,
                        vec![reply(format!(
                            "No module {target} is loaded. /module lists them."
                        ))],
                    );
                };
                if second == "answer" {
                    return self.answer_command(id, target, rest, m, reply);
                }
                if !second.is_empty() {
                    let entity = args[target.len()..].trim();
                    return self.reply(
                        id,
                        vec![reply(commands::entity_entries(engine, target, entity, now))],
                    );
                }
                let card = commands::module_card(engine, module, now)?;
                engine.ledger.write(|tx| {
                    tx.set_context(chat, Some(target))?;
                    tx.enqueue(&reply(card))?;
                    tx.handled(id)
                })
            }
            "new" | "stop" | "workspace" => self.reply(
                id,
                vec![reply(format!(
                    "/{name} belongs to the chat with Claude, which is not part of this kai yet."
                ))],
            ),
            _ => {
                let modules = registry.match_command(&name);
                if modules.is_empty() {
                    return self.reply(
                        id,
                        vec![reply(format!(
                            "Unknown command /{name}. /help lists the commands."
                        ))],
                    );
                }
                let mut messages = Vec::new();
                let mut deliveries = Vec::new();
                for module in modules {
                    let run_id = new_run_id();
                    let delivery_id = format!("tg-{id}-{}", module.name());
                    let trigger = Trigger {
                        kind: TriggerType::Command,
                        source: Some("telegram".into()),
                        event: Some(name.clone()),
                        action: None,
                        delivery_id: Some(delivery_id.clone()),
                        payload: json!({
                            "command": name,
                            "args": args,
                            "argv": args.split_whitespace().collect::<Vec<_>>(),
                            "text": m.text,
                            "from": m.from,
                            "chat_id": chat,
                            "message_id": m.message_id,
                        }),
                    };
                    // No entity template: the command's argument is the entity (SPEC 3.2).
                    let entity = match (&module.manifest.entity, args.is_empty()) {
                        (None, false) => Some(args.to_owned()),
                        _ => None,
                    };
                    messages.push(reply(format!("▶ {} started ({run_id})", module.name())));
                    deliveries.push(Delivery {
                        source: "telegram".into(),
                        delivery_id,
                        trigger,
                        module: Some(module.name().to_owned()),
                        entity,
                        chat_id: Some(chat),
                        run_id: Some(run_id),
                    });
                }
                engine.ledger.write(|tx: &Tx<'_>| {
                    for d in &deliveries {
                        tx.accept(d)?;
                    }
                    for msg in &messages {
                        tx.enqueue(msg)?;
                    }
                    tx.handled(id)
                })
            }
        }
    }

    /// `/module NAME answer [RUN_ID] TEXT`: the module's one open question, or the one named.
    fn answer_command(
        &self,
        id: i64,
        module: &str,
        rest: &str,
        m: &Message,
        reply: impl Fn(String) -> OutMessage,
    ) -> anyhow::Result<()> {
        let open = self.daemon.engine.ledger.open_questions(Some(module))?;
        let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let by = m.from.as_ref().map(|f| f.display()).unwrap_or_default();
        // A run id of this module's named: that question, open or not (a late answer is
        // told who was first).
        if first.starts_with("r_") {
            if let Some(q) = self.daemon.engine.ledger.question(first)? {
                if q.module == module {
                    return self.answer(id, &q.run_id, after.trim(), &by, "command", reply);
                }
            }
        }
        match open.as_slice() {
            [] => self.reply(id, vec![reply(format!("{module} has no open question."))]),
            [q] => self.answer(id, &q.run_id, rest, &by, "command", reply),
            several => {
                let t = commands::question_list(
                    format!(
                        "{module} has {} open questions; name one: /module {module} answer RUN_ID TEXT",
                        several.len()
                    ),
                    several,
                    Utc::now(),
                );
                self.reply(id, vec![reply(t)])
            }
        }
    }
}

/// How long to wait after a failed poll: a conflict or a refused token is not retried in a
/// tight loop (30 s, then doubling to 5 min); the network gets 1 s, doubling to 30 s.
fn next_backoff(e: &ApiError, last: Duration) -> Duration {
    let (first, max) = match e.code() {
        Some(409 | 401 | 404) => (Duration::from_secs(30), Duration::from_secs(300)),
        Some(429) => match e {
            ApiError::Telegram {
                retry_after: Some(s),
                ..
            } => return Duration::from_secs(*s),
            _ => (Duration::from_secs(5), Duration::from_secs(60)),
        },
        _ => (Duration::from_secs(1), Duration::from_secs(30)),
    };
    if last.is_zero() {
        first
    } else {
        (last * 2).clamp(first, max)
    }
}
