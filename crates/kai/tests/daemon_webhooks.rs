//! End to end: the real `kai serve` on a loopback port, GitHub webhooks sent as GitHub sends
//! them, and what the daemon makes of them (SPEC 4): runs, decisions, announcements, statuses.

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};

use daemon_support::*;
use serde_json::{json, Value};

/// A module name for a fixture: `f-<event>-<action>` with `_` as `-`.
fn module_for(f: &Fixture) -> String {
    format!(
        "f-{}-{}",
        f.event.replace('_', "-"),
        f.action.as_deref().unwrap_or("none").replace('_', "-")
    )
}

#[test]
fn every_fixture_runs_each_module_subscribed_to_it_once() {
    let mut k = Kaid::new();
    let fixtures = fixtures();
    for f in &fixtures {
        let actions = f.action.as_deref().map(|a| vec![a]);
        k.write_module(
            &module_for(f),
            &format!(
                "triggers:\n{}entity: \"{{repository.full_name}}\"\nnotify: none\n",
                github_trigger(&f.event, actions.as_deref())
            ),
            SAVE_CONTEXT,
        );
    }
    // Every pull_request action, with the SPEC's entity template.
    k.write_module(
        "all-pull-requests",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\n",
            github_trigger("pull_request", None)
        ),
        SAVE_CONTEXT,
    );
    k.start();

    let mut sent: Vec<(Fixture, String)> = Vec::new();
    for f in &fixtures {
        let (id, r) = k.github(&f.event, &f.body);
        if f.event == "ping" {
            require_eq!(k, r.status, 200, "ping: {r}");
            require_eq!(
                k,
                r.json(),
                json!({"ok": true, "ping": true}),
                "ping's answer"
            );
        } else {
            require_eq!(k, r.status, 202, "{}: {r}", f.file);
            require_eq!(
                k,
                r.json(),
                json!({"accepted": true, "delivery_id": id}),
                "{}",
                f.file
            );
        }
        sent.push((f.clone(), id));
    }
    k.note(format!(
        "sent: {:?}",
        sent.iter()
            .map(|(f, id)| format!("{} = {id}", f.file))
            .collect::<Vec<_>>()
    ));
    for (f, _) in &sent {
        if f.event != "ping" {
            k.wait_journal(&module_for(f), 1);
        }
    }
    k.wait_journal("all-pull-requests", 4);
    k.wait_settled();

    for (f, id) in &sent {
        let module = module_for(f);
        let journal = k.journal(&module);
        if f.event == "ping" {
            require!(
                k,
                journal.is_empty(),
                "ping is answered, never dispatched: {module} ran"
            );
            continue;
        }
        require_eq!(k, journal.len(), 1, "{module} must run exactly once");
        let e = &journal[0];
        require_eq!(k, e["delivery_id"], json!(id), "{module}'s delivery");
        require_eq!(k, e["trigger"], json!(f.label()), "{module}'s trigger");
        require_eq!(k, e["status"], json!("done"), "{module}'s status");
        require_eq!(k, e["attempt"], json!(1), "{module}'s attempt");
        require_eq!(
            k,
            e["entity"],
            f.json()["repository"]["full_name"],
            "{module}'s entity"
        );
        let ctx = k.saved_context(&module, e["run_id"].as_str().unwrap());
        let t = &ctx["trigger"];
        require_eq!(k, t["type"], json!("webhook"), "{module}");
        require_eq!(k, t["source"], json!("github"), "{module}");
        require_eq!(k, t["event"], json!(f.event), "{module}");
        require_eq!(k, t["action"], json!(f.action), "{module}");
        require_eq!(k, t["delivery_id"], json!(id), "{module}");
        require!(
            k,
            t["payload"] == f.json(),
            "{module} must get the payload exactly as GitHub sent it"
        );
    }

    // The pull_request module ran once per pull_request delivery, no more.
    let prs: BTreeSet<String> = sent
        .iter()
        .filter(|(f, _)| f.event == "pull_request")
        .map(|(_, id)| id.clone())
        .collect();
    let listed = k.kai_json(&[
        "journal",
        "all-pull-requests",
        "--json",
        "--limit",
        "100000",
    ]);
    let listed: Vec<Value> = listed.as_array().cloned().unwrap_or_default();
    let got: Vec<String> = listed
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap_or("").to_owned())
        .collect();
    require_eq!(k, got.len(), 4, "kai journal lists every run once");
    require_eq!(
        k,
        got.into_iter().collect::<BTreeSet<_>>(),
        prs,
        "one run per pull_request delivery"
    );
    for e in &listed {
        require_eq!(k, e["entity"], json!("Codertocat/Hello-World#2"), "entity");
    }

    // Each of the other modules: one run. The inbox holds every delivery but ping, once.
    let inbox: Vec<String> = k.inbox().into_iter().map(|(_, id, _)| id).collect();
    let expected: Vec<String> = sent
        .iter()
        .filter(|(f, _)| f.event != "ping")
        .map(|(_, id)| id.clone())
        .collect();
    require_eq!(
        k,
        inbox,
        expected,
        "the inbox holds each accepted delivery once"
    );
    let runs = k.runs();
    require_eq!(
        k,
        runs.len(),
        (fixtures.len() - 1) + 4,
        "one run per subscribed module per delivery"
    );
    // A run that waits for the module's concurrency limit is logged (reason `concurrency`)
    // but still runs; nothing else may be declined.
    let declined: Vec<_> = k
        .decisions(None)
        .into_iter()
        .filter(|d| d.reason != "concurrency")
        .collect();
    require!(
        k,
        declined.is_empty(),
        "nothing was declined: {:?}",
        declined
    );
    k.stop();
}

