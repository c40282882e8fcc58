//! End to end: the real `kai serve` against the fake Bot API (SPEC 6): a topic per module, the
//! durable outbox (429 storms, a kill with messages waiting, long texts, formatting refused),
//! the chat commands, and strangers.

mod daemon_support;
mod tg_support;

use std::time::Duration;

use daemon_support::*;
use fake_telegram::ApiError;
use tg_support::*;

/// A module that announces every outcome (`notify: all`) and says `summary`.
fn announcer(tg: &Tg, name: &str, summary: &str) {
    tg.kaid.write_module(name, "notify: all\n", &says(summary));
}

/// `kai run NAME`: one run now; its announcement goes to the outbox, the daemon sends it.
fn run(tg: &Tg, name: &str) {
    let out = tg.kaid.kai(&["run", name]);
    if !out.status.success() {
        tg.fail(format!("kai run {name} failed"));
    }
}

#[test]
fn two_modules_talk_in_two_topics_created_once_each() {
    let mut tg = Tg::new(true);
    announcer(&tg, "alpha", "alpha did it");
    announcer(&tg, "beta", "beta did it");
    tg.kaid.start();
    run(&tg, "alpha");
    run(&tg, "beta");
    run(&tg, "alpha");
    tg.wait("three announcements", |t| t.tg.messages(FORUM).len() >= 3);
    let topics = tg.tg.topics(FORUM);
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    if names != ["alpha", "beta"] {
        tg.fail(format!("topics {names:?}, expected alpha and beta"));
    }
    if tg.calls_of("createForumTopic") != 2 {
        tg.fail("each topic is created once");
    }
    let alpha = tg.in_topic("alpha");
    let beta = tg.in_topic("beta");
    if alpha.len() != 2 || beta.len() != 1 {
        tg.fail(format!(
            "alpha has {} messages, beta {}",
            alpha.len(),
            beta.len()
        ));
    }
    if !alpha.iter().all(|m| m.text.contains("alpha did it"))
        || !beta[0].text.contains("beta did it")
    {
        tg.fail("each module's messages are in its own topic");
    }
    // In a forum, a module's topic is its name: no prefix.
    if alpha.iter().any(|m| m.text.starts_with('[')) {
        tg.fail("no [module] prefix inside a topic");
    }
}

#[test]
fn a_chat_that_is_not_a_forum_gets_prefixed_messages() {
    let mut tg = Tg::new(false);
    announcer(&tg, "alpha", "plain chat");
    tg.kaid.start();
    run(&tg, "alpha");
    let msgs = tg.wait_new(OWNER, 0, 1);
    if !msgs[0].text.starts_with("[alpha] ") || msgs[0].thread_id.is_some() {
        tg.fail(format!("expected a [alpha] prefix, got {:?}", msgs[0].text));
    }
    if tg.calls_of("createForumTopic") != 0 {
        tg.fail("no topic outside a forum");
    }
}

#[test]
fn a_deleted_topic_is_created_again() {
    let mut tg = Tg::new(true);
    announcer(&tg, "alpha", "hello");
    tg.kaid.start();
    run(&tg, "alpha");
    tg.wait("the first message", |t| t.in_topic("alpha").len() == 1);
    let first = tg.topic_of("alpha").unwrap();
    tg.tg.delete_topic(FORUM, first);
    run(&tg, "alpha");
    tg.wait("a new topic with the second message", |t| {
        t.topic_of("alpha").is_some_and(|id| id != first) && t.in_topic("alpha").len() == 1
    });
    if tg.calls_of("createForumTopic") != 2 || tg.tg.topics(FORUM).len() != 1 {
        tg.fail("the topic is created exactly once more");
    }
    let refused = tg
        .tg
        .calls()
        .iter()
        .filter(|c| c.method == "sendMessage" && c.error_code == Some(400))
        .count();
    if refused != 1 {
        tg.fail(format!("one send hit the deleted topic, saw {refused}"));
    }
}

