//! Answering questions, whatever the route (a button, a reply, text in a topic, a command, the
//! API, the command line, an expiry's default), and the expiry clock. Every route comes here,
//! so the first answer wins the same way for all: one ledger transaction closes the question
//! and queues the resume run (see `ledger::questions`).

use anyhow::Result;
use chrono::{DateTime, Utc};
use kai_core::question::{due, expired_with_default_text, reminder_text, Due};
use tracing::{info, warn};

use crate::engine::{off_runtime, Engine};
use crate::ledger::{Answer, Answered, Asked, OutMessage, Tx};

/// Answers the question of `run_id`. `also` runs in the same transaction, with the result (a
/// chat message marks its update handled there, and says what happened). On the first answer
/// the checkpoint file goes (the ledger has the question's message edited).
pub fn answer(
    engine: &Engine,
    run_id: &str,
    answer: Answer,
    also: impl FnOnce(&Tx<'_>, &Answered) -> Result<()>,
) -> Result<Answered> {
    let result = off_runtime(|| {
        engine.ledger.write(|tx| {
            let result = tx.answer(run_id, &answer)?;
            also(tx, &result)?;
            Ok(result)
        })
    })?;
    if let Answered::Accepted(q) = &result {
        info!(run = %run_id, module = %q.module, via = %answer.via, "question answered");
        remove_checkpoint(engine, &q.module, run_id);
    }
    engine.outbox_wake.notify_one();
    Ok(result)
}

/// What a later answer is told.
pub fn already_text(q: &Asked) -> String {
    match (&q.closed.as_deref(), &q.answer) {
        (Some("answered"), Some(a)) => {
            kai_core::question::already_answered_text(&a.text, &a.by, a.at)
        }
        (Some(how), _) => format!("This question is closed ({how})."),
        (None, _) => "This question is still open.".to_owned(),
    }
}

fn remove_checkpoint(engine: &Engine, module: &str, run_id: &str) {
    let path = engine
        .data
        .pending_dir(module)
        .join(format!("{run_id}.json"));
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("cannot remove {}: {e}", path.display()),
    }
}

/// Reminds of questions about to expire, and expires those whose time is up: with their
/// `default` as the answer, or closed as `expired`.
pub fn sweep(engine: &Engine, now: DateTime<Utc>) -> Result<()> {
    for q in off_runtime(|| engine.ledger.open_questions(None))? {
        if withdrawn(engine, &q)? {
            continue;
        }
        match due(&q.timeline, q.reminded, now) {
            Due::Nothing => {}
            Due::Remind => {
                let text = reminder_text(&q.entity, &q.question, &q.timeline, now);
                off_runtime(|| {
                    engine.ledger.write(|tx| {
                        if tx.reminded(&q.run_id)? {
                            let mut note = OutMessage::to_module(&q.module, text);
                            note.reply_to = q.message.map(|(_, _, id)| id);
                            tx.enqueue(&note)?;
                        }
                        Ok(())
                    })
                })?;
                engine.outbox_wake.notify_one();
            }
            Due::Expire => match &q.question.default {
                Some(default) => {
                    let note = OutMessage::to_module(
                        &q.module,
                        expired_with_default_text(&q.entity, &q.question, default),
                    );
                    let a = Answer {
                        text: default.clone(),
                        by: "nobody (expired, default)".into(),
                        at: now,
                        via: "expiry".into(),
                    };
                    answer(engine, &q.run_id, a, |tx, result| {
                        if matches!(result, Answered::Accepted(_)) {
                            tx.enqueue(&note)?;
                        }
                        Ok(())
                    })?;
                }
                None => {
                    if off_runtime(|| engine.close_expired(&q))?.is_some() {
                        info!(run = %q.run_id, module = %q.module, "question expired");
                        remove_checkpoint(engine, &q.module, &q.run_id);
                    }
                }
            },
        }
    }
    Ok(())
}

/// The checkpoint files are the truth: a person who removed an open question's file withdrew
/// the question. It is closed (`withdrawn`), and the topic is told. A question whose run is
/// still writing its files is not touched.
fn withdrawn(engine: &Engine, q: &Asked) -> Result<bool> {
    let file = engine
        .data
        .pending_dir(&q.module)
        .join(format!("{}.json", q.run_id));
    if file.exists() {
        return Ok(false);
    }
    let finished = off_runtime(|| engine.ledger.get(&q.run_id))?
        .is_some_and(|r| r.phase == crate::ledger::Phase::Finished);
    if !finished {
        return Ok(false);
    }
    let text = format!(
        "Withdrawn: its checkpoint file was removed, so this question is closed unanswered ({})\n{}",
        q.entity, q.question.text
    );
    let closed = off_runtime(|| {
        engine.ledger.write(|tx| {
            let closed = tx.close_question(&q.run_id, "withdrawn")?;
            if closed {
                let mut note = OutMessage::to_module(&q.module, text);
                note.reply_to = q.message.map(|(_, _, id)| id);
                tx.enqueue(&note)?;
            }
            Ok(closed)
        })
    })?;
    if closed {
        info!(run = %q.run_id, module = %q.module, "question withdrawn: its checkpoint file is gone");
        engine.outbox_wake.notify_one();
    }
    Ok(true)
}

/// At start: checkpoint files of questions closed while kai was stopping (answered, expired)
/// are removed; what the ledger knows stays the same.
pub fn tidy(engine: &Engine) -> Result<()> {
    let modules = std::fs::read_dir(engine.data.modules_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok());
    for module in modules {
        let ids: Vec<String> = std::fs::read_dir(engine.data.pending_dir(&module))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .into_string()
                    .ok()?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .collect();
        for id in engine.ledger.closed_questions(&ids)? {
            remove_checkpoint(engine, &module, &id);
        }
    }
    Ok(())
}
