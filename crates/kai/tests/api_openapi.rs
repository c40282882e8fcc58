//! `GET /api/openapi.json` (SPEC 5): the document lists exactly the routes the server serves,
//! and what the server really answers validates against the document's schemas.

mod api_support;

use std::collections::{BTreeMap, BTreeSet};

use api_support::{Answer, Auth, Kai, BLOCKER, RECORDER};
use kai::api::routes;
use serde_json::{json, Value};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn document(kai: &Kai) -> Value {
    let doc = kai.expect(
        kai.get("/api/openapi.json", &Auth::bearer(&kai.admin())),
        200,
    );
    if !doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1."))
    {
        kai.fail(format!("not an OpenAPI 3.1 document: {}", doc["openapi"]));
    }
    doc
}

/// Every `(METHOD, path)` the document has, with its operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.insert((method.to_uppercase(), path.clone()), op.clone());
        }
    }
    out
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap_or_default().to_owned());
                }
                refs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let mut kai = Kai::new();
    kai.start();
    let doc = document(&kai);
    let ops = operations(&doc);

    // The document and the route table agree, one operation per route.
    let table: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    let documented: BTreeSet<(String, String)> = ops.keys().cloned().collect();
    assert_eq!(documented, table);
    let ids: BTreeSet<&str> = ops
        .values()
        .filter_map(|o| o["operationId"].as_str())
        .collect();
    assert_eq!(ids.len(), ops.len(), "operation ids are unique");

    // Every reference resolves; every path template has its parameters, and no others.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd $ref {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
    for ((method, path), op) in &ops {
        let in_path: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(in_path, declared, "{method} {path}");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
    }
    // Each schema compiles as JSON Schema 2020-12.
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        validator(&doc, name);
    }

    // The server takes each documented method on each documented path, and no other method.
    // No token is sent, so nothing is done: a served API route answers 401, health 200, the
    // webhooks refuse on their own terms; an unserved method is 405, an unserved path 404.
    let paths: BTreeSet<&String> = ops.keys().map(|(_, p)| p).collect();
    let mut wrong = Vec::new();
    for path in paths {
        let concrete = path
            .replace("{name}", "echo")
            .replace("{id}", "r_01JDNOSUCHRUN0000000000000")
            .replace("{source}", "no-such-source");
        for method in METHODS {
            let body: Option<&[u8]> = (method != "GET").then_some(b"{}");
            let a = kai.request(method, &concrete, &Auth::None, body);
            let served = ops.contains_key(&(method.to_owned(), path.clone()));
            let ok = if served {
                a.status != 405
                    && a.code() != "no_route"
                    && (!path.starts_with("/api/") || a.status == 401)
            } else {
                a.status == 405 && a.code() == "method_not_allowed"
            };
            if !ok {
                wrong.push(format!("documented: {served}: {}", a.describe()));
            }
        }
    }
    for path in [
        "/api",
        "/api/",
        "/api/modules/echo/events/x",
        "/webhook",
        "/api/runs",
        "/api/pending/r_x/answer/x",
        "/api/notify/x",
    ] {
        for method in METHODS {
            let body: Option<&[u8]> = (method != "GET").then_some(b"{}");
            let a = kai.request(method, path, &Auth::bearer(&kai.admin()), body);
            if a.status != 404 || a.code() != "no_route" {
                wrong.push(format!("undocumented path served: {}", a.describe()));
            }
        }
    }
    if !wrong.is_empty() {
        kai.fail(format!(
            "the server and its document disagree:\n{}",
            wrong.join("\n")
        ));
    }
    kai.stop();
}

/// A validator for the component schema `name`, references resolved within the document.
fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::validator_for(&root)
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

/// Checks that the document has `status` for this operation and that the body fits its schema.
fn conforms(
    doc: &Value,
    ops: &BTreeMap<(String, String), Value>,
    operation: &str,
    a: &Answer,
    wrong: &mut Vec<String>,
) {
    let Some(op) = ops.values().find(|o| o["operationId"] == operation) else {
        wrong.push(format!("no operation {operation}"));
        return;
    };
    let Some(response) = op["responses"].get(a.status.to_string()) else {
        wrong.push(format!(
            "{operation}: status {} is not documented: {}",
            a.status,
            a.describe()
        ));
        return;
    };
    if !a
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        wrong.push(format!("{operation}: not JSON: {}", a.describe()));
        return;
    }
    let schema = response["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_default();
    let name = schema.trim_start_matches("#/components/schemas/");
    let body = a.json();
    let v = validator(doc, name);
    let errors: Vec<String> = v
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if !errors.is_empty() {
        wrong.push(format!(
            "{operation} {} against {name}: {}\n  body: {}",
            a.status,
            errors.join("; "),
            a.text().chars().take(800).collect::<String>()
        ));
    }
}