#[test]
fn a_429_storm_delays_but_loses_and_duplicates_nothing() {
    let mut tg = Tg::new(true);
    announcer(&tg, "alpha", "note");
    tg.kaid.start();
    tg.tg
        .fail_next("sendMessage", 6, ApiError::too_many_requests(1));
    tg.tg.rate_limit(Some(2));
    for _ in 0..6 {
        run(&tg, "alpha");
    }
    tg.wait("six announcements", |t| t.in_topic("alpha").len() >= 6);
    tg.quiet(FORUM, Duration::from_millis(1500));
    let got = tg.in_topic("alpha").len();
    if got != 6 {
        tg.fail(format!("{got} messages arrived, expected exactly 6"));
    }
    let limited = tg
        .tg
        .calls()
        .iter()
        .filter(|c| c.error_code == Some(429))
        .count();
    if limited < 6 {
        tg.fail(format!(
            "the storm answered 429 {limited} times, expected at least 6"
        ));
    }
    if tg.kaid.log().contains(fake_telegram::TOKEN) {
        tg.fail("the bot token is in the log");
    }
}

#[test]
fn messages_in_the_outbox_survive_a_kill() {
    let mut tg = Tg::new(true);
    announcer(&tg, "alpha", "survivor");
    tg.kaid.start();
    // Telegram holds kai back for 4 s; kai is killed while three notes wait.
    tg.tg
        .fail_next("sendMessage", 1, ApiError::too_many_requests(4));
    for _ in 0..3 {
        run(&tg, "alpha");
    }
    tg.wait("the 429", |t| {
        t.tg.calls().iter().any(|c| c.error_code == Some(429))
    });
    tg.kaid.kill();
    if !tg.in_topic("alpha").is_empty() {
        tg.fail("nothing was sent before the kill");
    }
    tg.kaid.start();
    tg.wait("three notes after the restart", |t| {
        t.in_topic("alpha").len() >= 3
    });
    tg.quiet(FORUM, Duration::from_millis(1500));
    let texts: Vec<String> = tg.in_topic("alpha").into_iter().map(|m| m.text).collect();
    if texts.len() != 3 || !texts.iter().all(|t| t.contains("survivor")) {
        tg.fail(format!("expected three notes exactly once, got {texts:?}"));
    }
}

/// A module that posts `text` (from the file `note.txt` beside it) through the API with its run
/// token, in `format`.
const POSTER: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.request
sys.stdin.read()
here = os.path.dirname(os.path.abspath(__file__))
text = open(os.path.join(here, "note.txt")).read()
fmt = open(os.path.join(here, "format.txt")).read().strip()
body = {"text": text}
if fmt:
    body["format"] = fmt
req = urllib.request.Request(os.environ["KAI_API_URL"] + "/api/notify", data=json.dumps(body).encode(),
    headers={"Authorization": "Bearer " + os.environ["KAI_RUN_TOKEN"], "Content-Type": "application/json"})
urllib.request.urlopen(req).read()
print(json.dumps({"status": "done", "summary": "posted"}))
"#;

fn poster(tg: &Tg, text: &str, format: &str) {
    let dir = tg.kaid.write_module("poster", "notify: none\n", POSTER);
    std::fs::write(dir.join("note.txt"), text).unwrap();
    std::fs::write(dir.join("format.txt"), format).unwrap();
}

#[test]
fn a_ten_thousand_character_note_arrives_in_ordered_parts() {
    let mut tg = Tg::new(true);
    let text: String = (0..250)
        .map(|i| format!("line {i:03}: the module found something worth saying here\n"))
        .collect();
    assert!(text.chars().count() >= 10_000);
    poster(&tg, &text, "");
    tg.kaid.start();
    tg.invoke("poster", "long");
    tg.wait("the parts", |t| {
        let got: usize = t.in_topic("poster").iter().map(|m| m.text.len()).sum();
        got + 10 >= text.trim().len()
    });
    let parts = tg.in_topic("poster");
    if parts.len() < 3 || parts.iter().any(|m| m.text.chars().count() > 4096) {
        tg.fail(format!(
            "{} parts, each must be under the limit",
            parts.len()
        ));
    }
    let joined: Vec<String> = parts.iter().map(|m| m.text.clone()).collect();
    if joined.join("\n") != text.trim() {
        tg.fail("the parts, in order, are the text cut at line boundaries");
    }
}

#[test]
fn formatting_telegram_refuses_is_sent_as_plain_text() {
    let mut tg = Tg::new(true);
    poster(&tg, "<b>unclosed bold & friends", "html");
    tg.kaid.start();
    tg.invoke("poster", "html");
    tg.wait("the note", |t| !t.in_topic("poster").is_empty());
    let m = &tg.in_topic("poster")[0];
    if m.text != "<b>unclosed bold & friends" || m.parse_mode.is_some() {
        tg.fail(format!(
            "expected the raw text without parse_mode, got {m:?}"
        ));
    }
    let refused = tg.tg.calls().iter().any(|c| {
        c.method == "sendMessage" && c.error_code == Some(400) && c.params["parse_mode"] == "HTML"
    });
    if !refused {
        tg.fail("the HTML attempt came first");
    }
}

