//! Tokens and scopes (SPEC 5): every route of the route table against every kind of caller,
//! and how the admin and chat tokens come to be.

mod api_support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use api_support::{Auth, Kai, BLOCKER};
use kai::api::{routes, Method};
use serde_json::{json, Value};

/// The callers of the matrix, in the order of each row's expectations.
const CALLERS: [&str; 8] = [
    "no token",
    "malformed header",
    "wrong token",
    "run token of this module",
    "run token of another module",
    "expired run token",
    "chat token",
    "admin token",
];

const READ: [u16; 8] = [401, 401, 401, 403, 403, 401, 200, 200];
const OWN: [u16; 8] = [401, 401, 401, 200, 403, 401, 200, 200];
const MANAGE: [u16; 8] = [401, 401, 401, 403, 403, 401, 403, 200];

/// What each route must answer to each caller. A route of the table missing here fails the
/// test, so a new route cannot go without its row.
fn expected(operation: &str) -> Option<[u16; 8]> {
    Some(match operation {
        "health" => [200; 8],
        // No webhook secret is configured: GitHub webhooks are off whatever the bearer token.
        "githubWebhook" => [403; 8],
        "genericWebhook" => [404; 8],
        "openapi" | "listModules" | "listPending" | "listDecisions" | "getRun" => READ,
        "getModule" | "listEvents" => OWN,
        "invokeModule" => [401, 401, 401, 403, 403, 401, 202, 202],
        "enableModule" | "disableModule" => MANAGE,
        "notify" => [401, 401, 401, 202, 202, 401, 403, 403],
        // No question is open: authorised callers learn that (404).
        "answerQuestion" => [401, 401, 401, 403, 403, 401, 404, 404],
        _ => return None,
    })
}

#[test]
fn every_route_against_every_caller() {
    let mut kai = Kai::new();
    kai.shell_module("alpha", "", BLOCKER);
    kai.shell_module("beta", "", BLOCKER);
    kai.start();
    let admin = kai.admin();

    kai.release("alpha");
    let (ended_run, ended_token) = kai.live_run("alpha", "first");
    kai.wait_finished(&ended_run);
    kai.hold("alpha");
    let (_, this_token) = kai.live_run("alpha", "second");
    let (_, other_token) = kai.live_run("beta", "other");

    let callers: [Auth; 8] = [
        Auth::None,
        Auth::Header(format!("Basic {admin}")),
        Auth::bearer("not-a-token-kai-ever-gave-out-0000000000"),
        Auth::bearer(&this_token),
        Auth::bearer(&other_token),
        Auth::bearer(&ended_token),
        Auth::bearer(&kai.chat()),
        Auth::bearer(&admin),
    ];

    let table: BTreeSet<&str> = routes().iter().map(|r| r.operation_id).collect();
    let mut failures = Vec::new();
    let mut asked = 0;
    for route in routes() {
        let Some(expect) = expected(route.operation_id) else {
            failures.push(format!(
                "route {} {} ({}) has no row in the matrix",
                route.method.as_str(),
                route.path,
                route.operation_id
            ));
            continue;
        };
        let path = route
            .path
            .replace("{name}", "alpha")
            .replace("{id}", &ended_run)
            .replace("{run_id}", &ended_run)
            .replace("{source}", "no-such-source");
        for (i, caller) in callers.iter().enumerate() {
            let body = match route.operation_id {
                "invokeModule" => Some(json!({ "entity": format!("matrix-{i}") })),
                "notify" => {
                    Some(json!({ "text": format!("a note from the matrix ({})", CALLERS[i]) }))
                }
                "answerQuestion" => Some(json!({ "answer": "yes" })),
                _ if route.method == Method::Post => Some(json!({})),
                _ => None,
            };
            let body_bytes = body.as_ref().map(|b| b.to_string().into_bytes());
            let answer = kai.request(route.method.as_str(), &path, caller, body_bytes.as_deref());
            asked += 1;
            let json = answer.json();
            if answer.status != expect[i] {
                failures.push(format!(
                    "{} {} with {}: expected {}, got {}",
                    route.method.as_str(),
                    path,
                    CALLERS[i],
                    expect[i],
                    answer.describe()
                ));
            } else if answer.status >= 400
                && !(json["error"].is_string() && json["code"].is_string())
            {
                failures.push(format!("not an error object: {}", answer.describe()));
            } else if answer.status == 401 && answer.header("www-authenticate").is_none() {
                failures.push(format!(
                    "a 401 without WWW-Authenticate: {}",
                    answer.describe()
                ));
            }
            if route.operation_id == "disableModule" && answer.status == 200 {
                let again = kai.post(
                    "/api/modules/alpha/enable",
                    &Auth::bearer(&admin),
                    &json!({}),
                );
                kai.expect(again, 200);
            }
        }
    }
    let mut stale: Vec<&str> = [
        "health",
        "githubWebhook",
        "genericWebhook",
        "openapi",
        "listModules",
        "listPending",
        "listDecisions",
        "getRun",
        "getModule",
        "listEvents",
        "invokeModule",
        "enableModule",
        "disableModule",
        "notify",
        "answerQuestion",
    ]
    .into_iter()
    .filter(|op| !table.contains(op))
    .collect();
    stale.sort();
    if !stale.is_empty() {
        failures.push(format!(
            "rows for routes the table no longer has: {stale:?}"
        ));
    }
    if !failures.is_empty() {
        kai.fail(format!(
            "{} of {asked} answers are wrong:\n{}",
            failures.len(),
            failures.join("\n")
        ));
    }
    assert_eq!(asked, routes().len() * CALLERS.len());

    // The run tokens' notes went into their own modules' topics (the log, without Telegram).
    let log = kai.log();
    for module in ["alpha", "beta"] {
        let note = format!("[{module}] a note from the matrix (run token of");
        if !log.contains(&note) {
            kai.fail(format!("no note in {module}'s topic"));
        }
    }
    kai.release("alpha");
    kai.release("beta");
    kai.stop();
}

