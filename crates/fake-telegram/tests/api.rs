//! Drives the fake over real HTTP on loopback with a tiny blocking client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fake_telegram::{ApiError, FakeTelegram, User, TOKEN};
use serde_json::{json, Value};

const FORUM: i64 = -1001;
const GROUP: i64 = -1002;

/// One HTTP/1.1 request; returns (status, parsed JSON body).
fn http(
    tg: &FakeTelegram,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let addr = tg.url().trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).expect("JSON body"))
}

/// POST a JSON body to `/bot{TOKEN}/{method}`.
fn call(tg: &FakeTelegram, method: &str, params: Value) -> (u16, Value) {
    let path = format!("/bot{TOKEN}/{method}");
    http(tg, "POST", &path, "application/json", &params.to_string())
}

/// Calls and expects success; returns `result`.
fn ok(tg: &FakeTelegram, method: &str, params: Value) -> Value {
    let (status, body) = call(tg, method, params);
    assert_eq!(status, 200, "{method}: {body}");
    assert_eq!(body["ok"], json!(true));
    body["result"].clone()
}

/// Calls and expects an error; returns (status, description, body).
fn err(tg: &FakeTelegram, method: &str, params: Value) -> (u16, String, Value) {
    let (status, body) = call(tg, method, params);
    assert_eq!(body["ok"], json!(false), "{method}: {body}");
    assert_eq!(body["error_code"], json!(status));
    let description = body["description"].as_str().unwrap().to_string();
    (status, description, body)
}

fn alice() -> User {
    FakeTelegram::user(42, "Alice", "alice")
}

fn world() -> FakeTelegram {
    let tg = FakeTelegram::start();
    tg.add_private_chat(&alice());
    tg.add_forum(FORUM, "Forum");
    tg.add_group(GROUP, "Group");
    tg
}

#[test]
fn get_me_and_envelope() {
    let tg = world();
    let me = ok(&tg, "getMe", json!({}));
    assert_eq!(me["id"], json!(tg.bot().id));
    assert_eq!(me["is_bot"], json!(true));
    assert_eq!(me["username"], json!("kai_test_bot"));
    assert!(me.get("can_join_groups").is_some());
    assert!(me.get("can_read_all_group_messages").is_some());
    assert!(me.get("supports_inline_queries").is_some());
    assert!(tg.url().starts_with("http://127.0.0.1:") && !tg.url().ends_with('/'));
    // GET works too.
    let (status, body) = http(&tg, "GET", &format!("/bot{TOKEN}/getMe"), "text/plain", "");
    assert_eq!((status, body["ok"].clone()), (200, json!(true)));
}

#[test]
fn wrong_token_and_unknown_method() {
    let tg = world();
    let (status, body) = http(&tg, "POST", "/bot1:nope/getMe", "application/json", "{}");
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    let (status, description, body) = err(&tg, "frobnicate", json!({}));
    assert_eq!((status, description.as_str()), (404, "Not Found"));
    assert!(body.get("parameters").is_none());
    let calls = tg.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].error_code, Some(401));
    assert_eq!(calls[1].method, "frobnicate");
    assert_eq!(calls[1].error_code, Some(404));
}

#[test]
fn form_and_query_params() {
    let tg = world();
    let markup = r#"{"inline_keyboard":[[{"text":"Yes","callback_data":"y"}]]}"#;
    let form = format!(
        "chat_id=42&text=hello+world%21&reply_markup={}",
        markup
            .replace('"', "%22")
            .replace('{', "%7B")
            .replace('}', "%7D")
    );
    let path = format!("/bot{TOKEN}/sendMessage");
    let (status, body) = http(
        &tg,
        "POST",
        &path,
        "application/x-www-form-urlencoded",
        &form,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["text"], json!("hello world!"));
    assert_eq!(
        body["result"]["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        json!("y")
    );
    let (status, body) = http(
        &tg,
        "GET",
        &format!("{path}?chat_id=42&text=q"),
        "text/plain",
        "",
    );
    assert_eq!(status, 200, "{body}");
    let sent = tg.messages(42);
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0].reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["text"],
        json!("Yes")
    );
    assert_eq!(sent[1].text, "q");
    assert_eq!(
        tg.calls()[0].params["reply_markup"]["inline_keyboard"][0][0]["text"],
        json!("Yes")
    );
}