#[test]
fn bad_deliveries_get_their_status_and_start_nothing() {
    let mut k = Kaid::new();
    k.write_module(
        "takes-all",
        &format!(
            "triggers:\n{}{}{}entity: \"{{repository.full_name}}\"\nnotify: none\n",
            github_trigger("pull_request", None),
            github_trigger("push", None),
            github_trigger("issues", None)
        ),
        SAVE_CONTEXT,
    );
    k.start();
    let secret = k.secret();
    let body = fixture("pull_request.opened.json").body;
    let half = body[..body.len() / 2].to_vec();
    let mut huge = br#"{"action":"opened","padding":""#.to_vec();
    huge.resize(26 * 1024 * 1024, b'x');
    huge.extend_from_slice(br#""}"#);

    struct Case {
        what: &'static str,
        event: Option<&'static str>,
        delivery: Option<String>,
        signature: Option<String>,
        body: Vec<u8>,
        status: u16,
        code: Option<&'static str>,
    }
    let case = |what, body: Vec<u8>, signature: Option<String>, status, code| Case {
        what,
        event: Some("pull_request"),
        delivery: Some(delivery_id()),
        signature,
        body,
        status,
        code,
    };
    let mut cases = vec![
        case(
            "signed with a wrong secret",
            body.clone(),
            Some(sign("not the secret", &body)),
            401,
            Some("bad_signature"),
        ),
        case(
            "no signature",
            body.clone(),
            None,
            401,
            Some("bad_signature"),
        ),
        case(
            "an empty signature",
            body.clone(),
            Some(String::new()),
            401,
            Some("bad_signature"),
        ),
        case(
            "a sha1 signature",
            body.clone(),
            Some(format!("sha1={}", &sign(&secret, &body)[7..47])),
            401,
            Some("bad_signature"),
        ),
        case(
            "a signature that is not hex",
            body.clone(),
            Some("sha256=not-hex".into()),
            401,
            Some("bad_signature"),
        ),
        case(
            "a truncated body signed for the whole body",
            half.clone(),
            Some(sign(&secret, &body)),
            401,
            Some("bad_signature"),
        ),
        case(
            "a truncated body signed as sent",
            half.clone(),
            Some(sign(&secret, &half)),
            400,
            Some("bad_body"),
        ),
        case(
            "a form-encoded body",
            b"payload=%7B%22action%22%3A%22opened%22%7D".to_vec(),
            Some(sign(&secret, b"payload=%7B%22action%22%3A%22opened%22%7D")),
            400,
            Some("bad_body"),
        ),
        case(
            "a JSON array",
            b"[1,2,3]".to_vec(),
            Some(sign(&secret, b"[1,2,3]")),
            400,
            Some("bad_body"),
        ),
        case(
            "an empty body",
            Vec::new(),
            Some(sign(&secret, b"")),
            400,
            Some("bad_body"),
        ),
        case(
            "a 26 MiB body",
            huge.clone(),
            Some(sign(&secret, &huge)),
            413,
            None,
        ),
    ];
    cases.push(Case {
        what: "no X-GitHub-Event",
        event: None,
        delivery: Some(delivery_id()),
        signature: Some(sign(&secret, &body)),
        body: body.clone(),
        status: 400,
        code: Some("bad_event"),
    });
    cases.push(Case {
        what: "no X-GitHub-Delivery",
        event: Some("pull_request"),
        delivery: None,
        signature: Some(sign(&secret, &body)),
        body: body.clone(),
        status: 400,
        code: Some("bad_delivery"),
    });
    cases.push(Case {
        what: "a delivery id with a space",
        event: Some("pull_request"),
        delivery: Some("two words".into()),
        signature: Some(sign(&secret, &body)),
        body: body.clone(),
        status: 400,
        code: Some("bad_delivery"),
    });

    let mut too_large = None;
    for c in &cases {
        let mut headers = Vec::new();
        if let Some(e) = c.event {
            headers.push(("X-GitHub-Event", e.to_owned()));
        }
        if let Some(d) = &c.delivery {
            headers.push(("X-GitHub-Delivery", d.clone()));
        }
        if let Some(s) = &c.signature {
            headers.push(("X-Hub-Signature-256", s.clone()));
        }
        let r = k.post("/webhook/github", &headers, &c.body);
        if c.status == 413 {
            too_large = Some(r.clone());
        }
        let shown: String = r.text().chars().take(300).collect();
        k.note(format!("{}: {} {shown}", c.what, r.status));
        require_eq!(k, r.status, c.status, "{}: {shown}", c.what);
        if let Some(code) = c.code {
            let v = r.json();
            require_eq!(k, v["code"], json!(code), "{}: {shown}", c.what);
            require!(
                k,
                v["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{}: an error says what is wrong: {shown}",
                c.what
            );
            require!(
                k,
                !r.text().contains(&secret),
                "{}: the secret is in the answer",
                c.what
            );
        }
        require!(
            k,
            k.inbox().is_empty(),
            "{}: a refused delivery must not reach the inbox",
            c.what
        );
    }

    // An event no module takes is accepted, and starts nothing.
    let unknown = k.deliver(
        "made_up_event",
        br#"{"action":"opened","sender":{"login":"x"}}"#,
    );
    // ping is answered and not stored.
    let (_, r) = k.github("ping", &fixture("ping.none.json").body);
    require_eq!(k, r.status, 200, "ping: {r}");
    // The same delivery twice: the second is a duplicate, starts nothing, and is logged.
    let first = k.deliver("pull_request", &body);
    let again = k.github_as("pull_request", &first, &body);
    require_eq!(k, again.status, 200, "a duplicate: {again}");
    require_eq!(
        k,
        again.json(),
        json!({"duplicate": true, "delivery_id": first}),
        "a duplicate's answer"
    );
    // A redelivery with the same id is a duplicate even with another body.
    let other = fixture("issues.opened.json").body;
    let third = k.github_as("issues", &first, &other);
    require_eq!(
        k,
        third.status,
        200,
        "a duplicate id with another body: {third}"
    );
    require_eq!(k, third.json()["duplicate"], json!(true), "{third}");

    k.wait_journal("takes-all", 1);
    k.wait_settled();
    // Give a stray run every chance to show up before counting.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    k.wait_settled();
    let journal = k.journal("takes-all");
    require_eq!(k, journal.len(), 1, "only the one good delivery runs");
    require_eq!(
        k,
        journal[0]["delivery_id"],
        json!(first),
        "the run's delivery"
    );
    let inbox: Vec<String> = k.inbox().into_iter().map(|(_, id, _)| id).collect();
    require_eq!(
        k,
        inbox,
        vec![unknown.clone(), first.clone()],
        "the inbox holds the accepted deliveries only"
    );
    require_eq!(k, k.runs().len(), 1, "one run in the ledger");
    let dups = k.decisions_for("takes-all", "duplicate");
    require_eq!(k, dups.len(), 2, "each duplicate is logged: {dups:?}");
    for d in &dups {
        require_eq!(k, d.delivery_id, Some(first.clone()), "{d:?}");
    }
    let other_reasons: Vec<_> = k
        .decisions(None)
        .into_iter()
        .filter(|d| d.reason != "duplicate")
        .collect();
    require!(
        k,
        other_reasons.is_empty(),
        "nothing else was declined: {other_reasons:?}"
    );
    // The 413 is an error like the others, `{"error", "code"}`, as the OpenAPI document
    // says of every webhook error (schema `Error`).
    let r = too_large.expect("the 26 MiB case ran");
    let v = r.json();
    require!(
        k,
        v["code"] == json!("too_large") && v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the 413 answer should be {{\"error\": ..., \"code\": \"too_large\"}}; it is: {}",
        r.text()
    );
    k.print_notes();
    k.stop();
}

#[test]
fn without_a_secret_github_webhooks_are_refused() {
    let mut k = Kaid::new();
    k.remove_env("KAI_GITHUB_WEBHOOK_SECRET");
    k.write_module(
        "takes-prs",
        &format!("triggers:\n{}", github_trigger("pull_request", None)),
        SAVE_CONTEXT,
    );
    k.start();
    k.wait_log(&["GitHub webhooks are off"]);
    let (_, r) = k.github("pull_request", &fixture("pull_request.opened.json").body);
    require_eq!(k, r.status, 403, "{r}");
    require_eq!(k, r.json()["code"], json!("webhooks_off"), "{r}");
    let (_, r) = k.github("ping", &fixture("ping.none.json").body);
    require_eq!(k, r.status, 403, "ping too: {r}");
    require!(k, k.inbox().is_empty(), "nothing is accepted");
    require!(k, k.runs().is_empty(), "nothing runs");
    k.stop();
}

#[test]
fn a_where_filter_mismatch_is_recorded_as_a_decision() {
    let mut k = Kaid::new();
    let trigger = |filter: &str| {
        format!(
            "triggers:\n  - webhook: github\n    event: pull_request\n    actions: [opened]\n    where: {filter}\nentity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\n"
        )
    };
    k.write_module(
        "only-octo",
        &trigger("{ repository: [\"octo/*\"] }"),
        SAVE_CONTEXT,
    );
    k.write_module(
        "only-drafts",
        &trigger("{ repository: \"Codertocat/*\", draft: true }"),
        SAVE_CONTEXT,
    );
    k.write_module(
        "codertocat-ready",
        &trigger("{ repository: \"Codertocat/*\", draft: false, sender: [\"Codertocat\"] }"),
        SAVE_CONTEXT,
    );
    k.start();
    let id = k.deliver("pull_request", &fixture("pull_request.opened.json").body);
    k.wait_journal("codertocat-ready", 1);
    k.wait_settled();
    require!(
        k,
        k.journal("only-octo").is_empty(),
        "only-octo must not run"
    );
    require!(
        k,
        k.journal("only-drafts").is_empty(),
        "only-drafts must not run"
    );
    require_eq!(k, k.runs().len(), 1, "one run");

    for (module, detail) in [
        (
            "only-octo",
            "repository.full_name is \"Codertocat/Hello-World\"",
        ),
        ("only-drafts", "pull_request.draft is false"),
    ] {
        let ds = k.decisions(Some(module));
        require_eq!(k, ds.len(), 1, "{module}: one decision: {ds:?}");
        let d = &ds[0];
        require_eq!(k, d.reason, "filter", "{module}: {d:?}");
        require_eq!(k, d.delivery_id, Some(id.clone()), "{module}: {d:?}");
        require_eq!(
            k,
            d.trigger,
            "webhook:pull_request:opened",
            "{module}: {d:?}"
        );
        require!(
            k,
            d.detail.contains(detail),
            "{module}: {d:?} should say {detail}"
        );
        // The same through the command line.
        let listed = k.kai_json(&["journal", "--decisions", module, "--json"]);
        let listed = listed.as_array().cloned().unwrap_or_default();
        require_eq!(k, listed.len(), 1, "{module}: kai journal --decisions");
        for key in [
            "at",
            "module",
            "entity",
            "trigger",
            "delivery_id",
            "reason",
            "detail",
        ] {
            require!(
                k,
                listed[0].get(key).is_some(),
                "{module}: kai journal --decisions --json lacks `{key}`: {}",
                listed[0]
            );
        }
        require_eq!(k, listed[0]["reason"], json!("filter"), "{module}");
        require_eq!(k, listed[0]["module"], json!(module), "{module}");
        require_eq!(k, listed[0]["delivery_id"], json!(id), "{module}");
    }
    require!(
        k,
        k.decisions(Some("codertocat-ready")).is_empty(),
        "a module that ran has no decision"
    );
    k.stop();
}

#[test]
fn deliveries_sent_by_kais_own_account_start_nothing() {
    let mut k = Kaid::new();
    // Every fixture is sent by Codertocat.
    k.set_env("KAI_GITHUB_LOGIN", "Codertocat");
    k.write_module(
        "reviewer",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\n",
            github_trigger("pull_request", None)
        ),
        SAVE_CONTEXT,
    );
    k.write_module(
        "triager",
        &format!(
            "triggers:\n{}{}entity: \"{{repository.full_name}}#{{issue.number}}\"\nnotify: none\n",
            github_trigger("issues", Some(&["opened"])),
            github_trigger("issue_comment", None)
        ),
        SAVE_CONTEXT,
    );
    k.start();
    let mut own: BTreeMap<String, &str> = BTreeMap::new();
    for file in [
        "pull_request.opened.json",
        "pull_request.synchronize.json",
        "pull_request.closed.json",
        "pull_request.ready_for_review.json",
        "issues.opened.json",
        "issue_comment.created.json",
    ] {
        let f = fixture(file);
        require_eq!(
            k,
            f.json()["sender"]["login"],
            json!("Codertocat"),
            "{file}'s sender"
        );
        let id = k.deliver(&f.event, &f.body);
        own.insert(
            id,
            if f.event == "pull_request" {
                "reviewer"
            } else {
                "triager"
            },
        );
    }
    // The same PR event from someone else runs: the barrier for the counts below.
    let mut v = fixture("pull_request.opened.json").json();
    v["sender"]["login"] = json!("octocat");
    let other = k.deliver("pull_request", &serde_json::to_vec(&v).unwrap());
    k.wait_journal("reviewer", 1);
    k.wait_settled();

    let runs = k.runs();
    require_eq!(
        k,
        runs.len(),
        1,
        "only the delivery from someone else runs: {runs:?}"
    );
    require_eq!(k, runs[0].delivery_id, Some(other.clone()), "{runs:?}");
    require!(k, k.journal("triager").is_empty(), "triager must not run");
    let loops: Vec<DecisionRow> = k
        .decisions(None)
        .into_iter()
        .filter(|d| d.reason == "loop")
        .collect();
    require_eq!(
        k,
        loops.len(),
        own.len(),
        "one loop decision each: {loops:?}"
    );
    for d in &loops {
        let id = d.delivery_id.clone().unwrap_or_default();
        let module = own.get(&id).copied();
        require!(
            k,
            module.is_some(),
            "a loop decision for an unknown delivery: {d:?}"
        );
        require_eq!(k, d.module.as_deref(), module, "{d:?}");
        require!(
            k,
            d.detail.contains("Codertocat"),
            "{d:?} should name the account"
        );
    }
    let listed = k.kai_json(&["journal", "--decisions", "--json", "--limit", "1000"]);
    let reasons: Vec<&str> = listed
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["reason"].as_str()).collect())
        .unwrap_or_default();
    require_eq!(
        k,
        reasons,
        vec!["loop"; own.len()],
        "kai journal --decisions"
    );
    k.stop();
}

#[test]
fn events_no_module_takes_are_announced() {
    let mut k = Kaid::new();
    // Takes issues, so an opened issue is not announced by kai itself.
    k.write_module(
        "triager",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{issue.number}}\"\nnotify: none\n",
            github_trigger("issues", None)
        ),
        SAVE_CONTEXT,
    );
    k.start();
    k.deliver("push", &fixture("push.none.json").body);
    let line = k.wait_log(&["kai::notify", "created tag simple-tag"]);
    require!(
        k,
        line.contains("Codertocat created tag simple-tag in Codertocat/Hello-World"),
        "the push announcement: {line}"
    );
    k.deliver("pull_request", &fixture("pull_request.opened.json").body);
    k.wait_log(&["kai::notify", "PR #2 opened in Codertocat/Hello-World"]);
    k.deliver("issues", &fixture("issues.opened.json").body);
    k.wait_journal("triager", 1);
    // Not announced (by kai) either: events that are not news.
    k.deliver("check_suite", &fixture("check_suite.completed.json").body);
    k.wait_settled();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let notes = k.log_lines(&["kai::notify"]);
    require!(
        k,
        !notes.iter().any(|l| l.contains("Issue #1")),
        "an event a module takes is the module's to announce: {notes:?}"
    );
    require_eq!(k, notes.len(), 2, "two announcements: {notes:?}");
    require!(
        k,
        k.decisions(None).is_empty(),
        "announcements are no decisions"
    );
    k.stop();
}