#[test]
fn malformed_authorization_headers_are_401() {
    let mut kai = Kai::new();
    kai.start();
    let admin = kai.admin();
    for header in [
        String::new(),
        "Bearer".into(),
        "Bearer ".into(),
        format!("Token {admin}"),
        format!("Basic {admin}"),
        admin.clone(),
        format!("Bearer {admin} trailing"),
        format!("Bearer {admin}\r\nAuthorization: Bearer {admin}"),
        format!("Bearer {}", &admin[..admin.len() - 1]),
        format!("Bearer {admin}x"),
    ] {
        let a = kai.request("GET", "/api/modules", &Auth::Header(header.clone()), None);
        if a.status != 401 || a.code() != "unauthorized" {
            kai.fail(format!("header {header:?}: {}", a.describe()));
        }
    }
    // The scheme is case-insensitive, as RFC 7235 has it.
    let a = kai.request(
        "GET",
        "/api/modules",
        &Auth::Header(format!("bearer {admin}")),
        None,
    );
    kai.expect(a, 200);
}

#[test]
fn generated_tokens_are_private_shown_once_and_never_logged() {
    let mut kai = Kai::new();
    kai.env_remove("KAI_API_TOKEN").env("KAI_LOG", "debug");
    kai.shell_module("alpha", "", BLOCKER);
    kai.start();
    let data = kai.data_dir();
    let admin_file = data.join("api_token");
    let chat_file = data.join("chat_token");
    for file in [&admin_file, &chat_file] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        if mode != 0o600 {
            kai.fail(format!("{} has mode {mode:o}, not 600", file.display()));
        }
    }
    let admin = kai.admin();
    let chat = kai.chat();
    if admin.len() < 64 || chat.len() < 64 || admin == chat {
        kai.fail("the generated tokens must be 32 random bytes in hex, and differ");
    }
    if kai.stdout().matches(&admin).count() != 1 {
        kai.fail(format!(
            "the admin token must be printed once on stdout:\n{}",
            kai.stdout()
        ));
    }
    if kai.stdout().contains(&chat) {
        kai.fail("the chat token is not printed");
    }
    // Use every kind of token, right and wrong, then look for them in the log.
    kai.expect(kai.get("/api/modules", &Auth::bearer(&admin)), 200);
    kai.expect(kai.get("/api/modules", &Auth::bearer(&chat)), 200);
    let wrong = "a-wrong-token-that-must-not-be-logged";
    kai.expect(kai.get("/api/modules", &Auth::bearer(wrong)), 401);
    kai.release("alpha");
    let (run, run_token) = kai.live_run("alpha", "e");
    kai.wait_finished(&run);
    kai.expect(
        kai.get("/api/modules/alpha", &Auth::bearer(&run_token)),
        401,
    );
    kai.stop();
    let log = kai.log();
    for (what, token) in [
        ("admin", &admin),
        ("chat", &chat),
        ("wrong", &wrong.to_owned()),
        ("run", &run_token),
    ] {
        if log.contains(token.as_str()) {
            kai.fail(format!("the {what} token is in the log"));
        }
    }

    // A second start keeps both tokens and shows nothing.
    let printed = kai.stdout();
    kai.start();
    kai.expect(kai.get("/api/modules", &Auth::bearer(&admin)), 200);
    kai.expect(kai.get("/api/modules", &Auth::bearer(&chat)), 200);
    if kai.stdout() != printed {
        kai.fail("a second start printed something");
    }
    kai.stop();
}

#[test]
fn a_configured_admin_token_wins_and_no_file_is_made() {
    let mut kai = Kai::new();
    kai.env("KAI_API_TOKEN", "configured-admin-token-0123456789abcdef");
    kai.start();
    kai.expect(
        kai.get(
            "/api/modules",
            &Auth::bearer("configured-admin-token-0123456789abcdef"),
        ),
        200,
    );
    if kai.data_dir().join("api_token").exists() {
        kai.fail("api_token was written although KAI_API_TOKEN is set");
    }
    if !kai.stdout().is_empty() {
        kai.fail(format!(
            "nothing is printed when the token is configured: {}",
            kai.stdout()
        ));
    }
    // The chat token cannot switch modules, whatever it is told.
    let a = kai.post(
        "/api/modules/echo/disable",
        &Auth::bearer(&kai.chat()),
        &json!({}),
    );
    let v: Value = kai.expect(a, 403);
    assert_eq!(v["code"], "forbidden");
    kai.stop();
}