#[test]
fn offset_confirms_updates() {
    let tg = world();
    let first = tg.send_text(42, &alice(), "one", None, None);
    tg.send_text(42, &alice(), "two", None, None);
    assert_eq!(tg.pending_updates(), 2);
    let updates = ok(&tg, "getUpdates", json!({}));
    let updates = updates.as_array().unwrap();
    assert_eq!(updates.len(), 2);
    let id0 = updates[0]["update_id"].as_i64().unwrap();
    assert_eq!(updates[1]["update_id"].as_i64().unwrap(), id0 + 1);
    let message = &updates[0]["message"];
    assert_eq!(message["message_id"], json!(first));
    assert_eq!(message["text"], json!("one"));
    assert_eq!(
        message["from"],
        json!({"id": 42, "is_bot": false, "first_name": "Alice", "username": "alice"})
    );
    assert_eq!(
        message["chat"],
        json!({"id": 42, "type": "private", "first_name": "Alice", "username": "alice"})
    );
    assert!(message["date"].as_i64().unwrap() > 1_600_000_000);
    assert!(message.get("message_thread_id").is_none());

    // limit, then confirm the first.
    let limited = ok(&tg, "getUpdates", json!({"limit": 1}));
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let rest = ok(&tg, "getUpdates", json!({"offset": id0 + 1}));
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(tg.pending_updates(), 1);
    // Confirming the last forgets it for ever, even with a lower offset later.
    assert_eq!(ok(&tg, "getUpdates", json!({"offset": id0 + 2})), json!([]));
    assert_eq!(tg.pending_updates(), 0);
    assert_eq!(ok(&tg, "getUpdates", json!({"offset": id0})), json!([]));
    // Numbers as strings.
    tg.send_text(42, &alice(), "three", None, None);
    let updates = ok(
        &tg,
        "getUpdates",
        json!({"offset": (id0 + 2).to_string(), "timeout": "0"}),
    );
    assert_eq!(updates[0]["update_id"], json!(id0 + 2));
}

#[test]
fn long_poll_returns_on_update() {
    let tg = world();
    std::thread::scope(|s| {
        let poll = s.spawn(|| {
            let started = Instant::now();
            let result = ok(&tg, "getUpdates", json!({"timeout": 10}));
            (started.elapsed(), result)
        });
        assert!(tg.wait_until(Duration::from_secs(5), |tg| tg.calls().len() == 1));
        std::thread::sleep(Duration::from_millis(200));
        tg.send_text(42, &alice(), "wake up", None, None);
        let (elapsed, result) = poll.join().unwrap();
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert_eq!(result[0]["message"]["text"], json!("wake up"));
    });
}

