//! End to end: questions (SPEC 3.3 and 7). The real `kai serve` against the fake Bot API, with
//! modules that pause, record every context they are handed (`contexts.jsonl`) and leave one
//! visible side effect per step (`effects.log`): every answer route resumes the paused run once,
//! the first answer wins, crashes neither lose nor repeat a question or an answer, questions
//! expire (reminder, default, `expired`), a chain of two questions ends `done`, and fifty
//! questions open at once are each resumed with their own answer.

mod daemon_support;
mod tg_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use daemon_support::*;
use serde_json::{json, Value};
use tg_support::*;

const ADMIN: &str = "an-admin-token-for-the-questions-tests-0123456789";

/// The owner as kai names them in answers.
const OLIVE: &str = "@olive";

/// A module that asks `settings.questions` one after the other. Each run appends its context
/// to `contexts.jsonl` and one line to `effects.log`: `step1 <entity>` on the first run,
/// `stepN <entity> <answer>` on the resume that follows question N-1. It pauses while a
/// question is left, and ends `done` after the last answer.
const ASKER: &str = r#"#!/usr/bin/env python3
import json, os, sys
raw = sys.stdin.read()
ctx = json.loads(raw)
d = os.environ["KAI_MODULE_DIR"]
with open(os.path.join(d, "contexts.jsonl"), "a") as f:
    f.write(json.dumps(ctx) + "\n")
questions = ctx["settings"]["questions"]
entity = ctx["entity"]
resume = ctx.get("resume")
if resume is None:
    step = 1
    line = "step1 %s" % entity
else:
    step = resume["checkpoint"]["step"] + 1
    line = "step%d %s %s" % (step, entity, resume["answer"])
with open(os.path.join(d, "effects.log"), "a") as f:
    f.write(line + "\n")
if step <= len(questions):
    print(json.dumps({
        "status": "paused",
        "summary": "asked question %d about %s" % (step, entity),
        "question": questions[step - 1],
        "checkpoint": {"step": step, "entity": entity},
        "state": {"last": entity},
    }))
else:
    print(json.dumps({"status": "done", "summary": "done with %s" % entity}))
"#;

/// A question as it stands in a module's topic.
#[derive(Debug, Clone)]
struct Q {
    message_id: i64,
    run_id: String,
    entity: String,
    options: Vec<String>,
}

/// A forum-backed daemon with an admin token and one asker per `(name, questions)`, started.
fn daemon(modules: &[(&str, Value)]) -> Tg {
    let mut t = Tg::new(true);
    t.kaid.set_env("KAI_API_TOKEN", ADMIN);
    for (name, questions) in modules {
        asker(&t, name, questions);
    }
    t.kaid.start();
    t
}

fn asker(t: &Tg, name: &str, questions: &Value) {
    t.kaid.write_module(
        name,
        &format!(
            "notify: none\nsettings: {}\n",
            json!({ "questions": questions })
        ),
        ASKER,
    );
}

fn bearer() -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {ADMIN}"))]
}

/// `POST /api/modules/{module}/invoke` for `entity`; returns the run id.
fn invoke(t: &Tg, module: &str, entity: &str) -> String {
    let body = json!({ "entity": entity }).to_string();
    let r = t.kaid.post(
        &format!("/api/modules/{module}/invoke"),
        &bearer(),
        body.as_bytes(),
    );
    if r.status != 202 {
        t.fail(format!("invoke {module} {entity}: {r}"));
    }
    match r.json()["run_id"].as_str() {
        Some(id) => id.to_owned(),
        None => t.fail(format!("invoke {module} {entity}: no run id in {r}")),
    }
}

/// `POST /api/pending/{run_id}/answer`.
fn api_answer(t: &Tg, run_id: &str, answer: &str) -> Response {
    let body = json!({ "answer": answer }).to_string();
    t.kaid.post(
        &format!("/api/pending/{run_id}/answer"),
        &bearer(),
        body.as_bytes(),
    )
}

/// Questions with buttons in the module's topic (an answered one has lost its buttons).
fn open_in_topic(t: &Tg, module: &str) -> Vec<Q> {
    t.in_topic(module)
        .into_iter()
        .filter_map(|m| {
            let rows = m.reply_markup.as_ref()?["inline_keyboard"]
                .as_array()?
                .clone();
            let buttons: Vec<&Value> = rows.iter().flat_map(|r| r.as_array()).flatten().collect();
            let data = buttons.first()?["callback_data"].as_str()?;
            let run_id = data.strip_prefix("q:")?.rsplit_once(':')?.0.to_owned();
            let entity = m
                .text
                .lines()
                .next()?
                .strip_prefix("❓ ")?
                .trim()
                .to_owned();
            let options = buttons
                .iter()
                .filter_map(|b| b["text"].as_str().map(str::to_owned))
                .collect();
            Some(Q {
                message_id: m.message_id,
                run_id,
                entity,
                options,
            })
        })
        .collect()
}

