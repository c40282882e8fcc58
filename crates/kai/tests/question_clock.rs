//! Questions against a controllable clock: the real engine, ledger, files and module processes,
//! with the expiry sweep (`kai::questions::sweep`, which the daemon calls every second with the
//! wall clock) called with chosen times, days apart. A question open for three days is reminded
//! once, a day before it expires, then resumes with its default; one without a default is
//! closed as `expired`; a short question is reminded at half-life.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kai::config::{Config, SettingsArgs};
use kai::engine::{Engine, Invocation};
use kai::ledger::Asked;
use kai::modules::load_registry;
use kai::questions::sweep;
use kai::runner::ProcessRunner;
use kai_sdk::{Trigger, TriggerType};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// A module that pauses with `question`.
fn asker(data: &Path, name: &str, question: &Value) {
    let dir = data.join("modules").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let result = json!({
        "status": "paused",
        "summary": "asking",
        "question": question,
        "checkpoint": { "step": 1 },
    });
    let script = format!("#!/bin/sh\ncat > /dev/null\necho '{result}'\n");
    std::fs::write(dir.join("m.sh"), script).unwrap();
    std::fs::set_permissions(dir.join("m.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("module.yaml"),
        format!("name: {name}\ndescription: asks\nrun: [\"./m.sh\"]\nnotify: none\n"),
    )
    .unwrap();
}

fn engine(data: &Path) -> Engine {
    let args = SettingsArgs {
        data_dir: Some(data.to_path_buf()),
        ..SettingsArgs::default()
    };
    Engine::open(Config::resolve(&args).unwrap(), Arc::new(ProcessRunner)).unwrap()
}

/// Runs `module` once for `entity` (it pauses) and returns its open question.
fn ask(engine: &Engine, data: &Path, module: &str, entity: &str) -> Asked {
    let registry = load_registry(&data.join("modules"));
    let m = registry.get(module).expect("the module loads").clone();
    let invocation = Invocation {
        trigger: Trigger {
            kind: TriggerType::Invoke,
            source: None,
            event: None,
            action: None,
            delivery_id: Some(format!("test-{entity}")),
            payload: json!({}),
        },
        entity: entity.into(),
        chat_id: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let finished = runtime
        .block_on(engine.run_now(&m, invocation, CancellationToken::new()))
        .unwrap();
    assert_eq!(finished.entry.status.as_str(), "paused");
    let run_id = finished.entry.run_id;
    engine
        .ledger
        .question(&run_id)
        .unwrap()
        .expect("the question is indexed")
}

/// What waits in the outbox for `module`, oldest first.
fn said(engine: &Engine, module: &str) -> Vec<String> {
    engine
        .ledger
        .outbox_waiting(1000)
        .unwrap()
        .into_iter()
        .filter(|o| o.module.as_deref() == Some(module))
        .map(|o| o.text)
        .collect()
}

fn at(t: DateTime<Utc>, days: i64, hours: i64) -> DateTime<Utc> {
    t + Duration::days(days) + Duration::hours(hours)
}

#[test]
fn three_days_reminded_a_day_before_then_the_default() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path();
    asker(
        data,
        "deploy",
        &json!({"text": "Deploy to staging?", "options": ["yes", "no"], "expires": "3d", "default": "no"}),
    );
    let engine = engine(data);
    let q = ask(&engine, data, "deploy", "octo/repo#42");
    let t0 = q.timeline.asked_at;
    assert_eq!(q.timeline.expires_at, at(t0, 3, 0));
    let checkpoint = data.join(format!("modules/deploy/pending/{}.json", q.run_id));
    assert!(checkpoint.exists());
    let asked = said(&engine, "deploy");
    assert_eq!(asked.len(), 1, "the question: {asked:?}");
    assert!(asked[0].starts_with("❓ octo/repo#42\nDeploy to staging?"));

    // A day and a half in: nothing to do.
    sweep(&engine, at(t0, 1, 12)).unwrap();
    assert_eq!(said(&engine, "deploy").len(), 1);
    // Two days and an hour in: the reminder, once however often the sweep runs.
    for _ in 0..3 {
        sweep(&engine, at(t0, 2, 1)).unwrap();
    }
    let now = said(&engine, "deploy");
    assert_eq!(now.len(), 2, "one reminder: {now:?}");
    assert!(
        now[1].starts_with(
            "⏰ Still open, 23 hours left (then kai goes on with \"no\"): octo/repo#42"
        ),
        "{}",
        now[1]
    );
    assert!(
        engine.ledger.undispatched(10).unwrap().is_empty(),
        "nothing resumes yet"
    );

    // Three days in: the default answers, and the run resumes with it.
    sweep(&engine, at(t0, 3, 0)).unwrap();
    let q = engine.ledger.question(&q.run_id).unwrap().unwrap();
    assert_eq!(q.closed.as_deref(), Some("answered"));
    let a = q.answer.clone().unwrap();
    assert_eq!(
        (a.text.as_str(), a.by.as_str(), a.via.as_str()),
        ("no", "nobody (expired, default)", "expiry")
    );
    let resumes = engine.ledger.undispatched(10).unwrap();
    assert_eq!(resumes.len(), 1);
    let r = &resumes[0].1;
    assert_eq!(r.trigger.kind, TriggerType::Resume);
    assert_eq!(r.module.as_deref(), Some("deploy"));
    assert_eq!(r.entity.as_deref(), Some("octo/repo#42"));
    assert_eq!(r.trigger.payload["answer"], "no");
    assert_eq!(r.trigger.payload["checkpoint"], json!({"step": 1}));
    assert!(
        !checkpoint.exists(),
        "an answered question's checkpoint file goes"
    );
    let last = said(&engine, "deploy").pop().unwrap();
    assert!(
        last.starts_with("⌛ No answer in time: going on with \"no\" for octo/repo#42"),
        "{last}"
    );

    // Later sweeps change nothing.
    sweep(&engine, at(t0, 9, 0)).unwrap();
    assert_eq!(engine.ledger.undispatched(10).unwrap().len(), 1);
}

#[test]
fn without_a_default_the_question_closes_as_expired() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path();
    asker(
        data,
        "triage",
        &json!({"text": "Label it as a bug?", "expires": "2d"}),
    );
    let engine = engine(data);
    let q = ask(&engine, data, "triage", "octo/repo#7");
    let t0 = q.timeline.asked_at;
    // Found late (kai was down at the reminder): it expires without a reminder first.
    sweep(&engine, at(t0, 5, 0)).unwrap();
    let texts = said(&engine, "triage");
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1]
        .starts_with("⌛ No answer in time, and no default: closed as expired for octo/repo#7"));
    let q = engine.ledger.question(&q.run_id).unwrap().unwrap();
    assert_eq!(q.closed.as_deref(), Some("expired"));
    assert!(
        engine.ledger.undispatched(10).unwrap().is_empty(),
        "nothing resumes"
    );
    let mut entries: Vec<Value> = std::fs::read_dir(data.join("modules/triage/events"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    entries.sort_by_key(|e| e["status"].as_str().unwrap().to_owned());
    let statuses: Vec<&str> = entries
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["expired", "paused"]);
    assert_eq!(entries[0]["entity"], "octo/repo#7");
    assert_eq!(entries[0]["details"]["question_run_id"], q.run_id.as_str());
    assert!(!data
        .join(format!("modules/triage/pending/{}.json", q.run_id))
        .exists());
    // Once closed, always closed.
    sweep(&engine, at(t0, 6, 0)).unwrap();
    assert_eq!(
        std::fs::read_dir(data.join("modules/triage/events"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn a_short_question_is_reminded_at_half_life() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path();
    asker(
        data,
        "quick",
        &json!({"text": "Rerun the job?", "options": ["yes"], "expires": "1h", "default": "yes"}),
    );
    let engine = engine(data);
    let q = ask(&engine, data, "quick", "ci@main");
    let t0 = q.timeline.asked_at;
    sweep(&engine, t0 + Duration::minutes(29)).unwrap();
    assert_eq!(said(&engine, "quick").len(), 1);
    sweep(&engine, t0 + Duration::minutes(31)).unwrap();
    let texts = said(&engine, "quick");
    assert_eq!(texts.len(), 2);
    assert!(
        texts[1].starts_with("⏰ Still open, 29 minutes left"),
        "{}",
        texts[1]
    );
}

#[test]
fn removing_the_checkpoint_file_withdraws_the_question() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path();
    asker(
        data,
        "deploy",
        &json!({"text": "Ship it?", "options": ["yes", "no"]}),
    );
    let engine = engine(data);
    let q = ask(&engine, data, "deploy", "v1.2");
    std::fs::remove_file(data.join(format!("modules/deploy/pending/{}.json", q.run_id))).unwrap();
    sweep(&engine, q.timeline.asked_at).unwrap();
    let q = engine.ledger.question(&q.run_id).unwrap().unwrap();
    assert_eq!(q.closed.as_deref(), Some("withdrawn"));
    let texts = said(&engine, "deploy");
    assert!(texts
        .last()
        .unwrap()
        .starts_with("Withdrawn: its checkpoint file was removed"));
    assert!(engine.ledger.open_questions(None).unwrap().is_empty());
}