#[test]
fn long_poll_times_out_empty() {
    let tg = world();
    let started = Instant::now();
    let result = ok(&tg, "getUpdates", json!({"timeout": 1}));
    let elapsed = started.elapsed();
    assert_eq!(result, json!([]));
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn second_poller_conflicts() {
    let tg = world();
    std::thread::scope(|s| {
        let first = s.spawn(|| call(&tg, "getUpdates", json!({"timeout": 10})));
        assert!(tg.wait_until(Duration::from_secs(5), |tg| tg.calls().len() == 1));
        std::thread::sleep(Duration::from_millis(100));
        let second = s.spawn(|| call(&tg, "getUpdates", json!({"timeout": 1})));
        let (status, body) = first.join().unwrap();
        assert_eq!(status, 409);
        assert_eq!(
            body["description"],
            json!("Conflict: terminated by other getUpdates request; make sure that only one bot instance is running")
        );
        let (status, body) = second.join().unwrap();
        assert_eq!((status, body["result"].clone()), (200, json!([])));
    });
    let codes: Vec<_> = tg.calls().iter().map(|c| c.error_code).collect();
    assert_eq!(codes, vec![Some(409), None]);
}

#[test]
fn send_message_errors() {
    let tg = world();
    let (status, description, _) = err(&tg, "sendMessage", json!({"chat_id": 7, "text": "x"}));
    assert_eq!(
        (status, description.as_str()),
        (400, "Bad Request: chat not found")
    );
    let (_, description, _) = err(&tg, "sendMessage", json!({"chat_id": 42, "text": ""}));
    assert_eq!(description, "Bad Request: message text is empty");
    let long = "é".repeat(4097);
    let (_, description, _) = err(&tg, "sendMessage", json!({"chat_id": 42, "text": long}));
    assert_eq!(description, "Bad Request: message is too long");
    ok(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "é".repeat(4096)}),
    );
    // Markup does not count towards the length.
    let bold = format!("<b>{}</b>", "a".repeat(4096));
    ok(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": bold, "parse_mode": "HTML"}),
    );

    for (text, mode) in [
        ("<b>bold", "HTML"),
        ("a < b", "HTML"),
        ("Tom & Jerry", "HTML"),
        ("<div>x</div>", "HTML"),
        ("snake_case", "Markdown"),
        ("*bold", "Markdown"),
        ("version 1.2", "MarkdownV2"),
        ("*bold", "MarkdownV2"),
    ] {
        let (status, description, _) = err(
            &tg,
            "sendMessage",
            json!({"chat_id": 42, "text": text, "parse_mode": mode}),
        );
        assert_eq!(status, 400);
        assert!(
            description.starts_with("Bad Request: can't parse entities: "),
            "{text}: {description}"
        );
    }
    for (text, mode) in [
        (
            "<b>bold</b> &lt;tag&gt; <a href=\"https://x.y\">link</a>",
            "HTML",
        ),
        ("*bold* _it_ `code` \\_", "Markdown"),
        ("*bold* version 1\\.2 \\(ok\\)", "MarkdownV2"),
    ] {
        ok(
            &tg,
            "sendMessage",
            json!({"chat_id": 42, "text": text, "parse_mode": mode}),
        );
    }

    let keyboard =
        |data: &str| json!({"inline_keyboard": [[{"text": "b", "callback_data": data}]]});
    let (_, description, _) = err(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_markup": keyboard(&"d".repeat(65))}),
    );
    assert_eq!(description, "Bad Request: BUTTON_DATA_INVALID");
    let (_, description, _) = err(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_markup": keyboard("")}),
    );
    assert_eq!(description, "Bad Request: BUTTON_DATA_INVALID");
    ok(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_markup": keyboard(&"d".repeat(64))}),
    );

    let (_, description, _) = err(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_parameters": {"message_id": 999}}),
    );
    assert_eq!(description, "Bad Request: message to be replied not found");
    let (_, description, _) = err(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_to_message_id": 999}),
    );
    assert_eq!(description, "Bad Request: message to be replied not found");

    // Nothing failed was stored.
    assert_eq!(tg.messages(42).len(), 6);
}

#[test]
fn topics_and_forum_quirks() {
    let tg = world();
    let (_, description, _) = err(
        &tg,
        "createForumTopic",
        json!({"chat_id": GROUP, "name": "t"}),
    );
    assert_eq!(description, "Bad Request: the chat is not a forum");
    let topic = ok(
        &tg,
        "createForumTopic",
        json!({"chat_id": FORUM, "name": "Work"}),
    );
    let thread = topic["message_thread_id"].as_i64().unwrap();
    assert_eq!(topic["name"], json!("Work"));
    assert!(topic["icon_color"].is_i64());
    let other = ok(
        &tg,
        "createForumTopic",
        json!({"chat_id": FORUM, "name": "Play", "icon_color": 16766590}),
    );
    let other_thread = other["message_thread_id"].as_i64().unwrap();
    assert_eq!(other_thread, thread + 1);
    let names: Vec<_> = tg.topics(FORUM).into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["Work", "Play"]);

    // A user message in the topic, not a reply: reply_to_message is the creation service message.
    let m1 = tg.send_text(FORUM, &alice(), "hi topic", Some(thread), None);
    assert_eq!(m1, other_thread + 1);
    // In General: no thread fields.
    tg.send_text(FORUM, &alice(), "hi general", None, None);
    let updates = ok(&tg, "getUpdates", json!({}));
    let in_topic = &updates[0]["message"];
    assert_eq!(in_topic["message_thread_id"], json!(thread));
    assert_eq!(in_topic["is_topic_message"], json!(true));
    assert_eq!(
        in_topic["chat"],
        json!({"id": FORUM, "type": "supergroup", "title": "Forum", "is_forum": true})
    );
    let created = &in_topic["reply_to_message"];
    assert_eq!(created["message_id"], json!(thread));
    assert_eq!(created["forum_topic_created"]["name"], json!("Work"));
    assert!(created["forum_topic_created"]["icon_color"].is_i64());
    let in_general = &updates[1]["message"];
    assert!(in_general.get("message_thread_id").is_none());
    assert!(in_general.get("is_topic_message").is_none());
    assert!(in_general.get("reply_to_message").is_none());

    // The bot answers in the topic, replying to m1.
    let sent = ok(
        &tg,
        "sendMessage",
        json!({"chat_id": FORUM, "text": "hello", "message_thread_id": thread, "reply_parameters": {"message_id": m1}}),
    );
    assert_eq!(sent["message_thread_id"], json!(thread));
    assert_eq!(sent["is_topic_message"], json!(true));
    assert_eq!(sent["reply_to_message"]["message_id"], json!(m1));
    assert_eq!(sent["from"]["is_bot"], json!(true));

    // An explicit user reply inside the topic carries the replied message in full.
    let bot_msg = sent["message_id"].as_i64().unwrap();
    tg.send_text(FORUM, &alice(), "thanks", Some(thread), Some(bot_msg));
    let last = ok(
        &tg,
        "getUpdates",
        json!({"offset": updates[1]["update_id"].as_i64().unwrap() + 1}),
    );
    let reply = &last[0]["message"];
    assert_eq!(reply["message_thread_id"], json!(thread));
    assert_eq!(reply["is_topic_message"], json!(true));
    assert_eq!(reply["reply_to_message"]["message_id"], json!(bot_msg));
    assert_eq!(reply["reply_to_message"]["text"], json!("hello"));
    assert_eq!(
        reply["reply_to_message"]["message_thread_id"],
        json!(thread)
    );

    // Thread errors: General (1), unknown, deleted.
    for t in [1, 9999] {
        let (status, description, _) = err(
            &tg,
            "sendMessage",
            json!({"chat_id": FORUM, "text": "x", "message_thread_id": t}),
        );
        assert_eq!(
            (status, description.as_str()),
            (400, "Bad Request: message thread not found")
        );
    }
    tg.delete_topic(FORUM, thread);
    assert_eq!(tg.topics(FORUM).len(), 1);
    assert!(tg.messages(FORUM).is_empty());
    let (_, description, _) = err(
        &tg,
        "sendMessage",
        json!({"chat_id": FORUM, "text": "x", "message_thread_id": thread}),
    );
    assert_eq!(description, "Bad Request: message thread not found");
    // In a group without topics the thread id is ignored.
    ok(
        &tg,
        "sendMessage",
        json!({"chat_id": GROUP, "text": "x", "message_thread_id": 5}),
    );
    assert_eq!(tg.messages(GROUP)[0].thread_id, None);

    assert_eq!(
        ok(
            &tg,
            "deleteForumTopic",
            json!({"chat_id": FORUM, "message_thread_id": other_thread})
        ),
        json!(true)
    );
    assert!(tg.topics(FORUM).is_empty());
}