#[test]
fn a_module_added_while_serving_runs_and_queued_runs_survive_the_reload() {
    let mut k = Kaid::new();
    let slow = |description: &str| {
        format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{pull_request.number}}\"\nnotify: none\nsettings: {{ note: \"{description}\" }}\n",
            github_trigger("pull_request", Some(&["synchronize"]))
        )
    };
    k.write_module("slow-a", &slow("first"), &sleeper("2"));
    k.start();
    let body = fixture("pull_request.synchronize.json").body;
    let ids: Vec<String> = (0..3).map(|_| k.deliver("pull_request", &body)).collect();
    // Wait for the queue: one run going, two waiting (one run per entity at a time).
    let queued = |k: &Kaid| {
        k.runs()
            .iter()
            .filter(|r| r.module == "slow-a" && r.phase == "queued")
            .count()
    };
    require!(
        k,
        poll(PATIENCE, || k.runs().len() == 3 && queued(&k) >= 1),
        "three runs, some queued, expected"
    );
    k.note(format!("queued before the reload: {}", queued(&k)));
    let reloads = k.log_lines(&["manifests changed"]).len();

    // While runs wait: a new module, a changed manifest, and a broken one.
    k.write_module(
        "late-b",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{issue.number}}\"\nnotify: none\n",
            github_trigger("issues", Some(&["opened"]))
        ),
        SAVE_CONTEXT,
    );
    k.write_module("slow-a", &slow("second"), &sleeper("2"));
    k.write_module("broken-c", "timeout: soon\n", SAVE_CONTEXT);
    require!(
        k,
        poll(PATIENCE, || k.log_lines(&["manifests changed"]).len()
            > reloads),
        "the manifests were not reloaded"
    );
    k.wait_log(&["module not loaded", "broken-c", "invalid duration"]);
    let issue = k.deliver("issues", &fixture("issues.opened.json").body);
    let late = k.wait_journal("late-b", 1);
    require_eq!(
        k,
        late[0]["delivery_id"],
        json!(issue),
        "late-b ran for the issue"
    );
    require_eq!(k, late[0]["status"], json!("done"), "late-b's run");

    let runs = k.wait_journal("slow-a", 3);
    k.wait_settled();
    require_eq!(k, runs.len(), 3, "no queued run was dropped or doubled");
    let got: BTreeSet<String> = runs
        .iter()
        .map(|e| e["delivery_id"].as_str().unwrap_or("").to_owned())
        .collect();
    require_eq!(
        k,
        got,
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        "each delivery ran once"
    );
    for e in &runs {
        require_eq!(k, e["status"], json!("done"), "{e}");
    }
    // The runs that started after the reload got the new manifest's settings.
    let last = runs.last().unwrap();
    let ctx = k.saved_context("slow-a", last["run_id"].as_str().unwrap());
    require_eq!(
        k,
        ctx["settings"],
        json!({"note": "second"}),
        "the last run uses the reloaded manifest"
    );
    k.stop();
}

