//! Bad input (SPEC 5): whatever a caller sends, the answer is a clear `4xx` with an error
//! object, the server goes on, and nothing is written: not the journal, not the ledger's runs,
//! inbox, decisions or switches, not a module's files.

mod api_support;

use api_support::{Answer, Auth, Kai, BLOCKER};
use serde_json::json;

/// One bad request and what it must get.
struct Case {
    method: &'static str,
    path: String,
    auth: Auth,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn case(
    method: &'static str,
    path: impl Into<String>,
    auth: &Auth,
    body: Option<&[u8]>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path: path.into(),
        auth: auth.clone(),
        body: body.map(<[u8]>::to_vec),
        status,
        code,
    }
}

#[test]
fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let mut kai = Kai::new();
    kai.shell_module("alpha", "", BLOCKER);
    kai.start();
    let admin = Auth::bearer(&kai.admin());
    // Something to leave untouched: a journal entry, and a run in flight with its token.
    let done = kai.invoke("echo", &json!({ "entity": "before" }));
    kai.wait_finished(&done);
    let (_, token) = kai.live_run("alpha", "held");
    let run = Auth::bearer(&token);

    let mut cases = Vec::new();
    let mut add = |c: Case| cases.push(c);

    // Bodies that are not JSON objects: 400.
    for body in [
        &b"{\"entity\": "[..],
        b"not json",
        b"[1, 2]",
        b"\"text\"",
        b"null",
        b"{}{}",
        b"  ",
        b"\xff\xfe",
    ] {
        add(case(
            "POST",
            "/api/modules/echo/invoke",
            &admin,
            Some(body),
            400,
            "bad_json",
        ));
        add(case(
            "POST",
            "/api/modules/echo/disable",
            &admin,
            Some(body),
            400,
            "bad_json",
        ));
        add(case(
            "POST",
            "/api/notify",
            &run,
            Some(body),
            400,
            "bad_json",
        ));
    }
    // Objects whose fields are wrong: 422.
    let long_entity = "e".repeat(201);
    for body in [
        json!({ "entity": 5 }),
        json!({ "entity": "" }),
        json!({ "entity": "   " }),
        json!({ "entity": long_entity }),
        json!({ "entity": "a\u{1}b" }),
        json!({ "wait": "yes" }),
        json!({ "wait": null }),
        json!({ "chat_id": "12" }),
        json!({ "chat_id": 1.5 }),
        json!({ "chat_id": 1e30 }),
        json!({ "chat_id": 9007199254740992_i64 }),
        json!({ "chat_id": -9007199254740992_i64 }),
        json!({ "data": {}, "surprise": true }),
    ] {
        add(case(
            "POST",
            "/api/modules/echo/invoke",
            &admin,
            Some(body.to_string().as_bytes()),
            422,
            "invalid",
        ));
    }
    add(case(
        "POST",
        "/api/modules/echo/invoke",
        &admin,
        Some(b"{\"chat_id\": 99999999999999999999}"),
        422,
        "invalid",
    ));
    for body in [
        json!({ "reason": 5 }),
        json!({ "reason": " " }),
        json!({ "why": "x" }),
        json!({ "reason": "r".repeat(501) }),
    ] {
        add(case(
            "POST",
            "/api/modules/echo/disable",
            &admin,
            Some(body.to_string().as_bytes()),
            422,
            "invalid",
        ));
    }
    add(case(
        "POST",
        "/api/modules/echo/enable",
        &admin,
        Some(b"{\"now\": true}"),
        422,
        "invalid",
    ));
    for body in [
        json!({}),
        json!({ "text": 5 }),
        json!({ "text": "  \n " }),
        json!({ "text": "hi", "extra": 1 }),
        json!({ "text": "x".repeat(16 * 1024 + 1) }),
    ] {
        add(case(
            "POST",
            "/api/notify",
            &run,
            Some(body.to_string().as_bytes()),
            422,
            "invalid",
        ));
    }

    // Unknown modules and runs: 404.
    add(case(
        "GET",
        "/api/modules/nope",
        &admin,
        None,
        404,
        "unknown_module",
    ));
    add(case(
        "GET",
        "/api/modules/nope/events",
        &admin,
        None,
        404,
        "unknown_module",
    ));
    add(case(
        "POST",
        "/api/modules/nope/invoke",
        &admin,
        Some(b"{}"),
        404,
        "unknown_module",
    ));
    add(case(
        "POST",
        "/api/modules/nope/enable",
        &admin,
        Some(b"{}"),
        404,
        "unknown_module",
    ));
    add(case(
        "POST",
        "/api/modules/nope/disable",
        &admin,
        Some(b"{}"),
        404,
        "unknown_module",
    ));
    add(case(
        "GET",
        "/api/runs/r_01JDNOSUCHRUN0000000000000",
        &admin,
        None,
        404,
        "unknown_run",
    ));

    // Names that are not module names, however they are spelled: 400.
    let overlong = "a".repeat(64);
    let huge = "a".repeat(5000);
    for name in [
        "..%2Fetc",
        "..%2fetc",
        "%2e%2e",
        "%2E%2E",
        "..",
        ".",
        "%2e",
        &overlong,
        &huge,
        "Echo",
        "echo%00",
        "%ff",
        "a_b",
        "-a",
        "echo%20",
        "%2e%2e%2f%2e%2e%2fkai.db",
    ] {
        add(case(
            "GET",
            format!("/api/modules/{name}"),
            &admin,
            None,
            400,
            "bad_path",
        ));
        add(case(
            "GET",
            format!("/api/modules/{name}/events"),
            &admin,
            None,
            400,
            "bad_path",
        ));
        add(case(
            "POST",
            format!("/api/modules/{name}/invoke"),
            &admin,
            Some(b"{}"),
            400,
            "bad_path",
        ));
        add(case(
            "POST",
            format!("/api/modules/{name}/disable"),
            &admin,
            Some(b"{}"),
            400,
            "bad_path",
        ));
    }
    // Raw dot segments, sent as they are.
    for path in [
        "/api/modules/../etc",
        "/api/modules/../etc/events",
        "/api/modules/../etc/invoke",
        "/api/modules/./echo",
        "/api/../api/modules",
    ] {
        let method = if path.ends_with("invoke") {
            "POST"
        } else {
            "GET"
        };
        let body: Option<&[u8]> = (method == "POST").then_some(b"{}");
        add(case(method, path, &admin, body, 400, "bad_path"));
    }
    // A run token is checked against the name only once the name is a name.
    add(case(
        "GET",
        "/api/modules/..%2Falpha",
        &run,
        None,
        400,
        "bad_path",
    ));
    for id in [
        "x",
        "..%2F..%2Fkai.db",
        "r_%2e%2e",
        "r_a%2Fb",
        &format!("r_{}", "a".repeat(200)),
    ] {
        add(case(
            "GET",
            format!("/api/runs/{id}"),
            &admin,
            None,
            400,
            "bad_path",
        ));
    }

    // Bodies over 1 MiB: 413.
    let big = format!("{{\"data\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    add(case(
        "POST",
        "/api/modules/echo/invoke",
        &admin,
        Some(big.as_bytes()),
        413,
        "too_large",
    ));
    add(case(
        "POST",
        "/api/modules/echo/disable",
        &admin,
        Some(big.as_bytes()),
        413,
        "too_large",
    ));
    add(case(
        "POST",
        "/api/notify",
        &run,
        Some(big.as_bytes()),
        413,
        "too_large",
    ));

    // Query parameters.
    for query in [
        "limit=-1",
        "limit=0",
        "limit=abc",
        "limit=1001",
        "limit=1.5",
        "limit=",
        "limit=99999999999999999999999",
        "since=yesterday",
        "since=",
        "since=-2h",
        "since=2026-13-45",
        "since=2h30",
        "since=2026-4-4",
        "since=%202h",
        "since=2026-04-04T25:00:00Z",
        "status=bogus",
        "status=",
        "entity=",
        &format!("entity={}", "e".repeat(201)),
        "entity=a%01b",
        "limit=5&limit=6",
        "bogus=1",
        "limit=5&Limit=6",
    ] {
        add(case(
            "GET",
            format!("/api/modules/echo/events?{query}"),
            &admin,
            None,
            400,
            "bad_query",
        ));
    }
    for query in [
        "module=..%2Fetc",
        "module=Echo",
        "since=yesterday",
        "limit=-1",
        "limit=0",
        "module=echo&module=echo",
    ] {
        add(case(
            "GET",
            format!("/api/decisions?{query}"),
            &admin,
            None,
            400,
            "bad_query",
        ));
    }
    add(case(
        "GET",
        "/api/modules?verbose=1",
        &admin,
        None,
        400,
        "bad_query",
    ));
    add(case(
        "GET",
        "/api/pending?limit=1",
        &admin,
        None,
        400,
        "bad_query",
    ));
    add(case(
        "GET",
        "/api/runs/r_01JDNOSUCHRUN0000000000000?x=1",
        &admin,
        None,
        400,
        "bad_query",
    ));

    // Methods and paths no route takes.
    add(case(
        "PUT",
        "/api/modules",
        &admin,
        None,
        405,
        "method_not_allowed",
    ));
    add(case(
        "DELETE",
        "/api/modules/echo",
        &admin,
        None,
        405,
        "method_not_allowed",
    ));
    add(case(
        "GET",
        "/api/modules/echo/invoke",
        &admin,
        None,
        405,
        "method_not_allowed",
    ));
    add(case("GET", "/api/nope", &admin, None, 404, "no_route"));
    add(case(
        "GET",
        "/api/modules/echo/nope",
        &admin,
        None,
        404,
        "no_route",
    ));
    add(case(
        "POST",
        "/api/pending/r_01JDNOSUCHRUN0000000000000/answer",
        &admin,
        Some(b"{\"answer\": \"yes\"}"),
        404,
        "unknown_question",
    ));
    for body in [
        &b"{}"[..],
        b"{\"answer\": \"\"}",
        b"{\"answer\": \"   \"}",
        b"{\"answer\": 42}",
        b"{\"answer\": \"yes\", \"extra\": 1}",
    ] {
        add(case(
            "POST",
            "/api/pending/r_01JDNOSUCHRUN0000000000000/answer",
            &admin,
            Some(body),
            422,
            "invalid",
        ));
    }

    let before = kai.fingerprint();
    let mut wrong = Vec::new();
    for c in &cases {
        let a = kai.request(c.method, &c.path, &c.auth, c.body.as_deref());
        check(&a, c.status, c.code, &mut wrong);
    }
    // The same 2 MiB, chunked, with no length announced.
    let mut chunked = format!(
        "POST /api/modules/echo/invoke HTTP/1.1\r\nHost: kai\r\nConnection: close\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        kai.admin()
    )
    .into_bytes();
    for piece in big.as_bytes().chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = kai.raw(&chunked, "POST invoke, 2 MiB chunked");
    check(&a, 413, "too_large", &mut wrong);
    if !wrong.is_empty() {
        kai.fail(format!(
            "{} of {} bad requests got a wrong answer:\n{}",
            wrong.len(),
            cases.len() + 1,
            wrong.join("\n")
        ));
    }

    let after = kai.fingerprint();
    if before != after {
        let changed: Vec<String> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: {v:?} -> {:?}", after.get(k)))
            .chain(
                after
                    .keys()
                    .filter(|k| !before.contains_key(*k))
                    .map(|k| format!("new: {k}")),
            )
            .collect();
        kai.fail(format!(
            "bad requests changed kai's data:\n{}",
            changed.join("\n")
        ));
    }
    kai.expect(kai.get("/health", &Auth::None), 200);
    kai.expect(kai.get("/api/modules", &admin), 200);
    if kai.log().contains("panicked") {
        kai.fail("a handler panicked");
    }
    kai.release("alpha");
    kai.stop();
}