#[test]
fn button_press_and_callback_answer() {
    let tg = world();
    let keyboard = json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "q1:yes"}]]});
    let sent = ok(
        &tg,
        "sendMessage",
        json!({"chat_id": 42, "text": "Sure?", "reply_markup": keyboard}),
    );
    let message_id = sent["message_id"].as_i64().unwrap();
    let query_id = tg.press_button(42, message_id, &alice(), "q1:yes");
    let updates = ok(&tg, "getUpdates", json!({}));
    let query = &updates[0]["callback_query"];
    assert_eq!(query["id"], json!(query_id));
    assert_eq!(query["from"]["id"], json!(42));
    assert_eq!(query["data"], json!("q1:yes"));
    assert!(query["chat_instance"].is_string());
    assert_eq!(query["message"]["message_id"], json!(message_id));
    assert_eq!(query["message"]["reply_markup"], keyboard);
    assert_eq!(query["message"]["from"]["is_bot"], json!(true));

    assert_eq!(
        ok(
            &tg,
            "answerCallbackQuery",
            json!({"callback_query_id": query_id, "text": "ok"})
        ),
        json!(true)
    );
    let (_, description, _) = err(
        &tg,
        "answerCallbackQuery",
        json!({"callback_query_id": "nope"}),
    );
    assert_eq!(
        description,
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    );
    assert_eq!(
        tg.callback_answers(),
        vec![json!({"callback_query_id": query_id, "text": "ok"})]
    );

    // Edit the message: text replaced, keyboard removed, marked edited.
    let edited = ok(
        &tg,
        "editMessageText",
        json!({"chat_id": 42, "message_id": message_id, "text": "Done"}),
    );
    assert_eq!(edited["text"], json!("Done"));
    assert!(edited.get("reply_markup").is_none());
    assert!(edited["edit_date"].is_i64());
    let (_, description, _) = err(
        &tg,
        "editMessageText",
        json!({"chat_id": 42, "message_id": message_id, "text": "Done"}),
    );
    assert!(
        description.starts_with("Bad Request: message is not modified: "),
        "{description}"
    );
    let (_, description, _) = err(
        &tg,
        "editMessageText",
        json!({"chat_id": 42, "message_id": 999, "text": "x"}),
    );
    assert_eq!(description, "Bad Request: message to edit not found");
    let stored = &tg.messages(42)[0];
    assert!(stored.edited);
    assert_eq!(stored.text, "Done");
    assert_eq!(stored.reply_markup, None);
}