#[test]
fn replay_reruns_a_journaled_run() {
    let mut k = Kaid::new();
    k.write_module(
        "replayable",
        &format!(
            "triggers:\n{}entity: \"{{repository.full_name}}#{{issue.number}}\"\nnotify: none\n",
            github_trigger("issues", Some(&["opened"]))
        ),
        SAVE_CONTEXT,
    );
    k.start();
    let f = fixture("issues.opened.json");
    let id = k.deliver("issues", &f.body);
    let first = k.wait_journal("replayable", 1).remove(0);
    k.wait_settled();
    let run_id = first["run_id"].as_str().unwrap().to_owned();

    // While the daemon runs, as a user would.
    let out = k.kai(&["replay", &run_id, "--json"]);
    require!(k, out.status.success(), "kai replay failed");
    let printed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| k.fail(format!("kai replay --json printed no JSON: {e}")));
    let journal = k.journal("replayable");
    require_eq!(
        k,
        journal.len(),
        2,
        "the replay is journaled as a run of its own"
    );
    let again = journal
        .iter()
        .find(|e| e["run_id"] != json!(run_id))
        .cloned()
        .unwrap_or_else(|| k.fail("no new run in the journal"));
    require_eq!(
        k,
        printed,
        again,
        "kai replay prints the journal entry it wrote"
    );
    require_eq!(k, again["status"], json!("done"), "the replay's status");
    for key in ["module", "trigger", "entity"] {
        require_eq!(k, again[key], first[key], "the replay keeps `{key}`");
    }
    require_eq!(k, first["delivery_id"], json!(id), "the original delivery");
    // A replay is a new occurrence of the trigger, with a delivery id of its own.
    require!(
        k,
        again["delivery_id"]
            .as_str()
            .is_some_and(|d| !d.is_empty() && d != id),
        "the replay gets a fresh delivery id: {}",
        again["delivery_id"]
    );
    let ctx = k.saved_context("replayable", again["run_id"].as_str().unwrap());
    require!(
        k,
        ctx["trigger"]["payload"] == f.json(),
        "the replay gets the original payload"
    );
    require_eq!(
        k,
        ctx["trigger"]["delivery_id"],
        again["delivery_id"],
        "the module sees the replay's delivery id"
    );
    require_eq!(
        k,
        ctx["trigger"]["event"],
        json!("issues"),
        "the replay's trigger"
    );

    let out = k.kai(&["replay", "r_01NOSUCHRUN0000000000000000"]);
    require_eq!(k, out.status.code(), Some(2), "replay of an unknown run");
    k.stop();
}