fn check(a: &Answer, status: u16, code: &str, wrong: &mut Vec<String>) {
    let json = a.json();
    let error_ok = json["error"].as_str().is_some_and(|e| !e.is_empty());
    if a.status != status || a.code() != code || !error_ok {
        wrong.push(format!("expected {status} {code}: {}", a.describe()));
    }
}

#[test]
fn well_formed_input_at_the_limits_is_taken() {
    let mut kai = Kai::new();
    kai.start();
    let admin = Auth::bearer(&kai.admin());
    // Just under 1 MiB of data goes through.
    let data = "d".repeat(1024 * 1024 - 100);
    let a = kai.post(
        "/api/modules/echo/invoke",
        &admin,
        &json!({ "data": data, "wait": true }),
    );
    let v = kai.expect(a, 200);
    // (echo answers with its payload, which makes its result too big: an `error` run, but a run.)
    assert_eq!(v["result"]["run_id"], v["run_id"]);
    // Bounds of the query parameters, and an empty body where one is optional.
    for path in [
        "/api/modules/echo/events?limit=1",
        "/api/modules/echo/events?limit=1000&since=366d&status=done&entity=invoke",
        "/api/modules/echo/events?since=2026-04-04",
        "/api/modules/echo/events?since=2026-04-04T14:23:01Z",
        "/api/modules/echo/events?since=2026-04-04T14%3A23%3A01%2B02%3A00",
        "/api/modules/echo/events?since=400d",
        "/api/modules/echo/events?since=1h30m",
        "/api/modules/echo/events?since=99999999999999999999999d",
        "/api/decisions?module=no-such-module-yet&limit=1000",
    ] {
        kai.expect(kai.get(path, &admin), 200);
    }
    let a = kai.request("POST", "/api/modules/echo/enable", &admin, None);
    kai.expect(a, 200);
    let a = kai.request("POST", "/api/modules/echo/invoke", &admin, None);
    kai.expect(a, 202);
    // Null is absent; an integer may be written as 12.0, as JSON Schema allows.
    let a = kai.post(
        "/api/modules/echo/invoke",
        &admin,
        &json!({ "entity": null, "data": null, "chat_id": 12.0 }),
    );
    kai.expect(a, 202);
    let a = kai.post(
        "/api/modules/echo/disable",
        &admin,
        &json!({ "reason": null }),
    );
    kai.expect(a, 200);
    kai.stop();
}