#[test]
fn faults_and_rate_limit() {
    let tg = world();
    tg.fail_next("sendMessage", 1, ApiError::too_many_requests(3));
    let (status, description, body) = err(&tg, "sendMessage", json!({"chat_id": 42, "text": "x"}));
    assert_eq!(
        (status, description.as_str()),
        (429, "Too Many Requests: retry after 3")
    );
    assert_eq!(body["parameters"], json!({"retry_after": 3}));
    ok(&tg, "sendMessage", json!({"chat_id": 42, "text": "x"}));

    tg.fail_next("getMe", 2, ApiError::bad_request("boom"));
    assert_eq!(err(&tg, "getMe", json!({})).1, "Bad Request: boom");
    assert_eq!(err(&tg, "getMe", json!({})).1, "Bad Request: boom");
    ok(&tg, "getMe", json!({}));

    tg.rate_limit(Some(2));
    ok(&tg, "sendMessage", json!({"chat_id": 42, "text": "a"}));
    ok(&tg, "sendMessage", json!({"chat_id": 42, "text": "b"}));
    let (status, _, body) = err(&tg, "sendMessage", json!({"chat_id": 42, "text": "c"}));
    assert_eq!(status, 429);
    assert_eq!(body["parameters"]["retry_after"], json!(1));
    // Another chat has its own budget.
    ok(&tg, "sendMessage", json!({"chat_id": GROUP, "text": "a"}));
    std::thread::sleep(Duration::from_millis(1050));
    ok(&tg, "sendMessage", json!({"chat_id": 42, "text": "c"}));
    tg.rate_limit(None);

    let texts: Vec<_> = tg.messages(42).into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["x", "a", "b", "c"]);
    let codes: Vec<_> = tg.calls().iter().filter_map(|c| c.error_code).collect();
    assert_eq!(codes, [429, 400, 400, 429]);
}

#[test]
fn chat_info_members_and_actions() {
    let tg = world();
    let chat = ok(&tg, "getChat", json!({"chat_id": FORUM}));
    assert_eq!(chat["is_forum"], json!(true));
    assert_eq!(chat["type"], json!("supergroup"));
    assert_eq!(chat["max_reaction_count"], json!(11));
    assert_eq!(
        ok(&tg, "getChat", json!({"chat_id": "42"}))["type"],
        json!("private")
    );
    assert_eq!(
        err(&tg, "getChat", json!({"chat_id": 5})).1,
        "Bad Request: chat not found"
    );
    let me = ok(
        &tg,
        "getChatMember",
        json!({"chat_id": FORUM, "user_id": tg.bot().id}),
    );
    assert_eq!(me["status"], json!("administrator"));
    assert_eq!(me["can_manage_topics"], json!(true));
    assert_eq!(me["user"]["username"], json!("kai_test_bot"));
    let alice_member = ok(&tg, "getChatMember", json!({"chat_id": 42, "user_id": 42}));
    assert_eq!(alice_member["status"], json!("member"));
    assert_eq!(
        ok(
            &tg,
            "sendChatAction",
            json!({"chat_id": 42, "action": "typing"})
        ),
        json!(true)
    );
}

#[test]
fn group_replies_carry_reply_thread() {
    let tg = world();
    let root = tg.send_text(GROUP, &alice(), "root", None, None);
    let sent = ok(
        &tg,
        "sendMessage",
        json!({"chat_id": GROUP, "text": "re", "reply_to_message_id": root}),
    );
    assert_eq!(sent["message_thread_id"], json!(root));
    assert!(sent.get("is_topic_message").is_none());
    assert_eq!(sent["reply_to_message"]["text"], json!("root"));
    assert_eq!(tg.messages(GROUP)[0].reply_to, Some(root));
}

#[test]
fn drop_stops_server_during_long_poll() {
    let tg = world();
    let addr = tg.url().trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    let body = r#"{"timeout":30}"#;
    let request = format!(
        "POST /bot{TOKEN}/getUpdates HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    assert!(tg.wait_until(Duration::from_secs(5), |tg| tg.calls().len() == 1));
    let started = Instant::now();
    drop(tg);
    assert!(started.elapsed() < Duration::from_secs(2));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(TcpStream::connect(&addr).is_err());
}