#[test]
fn the_module_list_is_pinned() {
    let mut tg = Tg::new(false);
    tg.kaid
        .write_module("alpha", "version: \"1.2.0\"\nnotify: none\n", &says("fine"));
    tg.kaid.write_module(
        "broken-one",
        "version: \"0.3.0\"\nnotify: none\n",
        "#!/bin/sh\ncat >/dev/null\nexit 3\n",
    );
    tg.kaid
        .write_module("quiet", "notify: none\n", &says("never ran"));
    for name in ["alpha", "alpha", "broken-one"] {
        let _ = tg.kaid.kai(&["run", name]);
    }
    tg.kaid.start();
    tg.owner_says(OWNER, "/module", None, None);
    let reply = tg.wait_new(OWNER, 0, 1).remove(0).text;
    let expected = [
        "Modules",
        "",
        "• alpha 1.2.0 — a module of the daemon tests",
        "  24h: 2 runs, 0 failed · last: invoke (done, just now)",
        "",
        "• broken-one 0.3.0 — a module of the daemon tests",
        "  24h: 1 run, 1 failed · last: invoke (error, just now)",
        "",
        "• echo 1.0.0 — Answers with what it was given and counts its runs; the smallest built-in module",
        "  24h: no runs",
        "",
        "• quiet 0.0.0 — a module of the daemon tests",
        "  24h: no runs",
    ]
    .join("\n");
    if reply != expected {
        tg.fail(format!("/module said:\n{reply}\n\nexpected:\n{expected}"));
    }
}

#[test]
fn commands_show_cards_switch_context_and_start_modules() {
    let mut tg = Tg::new(true);
    tg.kaid.write_module(
        "review",
        "notify: all\ntriggers:\n  - command: review\n",
        SAVE_CONTEXT,
    );
    tg.kaid.start();
    tg.owner_says(FORUM, "/review octo/repo#42", None, None);
    tg.wait("the run", |t| !t.kaid.journal("review").is_empty());
    let entry = &tg.kaid.journal("review")[0];
    let ctx = tg
        .kaid
        .saved_context("review", entry["run_id"].as_str().unwrap());
    if ctx["trigger"]["type"] != "command"
        || ctx["trigger"]["payload"]["args"] != "octo/repo#42"
        || ctx["entity"] != "octo/repo#42"
    {
        tg.fail(format!("the command's run: {ctx}"));
    }
    let seen = tg.tg.messages(FORUM).len();
    tg.owner_says(FORUM, "/module review", None, None);
    let card = tg.wait_new(FORUM, seen, 1).remove(0).text;
    if !card.starts_with("review 0.0.0\n")
        || !card.contains("Last runs:")
        || !card.contains("context")
    {
        tg.fail(format!("the card: {card}"));
    }
    let context: String = tg
        .kaid
        .db()
        .query_row(
            "SELECT module FROM contexts WHERE chat_id = ?1",
            [FORUM],
            |r| r.get(0),
        )
        .unwrap_or_default();
    if context != "review" {
        tg.fail("the chat's context is recorded");
    }
    let seen = tg.tg.messages(FORUM).len();
    tg.owner_says(FORUM, "/module review octo/repo#42", None, None);
    let entries = tg.wait_new(FORUM, seen, 1).remove(0).text;
    if !entries.starts_with("review · octo/repo#42: 1 entry") {
        tg.fail(format!("the entity's entries: {entries}"));
    }
    // In a module's topic, the topic is that module's context.
    tg.wait("the module's topic", |t| t.topic_of("review").is_some());
    let thread = tg.topic_of("review");
    let seen = tg.tg.messages(FORUM).len();
    tg.owner_says(FORUM, "/status", thread, None);
    let status = tg.wait_new(FORUM, seen, 1).remove(0);
    if !status.text.contains("context: review") || status.thread_id != thread {
        tg.fail(format!("/status in the topic: {status:?}"));
    }
    let seen = tg.tg.messages(FORUM).len();
    tg.owner_says(FORUM, "/module main", None, None);
    tg.wait_new(FORUM, seen, 1);
    let left: i64 = tg
        .kaid
        .db()
        .query_row("SELECT COUNT(*) FROM contexts", [], |r| r.get(0))
        .unwrap();
    if left != 0 {
        tg.fail("/module main leaves the module's context");
    }
    let seen = tg.tg.messages(FORUM).len();
    tg.owner_says(FORUM, "/help", None, None);
    let help = tg.wait_new(FORUM, seen, 1).remove(0).text;
    if !help.contains("/review [ARGS] — runs review") {
        tg.fail(format!("/help lists the module's command: {help}"));
    }
}