/// Waits for the question (with buttons) about `entity` in the module's topic.
#[track_caller]
fn wait_question(t: &Tg, module: &str, entity: &str) -> Q {
    t.wait(&format!("the question of {module} about {entity}"), |t| {
        open_in_topic(t, module).iter().any(|q| q.entity == entity)
    });
    let found: Vec<Q> = open_in_topic(t, module)
        .into_iter()
        .filter(|q| q.entity == entity)
        .collect();
    if found.len() != 1 {
        t.fail(format!("one question about {entity} expected: {found:?}"));
    }
    found[0].clone()
}

/// The message of a question without options (found by its first line and text).
#[track_caller]
fn wait_plain_question(t: &Tg, module: &str, entity: &str, text: &str) -> i64 {
    let head = format!("❓ {entity}\n{text}\n");
    t.wait(&format!("the question {text:?} about {entity}"), |t| {
        t.in_topic(module).iter().any(|m| m.text.starts_with(&head))
    });
    let found: Vec<i64> = t
        .in_topic(module)
        .iter()
        .filter(|m| m.text.starts_with(&head))
        .map(|m| m.message_id)
        .collect();
    if found.len() != 1 {
        t.fail(format!("one message {head:?} expected, found {found:?}"));
    }
    found[0]
}

/// `kai pending --json`.
fn pending(t: &Tg) -> Vec<Value> {
    match t.kaid.kai_json(&["pending", "--json"]) {
        Value::Array(v) => v,
        other => t.fail(format!("kai pending --json printed {other}")),
    }
}

/// Every context the module was handed, in order (complete lines only).
fn contexts(t: &Tg, module: &str) -> Vec<Value> {
    let path = t.kaid.module_dir(module).join("contexts.jsonl");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| t.fail(format!("{module}: a context is not JSON ({e}): {l}")))
        })
        .collect()
}

/// The resume contexts of the module.
fn resumes(t: &Tg, module: &str) -> Vec<Value> {
    contexts(t, module)
        .into_iter()
        .filter(|c| c["trigger"]["type"] == "resume")
        .collect()
}

/// The resumes of one paused run.
fn resumes_of(t: &Tg, module: &str, run_id: &str) -> Vec<Value> {
    resumes(t, module)
        .into_iter()
        .filter(|c| c["trigger"]["payload"]["run_id"] == run_id)
        .collect()
}

/// Waits for the resume of `run_id`; fails unless it is one, with `answer` for `entity`.
#[track_caller]
fn wait_resume(t: &Tg, module: &str, run_id: &str, entity: &str, answer: &str) -> Value {
    t.wait(&format!("{module} resumes {run_id} with {answer:?}"), |t| {
        !resumes_of(t, module, run_id).is_empty()
    });
    let got = resumes_of(t, module, run_id);
    if got.len() != 1 {
        t.fail(format!("{run_id} resumed {} times", got.len()));
    }
    let c = got[0].clone();
    if c["entity"] != entity || c["resume"]["answer"] != answer {
        t.fail(format!(
            "{run_id} should resume for {entity} with {answer:?}: {c}"
        ));
    }
    if c["resume"]["checkpoint"]["entity"] != entity {
        t.fail(format!(
            "the checkpoint is not the one {run_id} returned: {c}"
        ));
    }
    c
}