#[test]
fn real_answers_validate_against_the_schemas() {
    let mut kai = Kai::new();
    kai.env("KAI_API_WAIT_LIMIT", "1s");
    kai.shell_module("rec", "", RECORDER);
    kai.shell_module("alpha", "", BLOCKER);
    kai.shell_module("off", "enabled: false\n", RECORDER);
    kai.shell_module(
        "asker",
        "",
        "#!/bin/sh\ncat > /dev/null\necho '{\"status\":\"paused\",\"summary\":\"waiting\",\"question\":{\"text\":\"Deploy?\",\"options\":[\"yes\",\"no\"]}}'\n",
    );
    kai.shell_module("fails", "", "#!/bin/sh\necho oops >&2\nexit 3\n");
    std::fs::create_dir_all(kai.module_dir("broken")).unwrap();
    std::fs::write(
        kai.module_dir("broken").join("module.yaml"),
        "name: broken\nrun: [\"x\"]\nbogus: 1\n",
    )
    .unwrap();
    kai.start();
    let doc = document(&kai);
    let ops = operations(&doc);
    let admin = Auth::bearer(&kai.admin());
    let chat = Auth::bearer(&kai.chat());
    let mut seen: Vec<(&str, Answer)> = Vec::new();
    let mut ask = |op: &'static str, a: Answer| seen.push((op, a));

    // Some history: finished, failed, paused and declined runs.
    let a = kai.post(
        "/api/modules/rec/invoke",
        &admin,
        &json!({ "entity": "octo/repo#1", "data": { "x": [1, 2] }, "wait": true }),
    );
    let done_run = a.json()["run_id"].as_str().unwrap_or_default().to_owned();
    ask("invokeModule", a);
    ask(
        "invokeModule",
        kai.post("/api/modules/fails/invoke", &chat, &json!({ "wait": true })),
    );
    let asked = kai.post(
        "/api/modules/asker/invoke",
        &admin,
        &json!({ "wait": true }),
    );
    let paused_run = asked.json()["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    ask("invokeModule", asked);
    let answer_path = format!("/api/pending/{paused_run}/answer");
    ask(
        "answerQuestion",
        kai.post(&answer_path, &admin, &json!({ "answer": "yes" })),
    );
    ask(
        "answerQuestion",
        kai.post(&answer_path, &chat, &json!({ "answer": "no" })),
    );
    ask(
        "answerQuestion",
        kai.post(
            "/api/pending/r_01JDNOSUCHRUN0000000000000/answer",
            &admin,
            &json!({ "answer": "no" }),
        ),
    );
    ask(
        "answerQuestion",
        kai.post(&answer_path, &admin, &json!({ "answer": "  " })),
    );
    ask(
        "invokeModule",
        kai.post(
            "/api/modules/echo/invoke",
            &admin,
            &json!({ "data": "text" }),
        ),
    );
    ask(
        "disableModule",
        kai.post(
            "/api/modules/echo/disable",
            &admin,
            &json!({ "reason": "testing" }),
        ),
    );
    ask(
        "invokeModule",
        kai.post("/api/modules/echo/invoke", &admin, &json!({})),
    );
    ask(
        "enableModule",
        kai.post("/api/modules/echo/enable", &admin, &json!({})),
    );
    ask(
        "enableModule",
        kai.post("/api/modules/off/enable", &admin, &json!({})),
    );
    let (live_run, token) = kai.live_run("alpha", "live");
    // Queued behind the live run, it outlasts the 1 s wait limit.
    ask(
        "invokeModule",
        kai.post(
            "/api/modules/alpha/invoke",
            &admin,
            &json!({ "wait": true, "entity": "slow" }),
        ),
    );
    let run = Auth::bearer(&token);

    // Every read, as each caller that may make it.
    ask("health", kai.get("/health", &Auth::None));
    ask("openapi", kai.get("/api/openapi.json", &chat));
    for who in [&admin, &chat] {
        ask("listModules", kai.get("/api/modules", who));
        for m in ["rec", "alpha", "asker", "echo", "off"] {
            ask("getModule", kai.get(&format!("/api/modules/{m}"), who));
            ask(
                "listEvents",
                kai.get(&format!("/api/modules/{m}/events"), who),
            );
        }
        ask(
            "listEvents",
            kai.get(
                "/api/modules/rec/events?entity=octo/repo%231&status=done&since=1h&limit=1",
                who,
            ),
        );
        ask("getRun", kai.get(&format!("/api/runs/{done_run}"), who));
        ask("getRun", kai.get(&format!("/api/runs/{live_run}"), who));
        ask("listPending", kai.get("/api/pending", who));
        ask("listDecisions", kai.get("/api/decisions", who));
        ask(
            "listDecisions",
            kai.get("/api/decisions?module=echo&since=2026-01-01&limit=5", who),
        );
    }
    ask("getModule", kai.get("/api/modules/alpha", &run));
    ask("listEvents", kai.get("/api/modules/alpha/events", &run));
    ask(
        "notify",
        kai.post("/api/notify", &run, &json!({ "text": "progress" })),
    );

    // And the refusals.
    ask("listModules", kai.get("/api/modules", &Auth::None));
    ask("listModules", kai.get("/api/modules", &run));
    ask("listModules", kai.get("/api/modules?x=1", &admin));
    ask("getModule", kai.get("/api/modules/nope", &admin));
    ask("getModule", kai.get("/api/modules/broken", &admin));
    ask("getModule", kai.get("/api/modules/..%2Fetc", &admin));
    ask("getModule", kai.get("/api/modules/echo", &run));
    ask(
        "listEvents",
        kai.get("/api/modules/echo/events?limit=-1", &admin),
    );
    ask(
        "listEvents",
        kai.get("/api/modules/echo/events?since=yesterday", &admin),
    );
    ask(
        "invokeModule",
        kai.request("POST", "/api/modules/echo/invoke", &admin, Some(b"{")),
    );
    ask(
        "invokeModule",
        kai.post("/api/modules/echo/invoke", &admin, &json!({ "wait": 1 })),
    );
    ask(
        "invokeModule",
        kai.post("/api/modules/nope/invoke", &admin, &json!({})),
    );
    ask(
        "invokeModule",
        kai.post("/api/modules/echo/invoke", &run, &json!({})),
    );
    ask(
        "invokeModule",
        kai.post("/api/modules/echo/invoke", &Auth::None, &json!({})),
    );
    let big = format!("{{\"data\": \"{}\"}}", "x".repeat(2 << 20));
    ask(
        "invokeModule",
        kai.request(
            "POST",
            "/api/modules/echo/invoke",
            &admin,
            Some(big.as_bytes()),
        ),
    );
    ask(
        "disableModule",
        kai.post("/api/modules/echo/disable", &chat, &json!({})),
    );
    ask(
        "getRun",
        kai.get("/api/runs/r_01JDNOSUCHRUN0000000000000", &admin),
    );
    ask("getRun", kai.get("/api/runs/bad", &admin));
    ask(
        "notify",
        kai.post("/api/notify", &admin, &json!({ "text": "hi" })),
    );
    ask(
        "notify",
        kai.post("/api/notify", &run, &json!({ "text": "" })),
    );
    ask(
        "githubWebhook",
        kai.request("POST", "/webhook/github", &Auth::None, Some(b"{}")),
    );
    ask(
        "genericWebhook",
        kai.request("POST", "/webhook/nope", &Auth::None, Some(b"{}")),
    );

    kai.release("alpha");
    kai.wait_finished(&live_run);
    let mut wrong = Vec::new();
    let mut statuses: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for (op, a) in &seen {
        statuses.entry(op).or_default().insert(a.status);
        conforms(&doc, &ops, op, a, &mut wrong);
    }
    // The answers above cover each operation, and the statuses that matter most.
    for (op, must) in [
        (
            "invokeModule",
            &[200u16, 202, 400, 401, 403, 404, 409, 413, 422][..],
        ),
        ("getModule", &[200, 400, 403, 404]),
        ("listEvents", &[200, 400]),
        ("enableModule", &[200, 409]),
        ("notify", &[202, 403, 422]),
        ("answerQuestion", &[200, 404, 409, 422]),
    ] {
        let got = statuses.get(op).cloned().unwrap_or_default();
        for s in must {
            if !got.contains(s) {
                wrong.push(format!(
                    "{op}: no answer with status {s} was checked (got {got:?})"
                ));
            }
        }
    }
    let covered: BTreeSet<&str> = seen.iter().map(|(op, _)| *op).collect();
    for r in routes() {
        if !covered.contains(r.operation_id) {
            wrong.push(format!("{} was not exercised", r.operation_id));
        }
    }
    // A wrong method's answer is an error object too.
    let a = kai.request("DELETE", "/api/modules", &admin, None);
    if a.status != 405 || !validator(&doc, "Error").is_valid(&a.json()) {
        wrong.push(format!("405: {}", a.describe()));
    }
    if !wrong.is_empty() {
        kai.fail(format!(
            "{} answers do not match the document:\n{}",
            wrong.len(),
            wrong.join("\n")
        ));
    }
    kai.stop();
}