#[test]
fn a_stranger_gets_no_answer_and_changes_nothing() {
    let mut tg = Tg::new(true);
    tg.kaid.write_module(
        "review",
        "notify: none\ntriggers:\n  - command: review\n",
        SAVE_CONTEXT,
    );
    tg.kaid.start();
    let mallory = tg.stranger.clone();
    for text in ["/module", "/help", "/review x", "/module review", "hello"] {
        tg.tg.send_text(STRANGER, &mallory, text, None, None);
        tg.tg.send_text(FORUM, &mallory, text, None, None);
    }
    tg.wait("the updates to be taken", |t| t.tg.pending_updates() == 0);
    // The owner's message after them is answered: the stranger's were read and dropped.
    tg.owner_says(OWNER, "/status", None, None);
    tg.wait_new(OWNER, 0, 1);
    if !tg.tg.messages(STRANGER).is_empty() || !tg.tg.messages(FORUM).is_empty() {
        tg.fail("the stranger got answers");
    }
    let db = tg.kaid.db();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    if count("SELECT COUNT(*) FROM updates") != 1
        || count("SELECT COUNT(*) FROM deliveries") != 0
        || count("SELECT COUNT(*) FROM contexts") != 0
        || !tg.kaid.journal("review").is_empty()
    {
        tg.fail("the stranger's messages left a trace");
    }
}

#[test]
fn a_second_poller_is_reported_not_hammered() {
    let mut tg = Tg::new(true);
    // Before the start: the first poll is refused (later ones would wait in a long poll).
    tg.tg.fail_next(
        "getUpdates",
        2,
        ApiError {
            error_code: 409,
            description: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running".into(),
            retry_after: None,
        },
    );
    tg.kaid.start();
    let line = tg
        .kaid
        .wait_log(&["another program is reading this bot's updates"]);
    if line.contains(fake_telegram::TOKEN) {
        tg.fail("the token is in the log");
    }
    let before = tg.calls_of("getUpdates");
    std::thread::sleep(Duration::from_secs(2));
    let after = tg.calls_of("getUpdates");
    if after - before > 1 {
        tg.fail(format!("{} polls in 2 s after a conflict", after - before));
    }
}

#[test]
fn doctor_checks_the_token_and_the_forum() {
    let tg = Tg::new(true);
    let out = tg.kaid.kai(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !text.contains("ok    Telegram token works: the bot is @kai_test_bot")
        || !text.contains("is a forum and the bot can manage its topics")
    {
        tg.fail(format!("kai doctor said:\n{text}"));
    }
    let mut bad = Tg::new(true);
    bad.kaid.set_env("KAI_TELEGRAM_TOKEN", "1:wrong");
    let out = bad.kaid.kai(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.code() != Some(1)
        || !text.contains("FAIL  Telegram refused KAI_TELEGRAM_TOKEN")
        || text.contains("1:wrong")
    {
        bad.fail(format!("kai doctor with a wrong token said:\n{text}"));
    }
}

#[test]
fn events_no_module_takes_are_announced_in_the_chat_itself() {
    let mut tg = Tg::new(true);
    tg.kaid.start();
    let push = fixture("push.none.json");
    tg.kaid.deliver("push", &push.body);
    let msgs = tg.wait_new(FORUM, 0, 1);
    let repo = push.json()["repository"]["full_name"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not a module's: General (no thread), no prefix, no topic created.
    if msgs[0].thread_id.is_some() || !msgs[0].text.contains(&repo) || msgs[0].text.starts_with('[')
    {
        tg.fail(format!("the announcement: {:?}", msgs[0]));
    }
    if !tg.tg.topics(FORUM).is_empty() {
        tg.fail("an announcement creates no topic");
    }
}
