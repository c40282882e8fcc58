//! Invoking modules through the API (SPEC 5): the same inbox, queue and guardrails as any
//! trigger; `"wait": true` and its limit; declined invokes; notes from a run; open questions.

mod api_support;

use api_support::{Auth, Kai, BLOCKER, RECORDER};
use serde_json::{json, Value};

fn journal(kai: &Kai, module: &str) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(kai.module_dir(module).join("events"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn invoke_with_wait_returns_the_result() {
    let mut kai = Kai::new();
    kai.shell_module("rec", "", RECORDER);
    kai.start();
    let admin = Auth::bearer(&kai.admin());
    let a = kai.post(
        "/api/modules/rec/invoke",
        &Auth::bearer(&kai.chat()),
        &json!({ "entity": "octo/repo#7", "data": { "n": 1 }, "chat_id": 77, "wait": true }),
    );
    let v = kai.expect(a, 200);
    let run_id = v["run_id"].as_str().unwrap().to_owned();
    assert_eq!(v["status"], "done");
    assert_eq!(v["module"], "rec");
    let entries = journal(&kai, "rec");
    if entries.len() != 1 || entries[0] != v["result"] {
        kai.fail(format!(
            "the result must be the one journal entry: {v} vs {entries:?}"
        ));
    }
    // The run went through the inbox as an invoke trigger, with what was asked.
    let ctx: Value =
        serde_json::from_slice(&std::fs::read(kai.module_dir("rec").join("context.json")).unwrap())
            .unwrap();
    assert_eq!(ctx["run_id"], run_id);
    assert_eq!(ctx["trigger"]["type"], "invoke");
    assert_eq!(ctx["trigger"]["payload"], json!({ "n": 1 }));
    assert_eq!(ctx["trigger"]["delivery_id"], v["delivery_id"]);
    assert_eq!(ctx["entity"], "octo/repo#7");
    assert_eq!(ctx["chat_id"], 77);
    assert_eq!(v["result"]["delivery_id"], v["delivery_id"]);

    let run = kai.expect(kai.get(&format!("/api/runs/{run_id}"), &admin), 200);
    assert_eq!(run["phase"], "finished");
    assert_eq!(run["status"], "done");
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["entry"], v["result"]);
    assert_eq!(run["trigger"], "invoke");

    let events = kai.expect(
        kai.get("/api/modules/rec/events?entity=octo/repo%237", &admin),
        200,
    );
    assert_eq!(events["events"][0]["run_id"], run_id);
    let module = kai.expect(kai.get("/api/modules/rec", &admin), 200);
    assert_eq!(module["last_run"]["run_id"], run_id);
    assert_eq!(module["counts_24h"], json!({ "runs": 1, "failures": 0 }));
    assert_eq!(module["recent"][0], v["result"]);
    kai.stop();
}

#[test]
fn without_wait_the_answer_is_202_and_the_run_follows() {
    let mut kai = Kai::new();
    kai.start();
    let a = kai.post(
        "/api/modules/echo/invoke",
        &Auth::bearer(&kai.admin()),
        &json!({}),
    );
    let v = kai.expect(a, 202);
    let status = v["status"].as_str().unwrap_or_default();
    if !["accepted", "queued", "running", "finishing", "done"].contains(&status) {
        kai.fail(format!("unexpected status {status}"));
    }
    let run = kai.wait_finished(v["run_id"].as_str().unwrap());
    assert_eq!(run["status"], "done");
    assert_eq!(run["entity"], "invoke");
    kai.stop();
}

#[test]
fn a_run_longer_than_the_wait_limit_answers_202() {
    let mut kai = Kai::new();
    kai.env("KAI_API_WAIT_LIMIT", "1s");
    kai.shell_module("slow", "", BLOCKER);
    kai.start();
    let a = kai.post(
        "/api/modules/slow/invoke",
        &Auth::bearer(&kai.admin()),
        &json!({ "wait": true }),
    );
    let v = kai.expect(a, 202);
    // Running, or (on a busy machine) still about to start.
    assert!(v["status"] == "running" || v["status"] == "queued", "{v}");
    assert!(v.get("result").is_none());
    kai.release("slow");
    let run = kai.wait_finished(v["run_id"].as_str().unwrap());
    assert_eq!(run["status"], "done");
    assert_eq!(run["entry"]["summary"], "released");
    kai.stop();
}

#[test]
fn a_declined_invoke_answers_409_with_the_decision() {
    let mut kai = Kai::new();
    kai.shell_module("once", "per_entity: skip\n", BLOCKER);
    kai.shell_module("off", "enabled: false\n", RECORDER);
    kai.start();
    let admin = Auth::bearer(&kai.admin());

    let v = kai.expect(
        kai.post(
            "/api/modules/echo/disable",
            &admin,
            &json!({ "reason": "maintenance" }),
        ),
        200,
    );
    assert_eq!(
        v,
        json!({ "name": "echo", "enabled": false, "disabled_reason": "maintenance" })
    );
    let list = kai.expect(kai.get("/api/modules", &admin), 200);
    let echo = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "echo")
        .unwrap();
    assert_eq!(echo["enabled"], false);
    assert_eq!(echo["disabled_reason"], "maintenance");
    let before = kai.fingerprint()["table runs"].clone();
    for wait in [false, true] {
        let a = kai.post("/api/modules/echo/invoke", &admin, &json!({ "wait": wait }));
        let v = kai.expect(a, 409);
        assert_eq!(v["code"], "declined");
        assert_eq!(v["reason"], "disabled");
        assert_eq!(v["decision"]["delivery_id"], v["delivery_id"]);
        assert_eq!(v["decision"]["module"], "echo");
        let logged = kai.expect(kai.get("/api/decisions?module=echo&since=1h", &admin), 200);
        if !logged["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["delivery_id"] == v["delivery_id"])
        {
            kai.fail(format!("the decision is not in the why-not log: {logged}"));
        }
    }
    if kai.fingerprint()["table runs"] != before {
        kai.fail("a declined invoke queued a run");
    }
    kai.expect(
        kai.post("/api/modules/echo/enable", &admin, &json!({})),
        200,
    );
    let a = kai.post("/api/modules/echo/invoke", &admin, &json!({ "wait": true }));
    assert_eq!(kai.expect(a, 200)["status"], "done");

    // per_entity: skip, while a run for the entity is going.
    let (held, _) = kai.live_run("once", "same");
    let a = kai.post(
        "/api/modules/once/invoke",
        &admin,
        &json!({ "entity": "same" }),
    );
    let v = kai.expect(a, 409);
    assert_eq!(v["reason"], "skipped");
    kai.release("once");
    kai.wait_finished(&held);

    // A module off in its manifest cannot be switched on from outside.
    let v = kai.expect(kai.post("/api/modules/off/enable", &admin, &json!({})), 409);
    assert_eq!(v["code"], "disabled_in_manifest");
    let v = kai.expect(kai.post("/api/modules/off/invoke", &admin, &json!({})), 409);
    assert_eq!(v["reason"], "disabled");
    kai.stop();
}

#[test]
fn a_run_posts_notes_into_its_own_topic() {
    let mut kai = Kai::new();
    kai.shell_module("alpha", "", BLOCKER);
    kai.start();
    let (run, token) = kai.live_run("alpha", "e");
    let secret = kai.admin();
    let a = kai.post(
        "/api/notify",
        &Auth::bearer(&token),
        &json!({ "text": format!("halfway there (and {secret} must not show)") }),
    );
    let v = kai.expect(a, 202);
    assert_eq!(v, json!({ "queued": true, "module": "alpha" }));
    // Its own module it may read; nothing else.
    kai.expect(kai.get("/api/modules/alpha", &Auth::bearer(&token)), 200);
    kai.expect(
        kai.get("/api/modules/alpha/events", &Auth::bearer(&token)),
        200,
    );
    kai.expect(kai.get("/api/modules/echo", &Auth::bearer(&token)), 403);
    kai.release("alpha");
    kai.wait_finished(&run);
    kai.expect(
        kai.post(
            "/api/notify",
            &Auth::bearer(&token),
            &json!({ "text": "late" }),
        ),
        401,
    );
    let log = kai.log();
    if !log.contains("[alpha] halfway there (and [redacted] must not show)")
        || log.contains(&secret)
    {
        kai.fail("the note must reach alpha's topic with the secret scrubbed");
    }
    kai.stop();
}

/// A module calls the API the way the protocol tells it to: `KAI_API_URL` and `KAI_RUN_TOKEN`.
const API_CALLER: &str = r#"#!/usr/bin/env python3
import json, os, sys, urllib.request, urllib.error
json.load(sys.stdin)
url, token = os.environ["KAI_API_URL"], os.environ["KAI_RUN_TOKEN"]
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
codes = {
    "notify": call("POST", "/api/notify", {"text": "hello from python"}),
    "own": call("GET", "/api/modules/" + os.environ["KAI_MODULE"] + "/events?limit=5"),
    "other": call("GET", "/api/modules/echo/events"),
    "list": call("GET", "/api/modules"),
}
print(json.dumps({"status": "done", "summary": "called the API", "details": codes}))
"#;

#[test]
fn a_module_reaches_the_api_from_its_environment() {
    let mut kai = Kai::new();
    kai.shell_module("caller", "", API_CALLER);
    kai.start();
    let a = kai.post(
        "/api/modules/caller/invoke",
        &Auth::bearer(&kai.admin()),
        &json!({ "wait": true }),
    );
    let v = kai.expect(a, 200);
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(
        v["result"]["details"],
        json!({ "notify": 202, "own": 200, "other": 403, "list": 403 })
    );
    if !kai.log().contains("[caller] hello from python") {
        kai.fail("the module's note did not arrive");
    }
    kai.stop();
}

const ASKER: &str = r#"#!/bin/sh
cat > /dev/null
echo '{"status":"paused","summary":"waiting","question":{"text":"Deploy?","options":["yes","no"],"expires":"3d","default":"no"},"checkpoint":{"step":1}}'
"#;

#[test]
fn open_questions_are_listed() {
    let mut kai = Kai::new();
    kai.shell_module("asker", "", ASKER);
    kai.start();
    let admin = Auth::bearer(&kai.admin());
    let a = kai.post(
        "/api/modules/asker/invoke",
        &admin,
        &json!({ "entity": "octo/repo#9", "wait": true }),
    );
    let v = kai.expect(a, 200);
    assert_eq!(v["status"], "paused");
    let run_id = v["run_id"].clone();
    let pending = kai.expect(kai.get("/api/pending", &Auth::bearer(&kai.chat())), 200);
    let list = pending["pending"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{pending}");
    assert_eq!(list[0]["run_id"], run_id);
    assert_eq!(list[0]["module"], "asker");
    assert_eq!(list[0]["entity"], "octo/repo#9");
    assert_eq!(list[0]["question"]["options"], json!(["yes", "no"]));
    let module = kai.expect(kai.get("/api/modules/asker", &admin), 200);
    assert_eq!(module["pending"], 1);
    assert_eq!(module["questions"][0]["run_id"], run_id);
    // A file someone broke by hand is reported, not a reason to fail the listing.
    std::fs::write(kai.module_dir("asker").join("pending/r_broken.json"), "{").unwrap();
    let pending = kai.expect(kai.get("/api/pending", &admin), 200);
    assert_eq!(pending["pending"].as_array().unwrap().len(), 1);
    assert_eq!(pending["warnings"].as_array().unwrap().len(), 1);
    kai.stop();
}
