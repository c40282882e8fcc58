//! The texts of the chat commands (`/module`, `/module NAME`, `/module NAME ENTITY`, `/help`,
//! `/status`), made from what the registry, the ledger and the journal say. Plain text: module
//! names, entities and summaries are shown as they are, with nothing for Telegram to parse.

use chrono::{DateTime, Utc};
use kai_core::{JournalEntry, LoadedModule, Registry};

use crate::engine::Engine;
use crate::journal::{list, Query};
use crate::ledger::Asked;

/// "just now", "5m ago", "3h ago", "2d ago".
pub fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - then).num_seconds().max(0);
    match s {
        s if s < 60 => "just now".to_owned(),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// A manifest word (`coalesce`, `changes`) as the manifest spells it.
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `/module`: every module with its last 24 hours.
pub fn module_list(
    engine: &Engine,
    registry: &Registry,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let mut out = String::from("Modules\n");
    let mut modules: Vec<&LoadedModule> = registry.modules().collect();
    modules.sort_by(|a, b| a.name().cmp(b.name()));
    if modules.is_empty() {
        out.push_str("\nNo modules loaded. `kai modules new NAME` makes one.");
    }
    for m in modules {
        let name = m.name();
        let a = engine
            .ledger
            .activity(name, now - chrono::Duration::hours(24))?;
        let open = engine.ledger.open_questions(Some(name))?.len() as u64;
        let off = engine.ledger.switched_off(name)?;
        out.push_str(&format!(
            "\n• {name} {}{} — {}\n  ",
            m.manifest.version,
            if off.is_some() { " (off)" } else { "" },
            m.manifest.description
        ));
        if a.finished == 0 {
            out.push_str("24h: no runs");
        } else {
            out.push_str(&format!(
                "24h: {}, {} failed",
                plural(a.finished, "run", "runs"),
                a.failures
            ));
        }
        if let Some(last) = &a.last {
            out.push_str(&format!(
                " · last: {} ({}, {})",
                last.entity,
                last.status,
                ago(last.finished_at, now)
            ));
        }
        if open > 0 {
            out.push_str(&format!(
                " · {}",
                plural(open, "open question", "open questions")
            ));
        }
        out.push('\n');
    }
    for e in registry.errors() {
        out.push_str(&format!("\n⚠ not loaded: {e}\n"));
    }
    Ok(out.trim_end().to_owned())
}

fn entry_line(e: &JournalEntry, now: DateTime<Utc>) -> String {
    format!(
        "{} {} {} — {}",
        ago(e.timestamp, now),
        e.status,
        e.entity,
        e.summary
    )
}

fn question_line(q: &Asked, now: DateTime<Utc>) -> String {
    format!(
        "❓ {} ({}, asked {}): {}",
        q.entity,
        q.run_id,
        ago(q.timeline.asked_at, now),
        q.question.text
    )
}

/// `header`, then one line per question: what kai says when it must be told which one.
pub fn question_list(header: String, questions: &[Asked], now: DateTime<Utc>) -> String {
    let mut out = header;
    for q in questions {
        out.push_str(&format!("\n{}", question_line(q, now)));
    }
    out
}

/// `/module NAME`: the module's card.
pub fn module_card(
    engine: &Engine,
    m: &LoadedModule,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let name = m.name();
    let man = &m.manifest;
    let mut out = format!("{name} {}\n{}\n", man.version, man.description);
    let triggers: Vec<String> = man.triggers.iter().map(|t| t.to_string()).collect();
    out.push_str(&format!(
        "\ntriggers: {}\n",
        if triggers.is_empty() {
            "none (invoke only)".to_owned()
        } else {
            triggers.join(", ")
        }
    ));
    out.push_str(&format!(
        "timeout {}, concurrency {}, per entity {}, notify {}\n",
        man.timeout.0,
        man.concurrency.0,
        word(&man.per_entity),
        word(&man.notify)
    ));
    if let Some(why) = engine.ledger.switched_off(name)? {
        out.push_str(&format!("switched off: {why}\n"));
    }
    let a = engine
        .ledger
        .activity(name, now - chrono::Duration::hours(24))?;
    out.push_str(&format!(
        "24h: {}, {} failed, {} queued, {} running\n",
        plural(a.finished, "run", "runs"),
        a.failures,
        a.queued,
        a.running
    ));
    let recent = list(
        &engine.data,
        &[name.to_owned()],
        &Query {
            limit: Some(5),
            ..Query::default()
        },
    );
    if recent.entries.is_empty() {
        out.push_str("\nNo runs yet.\n");
    } else {
        out.push_str("\nLast runs:\n");
        for l in &recent.entries {
            out.push_str(&format!("{}\n", entry_line(&l.entry, now)));
        }
    }
    let open = engine.ledger.open_questions(Some(name))?;
    if !open.is_empty() {
        out.push_str("\nOpen questions:\n");
        for q in &open {
            out.push_str(&format!("{}\n", question_line(q, now)));
        }
    }
    out.push_str(&format!(
        "\nThis chat is now in {name}'s context; /module main goes back."
    ));
    Ok(out)
}

/// `/module NAME ENTITY`: every journal entry for that entity, newest first.
pub fn entity_entries(engine: &Engine, module: &str, entity: &str, now: DateTime<Utc>) -> String {
    let listing = list(
        &engine.data,
        &[module.to_owned()],
        &Query {
            entity: Some(entity.to_owned()),
            ..Query::default()
        },
    );
    if listing.entries.is_empty() {
        return format!("{module} has no journal entry for {entity}.");
    }
    let mut out = format!(
        "{module} · {entity}: {}\n",
        plural(listing.entries.len() as u64, "entry", "entries")
    );
    for l in &listing.entries {
        out.push_str(&format!("\n{}", entry_line(&l.entry, now)));
    }
    out
}

/// `/help`.
pub fn help(registry: &Registry) -> String {
    let mut out = String::from(
        "kai commands\n\
         /module — the modules, their last 24 hours, open questions\n\
         /module NAME — a module's card; the chat switches to its context\n\
         /module NAME ENTITY — the module's journal for one entity\n\
         /module NAME answer TEXT — answer the module's open question\n\
         /module main — back to the main context\n\
         /status — what kai is doing\n\
         /help — this list\n",
    );
    let mut commands: Vec<(String, String)> = registry
        .modules()
        .flat_map(|m| {
            m.manifest.triggers.iter().filter_map(move |t| match t {
                kai_core::Trigger::Command { name } => Some((name.clone(), m.name().to_owned())),
                _ => None,
            })
        })
        .collect();
    commands.sort();
    if !commands.is_empty() {
        out.push_str("\nModule commands\n");
        for (c, m) in commands {
            out.push_str(&format!("/{c} [ARGS] — runs {m}\n"));
        }
    }
    out.push_str("\nA question is answered with its buttons, by replying to it, or by writing in the module's topic when it is the only one open there.");
    out
}

/// `/status`.
pub fn status(
    engine: &Engine,
    registry: &Registry,
    context: Option<&str>,
) -> anyhow::Result<String> {
    use crate::ledger::Phase;
    let open = engine.ledger.open_questions(None)?.len();
    Ok(format!(
        "kai {} is up\nmodules: {} loaded, {} not loaded\nruns: {} running, {} queued\nopen questions: {open}\noutbox: {} waiting\ncontext: {}",
        env!("CARGO_PKG_VERSION"),
        registry.len(),
        registry.errors().len(),
        engine.ledger.count_phase(Phase::Running)? + engine.ledger.count_phase(Phase::Finishing)?,
        engine.ledger.count_phase(Phase::Queued)?,
        engine.ledger.outbox_len()?,
        context.unwrap_or("main")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_read_naturally() {
        let now = Utc.with_ymd_and_hms(2026, 4, 4, 12, 0, 0).unwrap();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - chrono::Duration::minutes(5), now), "5m ago");
        assert_eq!(ago(now - chrono::Duration::hours(3), now), "3h ago");
        assert_eq!(ago(now - chrono::Duration::days(2), now), "2d ago");
    }
}