fn effects(t: &Tg, module: &str) -> Vec<String> {
    std::fs::read_to_string(t.kaid.module_dir(module).join("effects.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn checkpoint_file(t: &Tg, module: &str, run_id: &str) -> std::path::PathBuf {
    t.kaid
        .module_dir(module)
        .join("pending")
        .join(format!("{run_id}.json"))
}

/// Waits until the question message shows the answer and has no buttons left.
#[track_caller]
fn wait_answered_message(t: &Tg, message_id: i64, answer: &str, by: &str) {
    let shown = format!("✅ \"{answer}\" ({by})");
    t.wait(&format!("message {message_id} shows {shown}"), |t| {
        t.tg.messages(FORUM).iter().any(|m| {
            m.message_id == message_id
                && m.edited
                && m.text.ends_with(&shown)
                && m.reply_markup.is_none()
        })
    });
}

/// Bot messages in the module's topic starting with `prefix`.
fn said(t: &Tg, module: &str, prefix: &str) -> Vec<fake_telegram::SentMessage> {
    t.in_topic(module)
        .into_iter()
        .filter(|m| m.text.starts_with(prefix))
        .collect()
}

/// Lets the daemon run a while (longer than its one-second pump and sweep), so that anything
/// it would do wrongly after the fact has the time to happen.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

fn deploy_question() -> Value {
    json!([{ "text": "Deploy?", "options": ["yes", "no"], "expires": "3d", "default": "no" }])
}

#[test]
fn a_button_a_reply_and_text_in_the_topic_each_resume_the_run() {
    let t = daemon(&[("deploy", deploy_question())]);
    let m = "deploy";

    // A button press.
    let run1 = invoke(&t, m, "e-1");
    let q1 = wait_question(&t, m, "e-1");
    if q1.run_id != run1 || q1.options != ["yes", "no"] {
        t.fail(format!("the question of {run1}: {q1:?}"));
    }
    let asked = t
        .in_topic(m)
        .into_iter()
        .find(|x| x.message_id == q1.message_id)
        .map(|x| x.text)
        .unwrap_or_default();
    if !asked.starts_with("❓ e-1\nDeploy?\n\nOpen for ") {
        t.fail(format!("the question text: {asked:?}"));
    }
    if !checkpoint_file(&t, m, &run1).exists() {
        t.fail("the checkpoint is written before the question is sent");
    }
    t.tg.press_button(FORUM, q1.message_id, &t.owner, &format!("q:{run1}:1"));
    let c = wait_resume(&t, m, &run1, "e-1", "no");
    if c["resume"]["answered_by"] != OLIVE
        || c["resume"]["question"]["text"] != "Deploy?"
        || c["resume"]["original_trigger"]["type"] != "invoke"
    {
        t.fail(format!("the resume context of a button press: {c}"));
    }
    wait_answered_message(&t, q1.message_id, "no", OLIVE);
    t.wait("the button press is acknowledged", |t| {
        t.tg.callback_answers().iter().any(|a| a["text"] == "✅ no")
    });
    if checkpoint_file(&t, m, &run1).exists() {
        t.fail("an answered question's checkpoint is removed");
    }
    // A second press is told who was first, and resumes nothing.
    t.tg.press_button(FORUM, q1.message_id, &t.owner, &format!("q:{run1}:0"));
    t.wait("the late press gets an alert", |t| {
        t.tg.callback_answers().iter().any(|a| {
            a["text"].as_str().is_some_and(|s| {
                s.starts_with("Already answered by @olive at ") && s.ends_with(": \"no\"")
            }) && a["show_alert"] == true
        })
    });

    // A reply to the question message.
    let run2 = invoke(&t, m, "e-2");
    let q2 = wait_question(&t, m, "e-2");
    let thread = t.topic_of(m).unwrap();
    t.owner_says(FORUM, "yes, go", Some(thread), Some(q2.message_id));
    wait_resume(&t, m, &run2, "e-2", "yes, go");
    wait_answered_message(&t, q2.message_id, "yes, go", OLIVE);
    // A late reply is told who was first.
    t.owner_says(FORUM, "no, stop", Some(thread), Some(q2.message_id));
    t.wait("the late reply is told", |t| {
        said(t, m, "Already answered by @olive at ")
            .iter()
            .any(|x| x.text.ends_with(": \"yes, go\""))
    });

    // Plain text in the topic, one question open there.
    let run3 = invoke(&t, m, "e-3");
    let q3 = wait_question(&t, m, "e-3");
    t.owner_says(FORUM, "ship it", Some(thread), None);
    wait_resume(&t, m, &run3, "e-3", "ship it");
    wait_answered_message(&t, q3.message_id, "ship it", OLIVE);

    // Plain text with two questions open: a clarifying message, no resume.
    let run4 = invoke(&t, m, "e-4");
    let run5 = invoke(&t, m, "e-5");
    let q4 = wait_question(&t, m, "e-4");
    wait_question(&t, m, "e-5");
    t.owner_says(FORUM, "maybe", Some(thread), None);
    t.wait("the clarifying message", |t| {
        !said(t, m, "2 questions are open here").is_empty()
    });
    let clarifying = said(&t, m, "2 questions are open here").remove(0).text;
    if !clarifying.contains(&run4) || !clarifying.contains(&run5) {
        t.fail(format!(
            "the clarifying message names both questions: {clarifying:?}"
        ));
    }
    settle();
    if resumes(&t, m).len() != 3 {
        t.fail("plain text with two questions open resumed something");
    }
    if open_in_topic(&t, m).len() != 2 {
        t.fail("both questions stay open");
    }
    // They are still answerable: a reply picks one.
    t.owner_says(FORUM, "later", Some(thread), Some(q4.message_id));
    wait_resume(&t, m, &run4, "e-4", "later");
    settle();

    let resumed: Vec<(String, String)> = resumed_answers(&t, m);
    let expected: Vec<(String, String)> = [
        ("e-1", "no"),
        ("e-2", "yes, go"),
        ("e-3", "ship it"),
        ("e-4", "later"),
    ]
    .iter()
    .map(|(e, a)| (e.to_string(), a.to_string()))
    .collect();
    if resumed != expected {
        t.fail(format!("resumes {resumed:?}, expected {expected:?}"));
    }
    let fx = effects(&t, m);
    let want = [
        "step1 e-1",
        "step2 e-1 no",
        "step1 e-2",
        "step2 e-2 yes, go",
        "step1 e-3",
        "step2 e-3 ship it",
        "step1 e-4",
        "step1 e-5",
        "step2 e-4 later",
    ];
    if fx != want {
        t.fail(format!("effects {fx:?}, expected {want:?}"));
    }
    let open = pending(&t);
    if open.len() != 1 || open[0]["run_id"] != run5.as_str() {
        t.fail(format!("only e-5's question is open: {open:?}"));
    }
}

#[test]
fn api_and_command_line_answers_resume_and_a_second_answer_is_refused() {
    let question = json!([{ "text": "Which version?", "expires": "3d" }]);
    let t = daemon(&[("ask", question)]);
    let m = "ask";

    // Through the API.
    let run1 = invoke(&t, m, "e-api");
    let msg1 = wait_plain_question(&t, m, "e-api", "Which version?");
    let listed = pending(&t);
    if listed.len() != 1
        || listed[0]["run_id"] != run1.as_str()
        || listed[0]["entity"] != "e-api"
        || listed[0]["module"] != m
    {
        t.fail(format!("kai pending --json: {listed:?}"));
    }
    let r = api_answer(&t, &run1, "1.2.3");
    if r.status != 200 || r.json()["answer"] != "1.2.3" || r.json()["resumes"] != true {
        t.fail(format!("the first API answer: {r}"));
    }
    let c = wait_resume(&t, m, &run1, "e-api", "1.2.3");
    if !c["resume"]["answered_by"]
        .as_str()
        .is_some_and(|s| s.starts_with("api"))
    {
        t.fail(format!("answered_by of an API answer: {c}"));
    }
    let r = api_answer(&t, &run1, "9.9.9");
    if r.status != 409
        || r.json()["code"] != "already_answered"
        || !r.json()["error"]
            .as_str()
            .is_some_and(|s| s.starts_with("Already answered by api") && s.ends_with(": \"1.2.3\""))
    {
        t.fail(format!("a second API answer: {r}"));
    }
    let out = t.kaid.kai(&["answer", &run1, "9.9.9"]);
    if out.status.code() != Some(1)
        || !String::from_utf8_lossy(&out.stderr).contains("Already answered by api")
    {
        t.fail("kai answer after an API answer exits 1 saying who was first");
    }
    wait_answered_message(
        &t,
        msg1,
        "1.2.3",
        c["resume"]["answered_by"].as_str().unwrap(),
    );

    // Through the command line.
    let run2 = invoke(&t, m, "e-cli");
    let msg2 = wait_plain_question(&t, m, "e-cli", "Which version?");
    let out = t.kaid.kai(&["answer", &run2, "4.5.6"]);
    if !out.status.success() {
        t.fail("the first kai answer succeeds");
    }
    let c = wait_resume(&t, m, &run2, "e-cli", "4.5.6");
    let by = c["resume"]["answered_by"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if !by.starts_with("cli") {
        t.fail(format!("answered_by of a command-line answer: {c}"));
    }
    let out = t.kaid.kai(&["answer", &run2, "7.7.7"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(1)
        || !stderr.contains(&format!("Already answered by {by} at "))
        || !stderr.contains("\"4.5.6\"")
    {
        t.fail(format!("a second kai answer: {:?} {stderr:?}", out.status));
    }
    let r = api_answer(&t, &run2, "7.7.7");
    if r.status != 409 || r.json()["code"] != "already_answered" {
        t.fail(format!("an API answer after kai answer: {r}"));
    }
    // The daemon sends the edit the command line queued.
    wait_answered_message(&t, msg2, "4.5.6", &by);
    // And a Telegram reply after it is told too.
    let thread = t.topic_of(m).unwrap();
    t.owner_says(FORUM, "8.8.8", Some(thread), Some(msg2));
    t.wait("the late Telegram reply is told", |t| {
        said(t, m, &format!("Already answered by {by} at "))
            .iter()
            .any(|x| x.text.ends_with(": \"4.5.6\""))
    });

    // Unknown questions.
    let r = api_answer(&t, "r_01JD0000000000000000000000", "x");
    if r.status != 404 || r.json()["code"] != "unknown_question" {
        t.fail(format!("an answer to no question: {r}"));
    }
    if t.kaid
        .kai(&["answer", "r_01JD0000000000000000000000", "x"])
        .status
        .code()
        != Some(2)
    {
        t.fail("kai answer to no question exits 2");
    }

    settle();
    let got: Vec<(String, String)> = resumed_answers(&t, m);
    if got
        != [
            ("e-api".to_owned(), "1.2.3".to_owned()),
            ("e-cli".to_owned(), "4.5.6".to_owned()),
        ]
    {
        t.fail(format!("resumes: {got:?}"));
    }
    let fx = effects(&t, m);
    if fx
        != [
            "step1 e-api",
            "step2 e-api 1.2.3",
            "step1 e-cli",
            "step2 e-cli 4.5.6",
        ]
    {
        t.fail(format!("effects: {fx:?}"));
    }
    if !pending(&t).is_empty() {
        t.fail("no question is left open");
    }
}

/// Whether the process is gone (or a zombie waiting to be reaped).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn question_sends(t: &Tg) -> usize {
    t.tg.calls()
        .iter()
        .filter(|c| {
            c.method == "sendMessage"
                && c.params["text"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("❓ "))
        })
        .count()
}

#[test]
fn a_crash_after_the_checkpoint_sends_the_question_once_after_restart() {
    let mut t = Tg::new(true);
    t.kaid.set_env("KAI_API_TOKEN", ADMIN);
    asker(&t, "deploy", &deploy_question());
    t.kaid.set_env("KAI_CRASH_AT", "after-journal");
    t.kaid.start();
    let pid = t.kaid.pid().unwrap();
    // The invoke may or may not be answered before kai kills itself.
    let body = json!({ "entity": "e-crash" }).to_string();
    let _ = post(
        t.kaid.port(),
        "/api/modules/deploy/invoke",
        &bearer(),
        body.as_bytes(),
    );
    if !poll(PATIENCE, || dead(pid)) {
        t.fail("kai did not kill itself at after-journal");
    }
    t.kaid.kill();
    let journal = t.kaid.journal("deploy");
    if journal.len() != 1 || journal[0]["status"] != "paused" {
        t.fail(format!(
            "the paused entry is written before the crash: {journal:?}"
        ));
    }
    let run = journal[0]["run_id"].as_str().unwrap().to_owned();
    if !checkpoint_file(&t, "deploy", &run).exists() {
        t.fail("the checkpoint is written before the crash");
    }
    if question_sends(&t) != 0 {
        t.fail("the question went out before its run was closed");
    }

    t.kaid.remove_env("KAI_CRASH_AT");
    t.kaid.start();
    let q = wait_question(&t, "deploy", "e-crash");
    if q.run_id != run {
        t.fail(format!("the question is {run}'s: {q:?}"));
    }
    settle();
    if question_sends(&t) != 1 || said(&t, "deploy", "❓ ").len() != 1 {
        t.fail("the question is sent exactly once after the restart");
    }
    // And it works.
    t.tg.press_button(FORUM, q.message_id, &t.owner, &format!("q:{run}:0"));
    wait_resume(&t, "deploy", &run, "e-crash", "yes");
    settle();
    if effects(&t, "deploy") != ["step1 e-crash", "step2 e-crash yes"] {
        t.fail(format!("effects: {:?}", effects(&t, "deploy")));
    }
    let statuses: Vec<Value> = t
        .kaid
        .journal("deploy")
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    if statuses != [json!("paused"), json!("done")] {
        t.fail(format!("journal statuses {statuses:?}"));
    }
}

#[test]
fn a_button_pressed_while_kai_is_down_resumes_once_after_restart() {
    let mut t = daemon(&[("deploy", deploy_question())]);
    let run = invoke(&t, "deploy", "e-down");
    let q = wait_question(&t, "deploy", "e-down");
    t.kaid.kill();
    t.tg.press_button(FORUM, q.message_id, &t.owner, &format!("q:{run}:0"));
    if t.tg.pending_updates() == 0 {
        t.fail("the press waits in the fake's update queue");
    }
    std::thread::sleep(Duration::from_secs(1));
    if !resumes(&t, "deploy").is_empty() {
        t.fail("nothing resumes while kai is down");
    }
    t.kaid.start();
    wait_resume(&t, "deploy", &run, "e-down", "yes");
    wait_answered_message(&t, q.message_id, "yes", OLIVE);
    settle();
    if resumes(&t, "deploy").len() != 1
        || effects(&t, "deploy") != ["step1 e-down", "step2 e-down yes"]
    {
        t.fail(format!("one resume: {:?}", effects(&t, "deploy")));
    }
    if !said(&t, "deploy", "Already answered").is_empty() {
        t.fail("the press is handled once");
    }
}

#[test]
fn an_unanswered_question_is_reminded_then_goes_on_with_its_default() {
    let question =
        json!([{ "text": "Deploy?", "options": ["yes", "no"], "expires": "8s", "default": "no" }]);
    let t = daemon(&[("soon", question)]);
    let run = invoke(&t, "soon", "e-late");
    let q = wait_question(&t, "soon", "e-late");
    let c = wait_resume(&t, "soon", &run, "e-late", "no");
    if c["resume"]["answered_by"] != "nobody (expired, default)" {
        t.fail(format!("the resume of a default: {c}"));
    }
    let reminders = said(&t, "soon", "⏰ Still open");
    t.wait("the expiry message", |t| {
        !said(t, "soon", "⌛ No answer in time: going on with \"no\"").is_empty()
    });
    let expired = said(&t, "soon", "⌛ No answer in time: going on with \"no\"");
    if reminders.len() != 1 || expired.len() != 1 {
        t.fail("one reminder, then one expiry message");
    }
    if reminders[0].message_id <= q.message_id || reminders[0].message_id >= expired[0].message_id {
        t.fail("the reminder comes between the question and its expiry");
    }
    if !reminders[0].text.contains("e-late") || !expired[0].text.contains("e-late") {
        t.fail("the reminder and the expiry name the entity");
    }
    wait_answered_message(&t, q.message_id, "no", "nobody (expired, default)");
    settle();
    if effects(&t, "soon") != ["step1 e-late", "step2 e-late no"] {
        t.fail(format!("effects: {:?}", effects(&t, "soon")));
    }
    if checkpoint_file(&t, "soon", &run).exists() || !pending(&t).is_empty() {
        t.fail("the expired question is closed");
    }
}

#[test]
fn without_a_default_an_unanswered_question_is_closed_as_expired() {
    let question = json!([{ "text": "Merge?", "options": ["yes", "no"], "expires": "4s" }]);
    let t = daemon(&[("nodefault", question)]);
    let m = "nodefault";
    let run = invoke(&t, m, "e-gone");
    wait_question(&t, m, "e-gone");
    t.wait("the expiry message", |t| {
        !said(t, m, "⌛ No answer in time, and no default").is_empty()
    });
    let journal = t.kaid.wait_journal(m, 2);
    let statuses: Vec<&str> = journal
        .iter()
        .map(|e| e["status"].as_str().unwrap_or(""))
        .collect();
    if statuses != ["paused", "expired"]
        || journal[1]["entity"] != "e-gone"
        || journal[1]["run_id"] == run.as_str()
    {
        t.fail(format!("journal: {journal:?}"));
    }
    if !said(&t, m, "⌛ No answer in time, and no default")[0]
        .text
        .contains("e-gone")
    {
        t.fail("the expiry message names the entity");
    }
    settle();
    if contexts(&t, m).len() != 1 {
        t.fail("an expired question starts no process");
    }
    if checkpoint_file(&t, m, &run).exists() || !pending(&t).is_empty() {
        t.fail("the expired question is closed");
    }
    let r = api_answer(&t, &run, "yes");
    if r.status != 409 || r.json()["closed"] != "expired" {
        t.fail(format!("an answer after expiry: {r}"));
    }
    settle();
    if contexts(&t, m).len() != 1 || t.kaid.journal(m).len() != 2 {
        t.fail("a late answer to an expired question does nothing");
    }
}

#[test]
fn a_chain_of_two_questions_ends_done_with_each_effect_once() {
    let questions = json!([
        { "text": "Deploy to staging?", "options": ["staging", "skip"], "expires": "1d" },
        { "text": "Which tag?", "expires": "1d" }
    ]);
    let t = daemon(&[("chain", questions)]);
    let m = "chain";
    let run1 = invoke(&t, m, "e-chain");
    let q1 = wait_question(&t, m, "e-chain");
    t.tg.press_button(FORUM, q1.message_id, &t.owner, &format!("q:{run1}:0"));
    let c1 = wait_resume(&t, m, &run1, "e-chain", "staging");
    let run2 = c1["run_id"].as_str().unwrap().to_owned();
    let msg2 = wait_plain_question(&t, m, "e-chain", "Which tag?");
    let open = pending(&t);
    if open.len() != 1 || open[0]["run_id"] != run2.as_str() {
        t.fail(format!(
            "the second question is the resume's ({run2}): {open:?}"
        ));
    }
    let thread = t.topic_of(m).unwrap();
    t.owner_says(FORUM, "v2.1", Some(thread), Some(msg2));
    let c2 = wait_resume(&t, m, &run2, "e-chain", "v2.1");
    if c2["resume"]["checkpoint"]["step"] != 2
        || c2["resume"]["question"]["text"] != "Which tag?"
        || c2["resume"]["original_trigger"]["type"] != "invoke"
        || c2["resume"]["original_trigger"] != c1["resume"]["original_trigger"]
    {
        t.fail(format!("the second resume keeps the chain's origin: {c2}"));
    }
    t.kaid.wait_journal(m, 3);
    settle();
    let journal = t.kaid.journal(m);
    let statuses: Vec<&str> = journal
        .iter()
        .map(|e| e["status"].as_str().unwrap_or(""))
        .collect();
    if statuses != ["paused", "paused", "done"] || journal.iter().any(|e| e["entity"] != "e-chain")
    {
        t.fail(format!("journal: {journal:?}"));
    }
    let fx = effects(&t, m);
    if fx
        != [
            "step1 e-chain",
            "step2 e-chain staging",
            "step3 e-chain v2.1",
        ]
    {
        t.fail(format!("effects: {fx:?}"));
    }
    let runs = t.kaid.runs();
    if runs.len() != 3 || runs.iter().any(|r| r.phase != "finished") {
        t.fail(format!("three finished runs: {runs:?}"));
    }
    if contexts(&t, m).len() != 3 || !pending(&t).is_empty() {
        t.fail("three runs, no question left");
    }
}

#[test]
fn fifty_questions_across_five_modules_answered_by_random_routes() {
    const MODULES: [&str; 5] = ["q-alpha", "q-beta", "q-gamma", "q-delta", "q-eps"];
    let options = ["red", "green", "blue"];
    let question = json!([{ "text": "Which colour?", "options": options, "expires": "1d" }]);
    let modules: Vec<(&str, Value)> = MODULES.iter().map(|m| (*m, question.clone())).collect();
    let t = daemon(&modules);
    let mut rng = Rng::from_time();
    t.kaid.note(format!("seed {}", rng.seed()));
    println!("seed {}", rng.seed());

    // Fifty questions, ten per module.
    let mut runs: BTreeMap<String, (String, String)> = BTreeMap::new();
    for i in 0..50 {
        let module = MODULES[i % 5];
        let entity = format!("e-{i}");
        let run = invoke(&t, module, &entity);
        runs.insert(run, (module.to_owned(), entity));
    }
    if !poll(Duration::from_secs(120), || {
        MODULES
            .iter()
            .map(|m| open_in_topic(&t, m).len())
            .sum::<usize>()
            == 50
    }) {
        t.fail("fifty questions should be open in the topics");
    }
    let mut questions: Vec<(String, Q)> = MODULES
        .iter()
        .flat_map(|m| open_in_topic(&t, m).into_iter().map(|q| (m.to_string(), q)))
        .collect();
    let asked: BTreeSet<&String> = questions.iter().map(|(_, q)| &q.run_id).collect();
    if asked != runs.keys().collect::<BTreeSet<_>>() {
        t.fail("the fifty questions are the fifty invoked runs'");
    }
    if pending(&t).len() != 50 {
        t.fail("kai pending lists fifty questions");
    }

    // Random order, random routes.
    for i in (1..questions.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        questions.swap(i, j);
    }
    let mut expected: BTreeMap<String, (String, String, String, &str)> = BTreeMap::new();
    for (module, q) in &questions {
        let (_, entity) = &runs[&q.run_id];
        if &q.entity != entity {
            t.fail(format!("question {q:?} should be about {entity}"));
        }
        let route = ["button", "reply", "api", "cli", "command"][rng.range(0, 5) as usize];
        let answer = match route {
            "button" => q.options[rng.range(0, 3) as usize].clone(),
            _ => format!("{route}-{entity}-{}", rng.range(0, 1000)),
        };
        t.kaid.note(format!(
            "{} ({module} {entity}) by {route}: {answer}",
            q.run_id
        ));
        let thread = t.topic_of(module).unwrap();
        match route {
            "button" => {
                let index = q.options.iter().position(|o| *o == answer).unwrap();
                t.tg.press_button(
                    FORUM,
                    q.message_id,
                    &t.owner,
                    &format!("q:{}:{index}", q.run_id),
                );
            }
            "reply" => {
                t.owner_says(FORUM, &answer, Some(thread), Some(q.message_id));
            }
            "api" => {
                let r = api_answer(&t, &q.run_id, &answer);
                if r.status != 200 {
                    t.fail(format!("API answer to {}: {r}", q.run_id));
                }
            }
            "cli" => {
                if !t.kaid.kai(&["answer", &q.run_id, &answer]).status.success() {
                    t.fail(format!("kai answer {} failed", q.run_id));
                }
            }
            _ => {
                let text = format!("/module {module} answer {} {answer}", q.run_id);
                t.owner_says(FORUM, &text, Some(thread), None);
            }
        }
        expected.insert(
            q.run_id.clone(),
            (module.clone(), entity.clone(), answer, route),
        );
    }

    // Fifty resumes, each with its own answer.
    let total = || MODULES.iter().map(|m| resumes(&t, m).len()).sum::<usize>();
    if !poll(Duration::from_secs(120), || total() >= 50) {
        t.fail(format!("fifty resumes expected, {} came", total()));
    }
    if !poll(Duration::from_secs(60), || {
        MODULES.iter().all(|m| open_in_topic(&t, m).is_empty())
            && questions.iter().all(|(_, q)| {
                t.tg.messages(FORUM)
                    .iter()
                    .any(|x| x.message_id == q.message_id && x.text.contains("\n\n✅ \""))
            })
    }) {
        t.fail("every question message shows its answer and has no buttons left");
    }
    settle();
    for module in MODULES {
        let all = contexts(&t, module);
        if all.len() != 20 {
            t.fail(format!(
                "{module}: 10 runs and 10 resumes, got {} contexts",
                all.len()
            ));
        }
        let mut want_fx: Vec<String> = Vec::new();
        for (run, (m, entity, answer, route)) in &expected {
            if m != module {
                continue;
            }
            let got = resumes_of(&t, module, run);
            if got.len() != 1 {
                t.fail(format!(
                    "{run} ({module} {entity}) resumed {} times",
                    got.len()
                ));
            }
            let c = &got[0];
            if c["entity"] != entity.as_str()
                || c["resume"]["answer"] != answer.as_str()
                || c["resume"]["checkpoint"]["entity"] != entity.as_str()
            {
                t.fail(format!(
                    "{run} should resume {entity} with {answer:?} ({route}): {c}"
                ));
            }
            let by = c["resume"]["answered_by"].as_str().unwrap_or_default();
            let by_ok = match *route {
                "api" => by.starts_with("api"),
                "cli" => by.starts_with("cli"),
                _ => by == OLIVE,
            };
            if !by_ok {
                t.fail(format!("{run} answered by {by:?} via {route}"));
            }
            want_fx.push(format!("step1 {entity}"));
            want_fx.push(format!("step2 {entity} {answer}"));
        }
        let mut got_fx = effects(&t, module);
        got_fx.sort();
        want_fx.sort();
        if got_fx != want_fx {
            t.fail(format!(
                "{module}: effects {got_fx:?}, expected {want_fx:?}"
            ));
        }
        let journal = t.kaid.journal(module);
        let paused = journal.iter().filter(|e| e["status"] == "paused").count();
        let done = journal.iter().filter(|e| e["status"] == "done").count();
        if journal.len() != 20 || paused != 10 || done != 10 {
            t.fail(format!("{module}: 10 paused and 10 done entries expected"));
        }
        let left = std::fs::read_dir(t.kaid.module_dir(module).join("pending"))
            .map(|d| d.count())
            .unwrap_or(0);
        if left != 0 {
            t.fail(format!("{module}: {left} checkpoints left"));
        }
    }
    let all_runs = t.kaid.runs();
    if all_runs.len() != 100 || all_runs.iter().any(|r| r.phase != "finished") {
        t.fail(format!(
            "100 finished runs expected, {} runs",
            all_runs.len()
        ));
    }
    for prefix in [
        "Already answered",
        "No question",
        "An answer needs",
        "This button",
        "Unknown",
    ] {
        let wrong: Vec<String> =
            t.tg.messages(FORUM)
                .into_iter()
                .filter(|m| m.text.starts_with(prefix) || m.text.contains("questions are open"))
                .map(|m| m.text)
                .collect();
        if !wrong.is_empty() {
            t.fail(format!("nothing else is said: {wrong:?}"));
        }
    }
    if !pending(&t).is_empty() {
        t.fail("no question is left open");
    }
}

#[test]
fn a_late_module_answer_command_is_told_who_was_first() {
    let t = daemon(&[("deploy", deploy_question())]);
    let m = "deploy";
    let run1 = invoke(&t, m, "e-1");
    let q1 = wait_question(&t, m, "e-1");
    let run2 = invoke(&t, m, "e-2");
    wait_question(&t, m, "e-2");
    let thread = t.topic_of(m).unwrap();
    t.owner_says(
        FORUM,
        &format!("/module {m} answer {run1} yes"),
        Some(thread),
        None,
    );
    wait_resume(&t, m, &run1, "e-1", "yes");
    wait_answered_message(&t, q1.message_id, "yes", OLIVE);
    // The same command again names a question answered already: it is told so, and the
    // other open question is left alone.
    t.owner_says(
        FORUM,
        &format!("/module {m} answer {run1} no"),
        Some(thread),
        None,
    );
    t.wait("the late command is told who was first", |t| {
        !said(t, m, "Already answered by @olive at ").is_empty()
            || !resumes_of(t, m, &run2).is_empty()
    });
    settle();
    if !resumes_of(&t, m, &run2).is_empty() {
        let c = &resumes_of(&t, m, &run2)[0];
        t.fail(format!(
            "a late `/module {m} answer {run1} no` answered the other open question {run2} with {}",
            c["resume"]["answer"]
        ));
    }
    if said(&t, m, "Already answered by @olive at ").len() != 1 {
        t.fail("the late command is told once");
    }
}

/// `(entity, answer)` of every resume `module` received, in order.
fn resumed_answers(t: &Tg, module: &str) -> Vec<(String, String)> {
    resumes(t, module)
        .iter()
        .map(|c| {
            (
                c["entity"].as_str().unwrap_or_default().to_owned(),
                c["resume"]["answer"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_answer_while_the_checkpoint_is_being_written_is_not_lost() {
    let mut t = Tg::new(true);
    t.kaid.set_env("KAI_API_TOKEN", ADMIN);
    asker(&t, "deploy", &deploy_question());
    // A foreground run dies with its outcome recorded and no file written yet.
    t.kaid.set_env("KAI_CRASH_AT", "before-journal");
    let out = t.kaid.kai(&["run", "deploy"]);
    if out.status.success() {
        t.fail("kai run should have been killed at before-journal");
    }
    t.kaid.remove_env("KAI_CRASH_AT");
    let run_id: String = t
        .kaid
        .db()
        .query_row(
            "SELECT run_id FROM runs WHERE module = 'deploy' AND phase = 'finishing'",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| t.fail(format!("no finishing run: {e}")));
    if checkpoint_file(&t, "deploy", &run_id).exists() {
        t.fail("no checkpoint file yet");
    }
    // The answer comes now: accepted, and kept until the run is closed.
    let out = t.kaid.kai(&["answer", &run_id, "yes"]);
    if out.status.code() != Some(0) {
        t.fail("the answer is accepted while the checkpoint is being written");
    }
    let queued: i64 = t
        .kaid
        .db()
        .query_row("SELECT COUNT(*) FROM deliveries", [], |r| r.get(0))
        .unwrap();
    if queued != 0 {
        t.fail("the resume waits for the paused run to be closed");
    }
    // The daemon's recovery writes the files and closes the run: the resume follows, once.
    t.kaid.start();
    wait_resume(&t, "deploy", &run_id, "invoke", "yes");
    settle();
    if resumes(&t, "deploy").len() != 1 || checkpoint_file(&t, "deploy", &run_id).exists() {
        t.fail("one resume, and the checkpoint file tidied away");
    }
}
