//! A local fake of the Telegram Bot API for kai's end-to-end tests.
//!
//! [`FakeTelegram::start`] serves `{url}/bot{TOKEN}/{method}` on loopback from
//! its own thread and tokio runtime, so plain `#[test]` functions can use it.
//! Tests build the world (chats, forums, topics), act as users
//! ([`FakeTelegram::send_text`], [`FakeTelegram::press_button`]), inject
//! faults, and inspect what the bot did.
//!
//! # What it reproduces
//!
//! - The envelope: `{"ok":true,"result":..}`, or the HTTP status equal to
//!   `error_code` with `{"ok":false,"error_code","description","parameters"?}`;
//!   401 `Unauthorized` for any token but [`TOKEN`], 404 `Not Found` for an
//!   unknown method. Method names match case-insensitively, as in the real API.
//! - Parameters as a JSON body, an `application/x-www-form-urlencoded` body or
//!   a query string (JSON-valued fields such as `reply_markup` may be strings;
//!   numbers may be strings), over GET or POST.
//! - `getUpdates` with the real offset semantics (ids below `offset` are
//!   confirmed and forgotten; a negative offset keeps the last `-offset`),
//!   `limit`, long polling with `timeout`, `allowed_updates` (remembered
//!   between calls, as the real API does), and 409 `Conflict` for the *older*
//!   request when a second getUpdates arrives while one is waiting (the
//!   request that gets "terminated by other getUpdates request").
//! - Message, Chat, User, ForumTopic, CallbackQuery, ChatFullInfo and
//!   ChatMember shapes, including the forum quirks: a message in a topic has
//!   `message_thread_id` and `is_topic_message: true` and, when not an explicit
//!   reply, a `reply_to_message` that is the topic's `forum_topic_created`
//!   service message; messages in General have neither. In an ordinary
//!   (non-forum) supergroup a reply carries `message_thread_id` = the id of the
//!   first message of its reply chain, without `is_topic_message`. Message ids
//!   are per chat and shared by user, bot and service messages. A user text
//!   starting with `/` gets a `bot_command` entity.
//! - Methods: `getMe`, `getUpdates`, `sendMessage`, `editMessageText`,
//!   `editMessageReplyMarkup`, `deleteMessage`, `createForumTopic`,
//!   `deleteForumTopic`, `answerCallbackQuery`, `sendChatAction`, `getChat`,
//!   `getChatMember`, `deleteWebhook`, `setMyCommands`, `deleteMyCommands`,
//!   with the validation errors documented on the real API (chat not found,
//!   message text is empty, message is too long, message thread not found,
//!   can't parse entities, BUTTON_DATA_INVALID, message to be replied not
//!   found, message to edit not found, message is not modified, the chat is not
//!   a forum, query is too old...).
//! - Faults: [`FakeTelegram::fail_next`] and a per-chat sendMessage rate limit
//!   ([`FakeTelegram::rate_limit`]) answering 429 with `retry_after`.
//!
//! # What it does not
//!
//! - No files, media, stickers, polls, inline mode, payments, webhooks,
//!   `multipart/form-data`, business or channel features; no `@username` chat
//!   ids; no `message_entities` in results (the `text` returned is the visible
//!   text, with markup removed).
//! - Formatting is validated by small parsers: HTML is slightly stricter than
//!   the real one (a bare `&` or `>` is rejected), legacy Markdown is close,
//!   MarkdownV2 is an approximation (reserved characters must be escaped unless
//!   they are balanced markup; see `markup.rs`). Length is counted in Unicode
//!   scalar values of the visible text.
//! - Errors whose exact real wording is not documented are best guesses
//!   (e.g. topic name checks, a button without text).
//! - [`FakeTelegram::callback_answers`] lists only the answerCallbackQuery
//!   calls that succeeded (every attempt is in [`FakeTelegram::calls`]).

mod markup;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};
use tokio::sync::{oneshot, watch};

/// The only bot token the fake accepts; any other answers 401.
pub const TOKEN: &str = "123456:TEST-token";

/// The bot's user id (the token's prefix, as with real tokens).
const BOT_ID: i64 = 123456;
/// The first update_id handed out.
const FIRST_UPDATE_ID: i64 = 100_000_000;
/// Telegram's default topic icon colour (0x6FB9F0).
const DEFAULT_ICON_COLOR: i64 = 7_322_096;
const ICON_COLORS: &[i64] = &[
    7_322_096, 16_766_590, 13_338_331, 9_367_192, 16_749_490, 16_478_047,
];
const MAX_TEXT_CHARS: usize = 4096;
const CONFLICT: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

// ---------------------------------------------------------------------------
// Public data types
// ---------------------------------------------------------------------------

/// A Telegram user. Serializes as the real User object
/// (`{"id","is_bot","first_name","username"?}`); `is_bot` is true for the
/// fake's own bot only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
}

impl Serialize for User {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("is_bot", &(self.id == BOT_ID))?;
        map.serialize_entry("first_name", &self.first_name)?;
        if let Some(username) = &self.username {
            map.serialize_entry("username", username)?;
        }
        map.end()
    }
}

/// A message the bot sent (and that still exists), as the fake stores it.
/// `text` is the text exactly as sent (markup included); `thread_id` is the
/// forum topic, if any; `reply_to` the explicitly replied message.
#[derive(Clone, Debug, PartialEq)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub thread_id: Option<i64>,
    pub text: String,
    pub parse_mode: Option<String>,
    pub reply_markup: Option<Value>,
    pub reply_to: Option<i64>,
    pub edited: bool,
}

/// A forum topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic {
    pub thread_id: i64,
    pub name: String,
}

/// One API call received: the method as written in the URL, its parameters
/// (form and query values that hold JSON objects or arrays are parsed), and
/// the answer's `error_code` when it failed (`None` while a long poll waits).
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub method: String,
    pub params: Value,
    pub error_code: Option<i64>,
}

/// An error answer of the Bot API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub error_code: i64,
    pub description: String,
    pub retry_after: Option<i64>,
}

impl ApiError {
    /// 429 `Too Many Requests: retry after N` with `parameters.retry_after`.
    pub fn too_many_requests(retry_after: i64) -> Self {
        ApiError {
            error_code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
        }
    }

    /// 400 `Bad Request: <description>`; the prefix is added unless present.
    pub fn bad_request(description: &str) -> Self {
        let description = if description.starts_with("Bad Request: ") {
            description.to_string()
        } else {
            format!("Bad Request: {description}")
        };
        ApiError {
            error_code: 400,
            description,
            retry_after: None,
        }
    }

    fn new(error_code: i64, description: &str) -> Self {
        ApiError {
            error_code,
            description: description.to_string(),
            retry_after: None,
        }
    }

    fn body(&self) -> Value {
        let mut body = json!({
            "ok": false,
            "error_code": self.error_code,
            "description": self.description,
        });
        if let Some(retry_after) = self.retry_after {
            body["parameters"] = json!({ "retry_after": retry_after });
        }
        body
    }
}

type ApiResult = Result<Value, ApiError>;

// ---------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------

struct Msg {
    id: i64,
    from: User,
    date: i64,
    /// Text as sent, and as displayed (markup removed).
    raw_text: Option<String>,
    text: Option<String>,
    parse_mode: Option<String>,
    /// The forum topic (never General).
    thread_id: Option<i64>,
    /// The explicitly replied message.
    reply_to: Option<i64>,
    reply_markup: Option<Value>,
    edit_date: Option<i64>,
    /// For a topic's creation service message: its name and icon colour.
    topic_created: Option<(String, i64)>,
}

struct TopicRec {
    thread_id: i64,
    name: String,
    icon_color: i64,
}

enum ChatKind {
    Private(User),
    Supergroup { title: String, forum: bool },
}

struct Chat {
    id: i64,
    kind: ChatKind,
    next_message_id: i64,
    messages: BTreeMap<i64, Msg>,
    topics: Vec<TopicRec>,
}

impl Chat {
    fn is_forum(&self) -> bool {
        matches!(self.kind, ChatKind::Supergroup { forum: true, .. })
    }

    fn take_message_id(&mut self) -> i64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    fn has_topic(&self, thread_id: i64) -> bool {
        self.topics.iter().any(|t| t.thread_id == thread_id)
    }

    /// The Chat object as it appears inside a Message.
    fn json(&self) -> Value {
        match &self.kind {
            ChatKind::Private(user) => {
                let mut chat =
                    json!({ "id": self.id, "type": "private", "first_name": user.first_name });
                if let Some(username) = &user.username {
                    chat["username"] = json!(username);
                }
                chat
            }
            ChatKind::Supergroup { title, forum } => {
                let mut chat = json!({ "id": self.id, "type": "supergroup", "title": title });
                if *forum {
                    chat["is_forum"] = json!(true);
                }
                chat
            }
        }
    }

    /// The Message object. `nested` renders a `reply_to_message` (which
    /// itself carries no further `reply_to_message`).
    fn render(&self, m: &Msg, nested: bool) -> Value {
        let mut o = Map::new();
        o.insert("message_id".into(), json!(m.id));
        o.insert("from".into(), json!(m.from));
        o.insert("chat".into(), self.json());
        o.insert("date".into(), json!(m.date));
        if let Some(thread_id) = m.thread_id {
            o.insert("message_thread_id".into(), json!(thread_id));
            o.insert("is_topic_message".into(), json!(true));
        } else if matches!(self.kind, ChatKind::Supergroup { forum: false, .. })
            && m.reply_to.is_some()
        {
            o.insert("message_thread_id".into(), json!(self.reply_root(m)));
        }
        if !nested {
            let implicit = m.thread_id.filter(|_| m.topic_created.is_none());
            if let Some(replied) = m
                .reply_to
                .or(implicit)
                .and_then(|id| self.messages.get(&id))
            {
                o.insert("reply_to_message".into(), self.render(replied, true));
            }
        }
        if let Some(edit_date) = m.edit_date {
            o.insert("edit_date".into(), json!(edit_date));
        }
        if let Some((name, icon_color)) = &m.topic_created {
            o.insert(
                "forum_topic_created".into(),
                json!({ "name": name, "icon_color": icon_color }),
            );
        }
        if let Some(text) = &m.text {
            o.insert("text".into(), json!(text));
            if m.from.id != BOT_ID && text.starts_with('/') {
                let command = text.split_whitespace().next().unwrap_or(text);
                let length = command.encode_utf16().count();
                o.insert(
                    "entities".into(),
                    json!([{ "type": "bot_command", "offset": 0, "length": length }]),
                );
            }
        }
        if let Some(markup) = &m.reply_markup {
            o.insert("reply_markup".into(), markup.clone());
        }
        Value::Object(o)
    }

    /// The first message of `m`'s reply chain.
    fn reply_root(&self, m: &Msg) -> i64 {
        let mut id = m.reply_to.unwrap_or(m.id);
        let mut hops = 0;
        while let Some(parent) = self.messages.get(&id).and_then(|p| p.reply_to) {
            id = parent;
            hops += 1;
            if hops > 10_000 {
                break;
            }
        }
        id
    }
}

#[derive(Default)]
struct World {
    chats: BTreeMap<i64, Chat>,
    users: HashMap<i64, User>,
    next_update_id: i64,
    /// Unconfirmed updates, oldest first: (update_id, kind, update).
    updates: VecDeque<(i64, &'static str, Value)>,
    allowed_updates: Option<Vec<String>>,
    /// Bumped by each getUpdates; a waiting poll that sees another value was
    /// terminated by a newer request.
    poll_generation: u64,
    calls: Vec<Call>,
    callback_answers: Vec<Value>,
    /// Callback query id -> already answered.
    callback_queries: HashMap<String, bool>,
    next_callback_query: u64,
    faults: HashMap<String, VecDeque<ApiError>>,
    rate_limit: Option<u32>,
    recent_sends: HashMap<i64, VecDeque<Instant>>,
}

impl World {
    fn push_update(&mut self, kind: &'static str, payload: Value) {
        let id = self.next_update_id;
        self.next_update_id += 1;
        self.updates
            .push_back((id, kind, json!({ "update_id": id, kind: payload })));
    }

    fn chat(&self, chat_id: i64) -> Result<&Chat, ApiError> {
        self.chats.get(&chat_id).ok_or_else(chat_not_found)
    }

    fn chat_mut(&mut self, chat_id: i64) -> Result<&mut Chat, ApiError> {
        self.chats.get_mut(&chat_id).ok_or_else(chat_not_found)
    }

    fn add_chat(&mut self, id: i64, kind: ChatKind) {
        // In a supergroup message 1 is the (implicit) creation service message,
        // which is also why General is thread 1 in a forum.
        let first = if matches!(kind, ChatKind::Private(_)) {
            1
        } else {
            2
        };
        self.chats.insert(
            id,
            Chat {
                id,
                kind,
                next_message_id: first,
                messages: BTreeMap::new(),
                topics: Vec::new(),
            },
        );
    }
}

fn chat_not_found() -> ApiError {
    ApiError::bad_request("chat not found")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

struct Shared {
    world: Mutex<World>,
    /// Ticks on every new update and every new getUpdates, waking long polls.
    tick: watch::Sender<u64>,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_pollers(&self) {
        self.tick.send_modify(|t| *t += 1);
    }
}

// ---------------------------------------------------------------------------
// FakeTelegram
// ---------------------------------------------------------------------------

/// A running fake Bot API server. Stops when dropped.
pub struct FakeTelegram {
    shared: Arc<Shared>,
    port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeTelegram {
    /// Binds 127.0.0.1 on a free port and serves from a thread of its own.
    pub fn start() -> FakeTelegram {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("set_nonblocking");
        let world = World {
            next_update_id: FIRST_UPDATE_ID,
            ..World::default()
        };
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            tick: watch::channel(0).0,
        });
        let (shutdown, stop) = oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("fake-telegram-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        result = axum::serve(listener, app) => result.expect("fake-telegram server"),
                        _ = stop => {}
                    }
                });
                // Dropping the runtime cancels open connections and long polls.
                runtime.shutdown_background();
            })
            .expect("spawn fake-telegram thread");
        FakeTelegram {
            shared,
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bot's own user.
    pub fn bot(&self) -> User {
        bot_user()
    }

    /// A user (helper constructor).
    pub fn user(id: i64, first_name: &str, username: &str) -> User {
        User {
            id,
            first_name: first_name.to_string(),
            username: Some(username.to_string()),
        }
    }

    /// A private chat with `user` (chat id == user id).
    pub fn add_private_chat(&self, user: &User) {
        let mut w = self.shared.world();
        w.users.insert(user.id, user.clone());
        w.add_chat(user.id, ChatKind::Private(user.clone()));
    }

    /// A supergroup with topics, the bot an administrator that can manage them.
    pub fn add_forum(&self, chat_id: i64, title: &str) {
        let kind = ChatKind::Supergroup {
            title: title.to_string(),
            forum: true,
        };
        self.shared.world().add_chat(chat_id, kind);
    }

    /// A supergroup without topics, the bot an administrator.
    pub fn add_group(&self, chat_id: i64, title: &str) {
        let kind = ChatKind::Supergroup {
            title: title.to_string(),
            forum: false,
        };
        self.shared.world().add_chat(chat_id, kind);
    }

    /// `from` writes `text` in the chat (in a topic when `thread_id` is given;
    /// as a reply when `reply_to` is). Queues a `message` update and returns
    /// the new message id. A reply without `thread_id` goes to the replied
    /// message's topic. Panics on an unknown chat, topic or replied message.
    pub fn send_text(
        &self,
        chat_id: i64,
        from: &User,
        text: &str,
        thread_id: Option<i64>,
        reply_to: Option<i64>,
    ) -> i64 {
        let mut w = self.shared.world();
        w.users.insert(from.id, from.clone());
        let chat = w.chats.get_mut(&chat_id).expect("send_text: unknown chat");
        if let Some(r) = reply_to {
            assert!(
                chat.messages.contains_key(&r),
                "send_text: no message {r} in chat {chat_id}"
            );
        }
        let thread_id = if chat.is_forum() {
            let thread_id = thread_id
                .filter(|t| *t != 1)
                .or_else(|| reply_to.and_then(|r| chat.messages[&r].thread_id));
            if let Some(t) = thread_id {
                assert!(
                    chat.has_topic(t),
                    "send_text: no topic {t} in chat {chat_id}"
                );
            }
            thread_id
        } else {
            None
        };
        let id = chat.take_message_id();
        let msg = Msg {
            id,
            from: from.clone(),
            date: now(),
            raw_text: Some(text.to_string()),
            text: Some(text.to_string()),
            parse_mode: None,
            thread_id,
            reply_to,
            reply_markup: None,
            edit_date: None,
            topic_created: None,
        };
        let payload = chat.render(&msg, false);
        chat.messages.insert(id, msg);
        w.push_update("message", payload);
        drop(w);
        self.shared.wake_pollers();
        id
    }

    /// `from` presses the inline button with callback data `data` under
    /// message `message_id`. Queues a `callback_query` update and returns the
    /// query id. Panics on an unknown chat or message.
    pub fn press_button(&self, chat_id: i64, message_id: i64, from: &User, data: &str) -> String {
        let mut w = self.shared.world();
        w.users.insert(from.id, from.clone());
        let chat = w.chats.get(&chat_id).expect("press_button: unknown chat");
        let msg = chat
            .messages
            .get(&message_id)
            .unwrap_or_else(|| panic!("press_button: no message {message_id} in chat {chat_id}"));
        let message = chat.render(msg, false);
        w.next_callback_query += 1;
        let id = (4_000_000_000_000_000_000u64 + w.next_callback_query * 7_919).to_string();
        let payload = json!({
            "id": id,
            "from": from,
            "message": message,
            "chat_instance": (chat_id.wrapping_mul(-7_777_777_777)).to_string(),
            "data": data,
        });
        w.callback_queries.insert(id.clone(), false);
        w.push_update("callback_query", payload);
        drop(w);
        self.shared.wake_pollers();
        id
    }

    /// A user deletes the topic in the app: the topic and its messages are gone.
    pub fn delete_topic(&self, chat_id: i64, thread_id: i64) {
        let mut w = self.shared.world();
        let chat = w
            .chats
            .get_mut(&chat_id)
            .expect("delete_topic: unknown chat");
        remove_topic(chat, thread_id);
    }

    /// The next `count` calls of `method` answer `error` (before any other check).
    pub fn fail_next(&self, method: &str, count: usize, error: ApiError) {
        let mut w = self.shared.world();
        let queue = w.faults.entry(method.to_ascii_lowercase()).or_default();
        queue.extend(std::iter::repeat_n(error, count));
    }

    /// `Some(n)`: a sendMessage beyond `n` to one chat within one second
    /// answers 429 with `retry_after` 1 and sends nothing. `None`: off.
    pub fn rate_limit(&self, per_chat_per_second: Option<u32>) {
        let mut w = self.shared.world();
        w.rate_limit = per_chat_per_second;
        w.recent_sends.clear();
    }

    /// Every message the bot sent to the chat that still exists, in order.
    pub fn messages(&self, chat_id: i64) -> Vec<SentMessage> {
        let w = self.shared.world();
        let Some(chat) = w.chats.get(&chat_id) else {
            return Vec::new();
        };
        chat.messages
            .values()
            .filter(|m| m.from.id == BOT_ID && m.topic_created.is_none())
            .map(|m| SentMessage {
                message_id: m.id,
                chat_id,
                thread_id: m.thread_id,
                text: m.raw_text.clone().unwrap_or_default(),
                parse_mode: m.parse_mode.clone(),
                reply_markup: m.reply_markup.clone(),
                reply_to: m.reply_to,
                edited: m.edit_date.is_some(),
            })
            .collect()
    }

    /// Existing topics of the chat, in creation order (General excluded).
    pub fn topics(&self, chat_id: i64) -> Vec<Topic> {
        let w = self.shared.world();
        w.chats.get(&chat_id).map_or_else(Vec::new, |chat| {
            chat.topics
                .iter()
                .map(|t| Topic {
                    thread_id: t.thread_id,
                    name: t.name.clone(),
                })
                .collect()
        })
    }

    /// Every API call received, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.world().calls.clone()
    }

    /// Params of every successful answerCallbackQuery call.
    pub fn callback_answers(&self) -> Vec<Value> {
        self.shared.world().callback_answers.clone()
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending_updates(&self) -> usize {
        self.shared.world().updates.len()
    }

    /// Polls `what` every 20 ms until it holds (true) or `timeout` passes (false).
    pub fn wait_until(&self, timeout: Duration, what: impl Fn(&FakeTelegram) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if what(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bot_user() -> User {
    User {
        id: BOT_ID,
        first_name: "Kai".to_string(),
        username: Some("kai_test_bot".to_string()),
    }
}

fn remove_topic(chat: &mut Chat, thread_id: i64) {
    chat.topics.retain(|t| t.thread_id != thread_id);
    chat.messages.retain(|_, m| m.thread_id != Some(thread_id));
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let Some((token, method)) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
        .map(|(t, m)| (t.to_string(), m.to_string()))
    else {
        return reply(Err(ApiError::new(404, "Not Found")));
    };
    let body = axum::body::to_bytes(request.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let params = parse_params(query.as_deref(), &content_type, &body);

    let index = {
        let mut w = shared.world();
        w.calls.push(Call {
            method: method.clone(),
            params: params.clone().map_or(Value::Null, Value::Object),
            error_code: None,
        });
        w.calls.len() - 1
    };
    let result = answer(&shared, &token, &method, params).await;
    if let Err(error) = &result {
        shared.world().calls[index].error_code = Some(error.error_code);
    }
    reply(result)
}

async fn answer(
    shared: &Shared,
    token: &str,
    method: &str,
    params: Option<Map<String, Value>>,
) -> ApiResult {
    if token != TOKEN {
        return Err(ApiError::new(401, "Unauthorized"));
    }
    let method = method.to_ascii_lowercase();
    {
        let mut w = shared.world();
        if let Some(error) = w.faults.get_mut(&method).and_then(VecDeque::pop_front) {
            return Err(error);
        }
    }
    let p = Params(params.ok_or_else(|| ApiError::bad_request("can't parse request JSON object"))?);
    if method == "getupdates" {
        return get_updates(shared, &p).await;
    }
    let mut w = shared.world();
    match method.as_str() {
        "getme" => Ok(json!({
            "id": BOT_ID,
            "is_bot": true,
            "first_name": bot_user().first_name,
            "username": bot_user().username,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "sendmessage" => send_message(&mut w, &p),
        "editmessagetext" => edit_message(&mut w, &p, true),
        "editmessagereplymarkup" => edit_message(&mut w, &p, false),
        "deletemessage" => delete_message(&mut w, &p),
        "createforumtopic" => create_forum_topic(&mut w, &p),
        "deleteforumtopic" => delete_forum_topic(&mut w, &p),
        "answercallbackquery" => answer_callback_query(&mut w, &p),
        "sendchataction" => send_chat_action(&w, &p),
        "getchat" => get_chat(&w, &p),
        "getchatmember" => get_chat_member(&w, &p),
        "deletewebhook" | "setmycommands" | "deletemycommands" => Ok(json!(true)),
        _ => Err(ApiError::new(404, "Not Found")),
    }
}

fn reply(result: ApiResult) -> Response {
    match result {
        Ok(result) => Json(json!({ "ok": true, "result": result })).into_response(),
        Err(error) => {
            let status = u16::try_from(error.error_code)
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = Json(error.body()).into_response();
            *response.status_mut() = status;
            response
        }
    }
}

/// Merges query-string and body parameters. `None` when a JSON body does not
/// parse as an object.
fn parse_params(
    query: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Option<Map<String, Value>> {
    let mut params = Map::new();
    if let Some(query) = query {
        params.extend(parse_form(query));
    }
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if content_type.contains("json") || (!content_type.contains("form") && looks_json) {
        if body.iter().any(|b| !b.is_ascii_whitespace()) {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(object)) => params.extend(object),
                _ => return None,
            }
        }
    } else if !body.is_empty() {
        params.extend(parse_form(&String::from_utf8_lossy(body)));
    }
    Some(params)
}

/// `a=1&b=%7B%7D` -> {"a":"1","b":{}}: values holding a JSON object or array
/// are parsed, everything else stays a string.
fn parse_form(s: &str) -> Map<String, Value> {
    s.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            let value = match serde_json::from_str::<Value>(&v) {
                Ok(parsed @ (Value::Object(_) | Value::Array(_))) => parsed,
                _ => Value::String(v),
            };
            (percent_decode(k), value)
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Request parameters, with the Bot API's leniency about types.
struct Params(Map<String, Value>);

impl Params {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// An integer given as a number or as a string.
    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(&format!("invalid {key} specified"))),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(&format!("invalid {key} specified"))),
            Some(_) => Err(ApiError::bad_request(&format!("invalid {key} specified"))),
        }
    }

    fn required_int(&self, key: &str) -> Result<i64, ApiError> {
        self.int(key)?
            .ok_or_else(|| ApiError::bad_request(&format!("{key} is empty")))
    }

    /// A chat id; a non-numeric one (e.g. `@name`) names no chat here.
    fn chat_id(&self) -> Result<i64, ApiError> {
        match self.get("chat_id") {
            Some(Value::String(s)) if s.trim().parse::<i64>().is_err() && !s.trim().is_empty() => {
                Err(chat_not_found())
            }
            _ => self.required_int("chat_id"),
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn boolean(&self, key: &str) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true" || s == "1",
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// An object or array, given as JSON or as a string holding JSON.
    fn object(&self, key: &str) -> Result<Option<Value>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| ApiError::bad_request(&format!("can't parse {key} JSON object"))),
            Some(v) => Ok(Some(v.clone())),
        }
    }
}

// ---------------------------------------------------------------------------
// Methods
// ---------------------------------------------------------------------------

async fn get_updates(shared: &Shared, p: &Params) -> ApiResult {
    let offset = p.int("offset")?;
    let limit = p.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = p.int("timeout")?.unwrap_or(0).clamp(0, 50) as u64;
    let allowed = match p.object("allowed_updates")? {
        Some(Value::Array(kinds)) => Some(
            kinds
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect::<Vec<_>>(),
        ),
        _ => None,
    };

    // Subscribe before looking, so no update slips between look and wait.
    let mut ticks = shared.tick.subscribe();
    let generation = {
        let mut w = shared.world();
        w.poll_generation += 1;
        if let Some(allowed) = allowed {
            w.allowed_updates = (!allowed.is_empty()).then_some(allowed);
        }
        match offset {
            Some(offset) if offset < 0 => {
                let keep = offset.unsigned_abs() as usize;
                let len = w.updates.len();
                w.updates.drain(..len.saturating_sub(keep));
            }
            Some(offset) => w.updates.retain(|(id, _, _)| *id >= offset),
            None => {}
        }
        w.poll_generation
    };
    // Terminate an older poll still waiting.
    shared.wake_pollers();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        {
            let mut w = shared.world();
            if w.poll_generation != generation {
                return Err(ApiError::new(409, CONFLICT));
            }
            if let Some(allowed) = w.allowed_updates.clone() {
                w.updates
                    .retain(|(_, kind, _)| allowed.iter().any(|a| a == kind));
            }
            let found: Vec<Value> = w
                .updates
                .iter()
                .take(limit)
                .map(|(_, _, update)| update.clone())
                .collect();
            if !found.is_empty() || timeout == 0 {
                return Ok(Value::Array(found));
            }
        }
        match tokio::time::timeout_at(deadline, ticks.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(json!([])),
        }
    }
}

struct Outgoing {
    raw_text: String,
    text: String,
    parse_mode: Option<String>,
    reply_markup: Option<Value>,
}

/// The checks sendMessage and editMessageText share, in the real API's order:
/// text empty, too long, [thread], entities, keyboard.
fn check_text(
    p: &Params,
    thread_check: impl FnOnce() -> Result<(), ApiError>,
) -> Result<Outgoing, ApiError> {
    let raw_text = p.string("text").unwrap_or_default();
    if raw_text.is_empty() {
        return Err(ApiError::bad_request("message text is empty"));
    }
    let parse_mode = p.string("parse_mode").filter(|m| !m.is_empty());
    let parsed = markup::parse(&raw_text, parse_mode.as_deref().unwrap_or(""));
    let visible_len = match &parsed {
        Ok(text) => text.chars().count(),
        Err(_) => raw_text.chars().count(),
    };
    if visible_len > MAX_TEXT_CHARS {
        return Err(ApiError::bad_request("message is too long"));
    }
    thread_check()?;
    let text = match parsed {
        Ok(text) => text,
        Err(Some(why)) => {
            return Err(ApiError::bad_request(&format!(
                "can't parse entities: {why}"
            )))
        }
        Err(None) => return Err(ApiError::bad_request("unsupported parse_mode")),
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("message text is empty"));
    }
    let reply_markup = p.object("reply_markup")?;
    if let Some(markup) = &reply_markup {
        check_reply_markup(markup)?;
    }
    Ok(Outgoing {
        raw_text,
        text,
        parse_mode,
        reply_markup,
    })
}

fn check_reply_markup(markup: &Value) -> Result<(), ApiError> {
    let Some(keyboard) = markup.get("inline_keyboard") else {
        return Ok(());
    };
    let rows = keyboard.as_array().ok_or_else(|| {
        ApiError::bad_request(
            "field \"inline_keyboard\" of the InlineKeyboardMarkup should be an Array of Arrays",
        )
    })?;
    for row in rows {
        let buttons = row.as_array().ok_or_else(|| {
            ApiError::bad_request(
                "can't parse inline keyboard button: InlineKeyboardButton should be an Array",
            )
        })?;
        for button in buttons {
            if !button.get("text").is_some_and(Value::is_string) {
                return Err(ApiError::bad_request(
                    "can't parse inline keyboard button: Field \"text\" must be of type String",
                ));
            }
            if button
                .get("url")
                .and_then(Value::as_str)
                .is_some_and(|u| !u.is_empty())
            {
                continue;
            }
            match button.get("callback_data") {
                Some(Value::String(data)) if (1..=64).contains(&data.len()) => {}
                Some(_) => return Err(ApiError::bad_request("BUTTON_DATA_INVALID")),
                None => {
                    return Err(ApiError::bad_request(
                        "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                    ))
                }
            }
        }
    }
    Ok(())
}

fn send_message(w: &mut World, p: &Params) -> ApiResult {
    let chat_id = p.chat_id()?;
    let chat = w.chat(chat_id)?;
    let requested_thread = p.int("message_thread_id")?;
    let out = check_text(p, || match requested_thread {
        Some(t) if chat.is_forum() && (t == 1 || !chat.has_topic(t)) => {
            Err(ApiError::bad_request("message thread not found"))
        }
        _ => Ok(()),
    })?;

    let reply_parameters = p.object("reply_parameters")?;
    let reply_to = match &reply_parameters {
        Some(rp) => rp.get("message_id").and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        }),
        None => p.int("reply_to_message_id")?,
    };
    let allow_without_reply = p.boolean("allow_sending_without_reply")
        || reply_parameters
            .as_ref()
            .and_then(|rp| rp.get("allow_sending_without_reply"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let reply_to = match reply_to {
        Some(r) if !chat.messages.contains_key(&r) => {
            if allow_without_reply {
                None
            } else {
                return Err(ApiError::bad_request("message to be replied not found"));
            }
        }
        other => other,
    };
    let thread_id = if chat.is_forum() {
        requested_thread.or_else(|| reply_to.and_then(|r| chat.messages[&r].thread_id))
    } else {
        None
    };

    if let Some(limit) = w.rate_limit {
        let window = w.recent_sends.entry(chat_id).or_default();
        let now = Instant::now();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= limit as usize {
            return Err(ApiError::too_many_requests(1));
        }
        window.push_back(now);
    }

    let chat = w.chat_mut(chat_id)?;
    let id = chat.take_message_id();
    let msg = Msg {
        id,
        from: bot_user(),
        date: now(),
        raw_text: Some(out.raw_text),
        text: Some(out.text),
        parse_mode: out.parse_mode,
        thread_id,
        reply_to,
        reply_markup: out.reply_markup,
        edit_date: None,
        topic_created: None,
    };
    let result = chat.render(&msg, false);
    chat.messages.insert(id, msg);
    Ok(result)
}

/// editMessageText (`text` true) or editMessageReplyMarkup.
fn edit_message(w: &mut World, p: &Params, text: bool) -> ApiResult {
    if p.get("inline_message_id").is_some() {
        return Err(ApiError::bad_request("MESSAGE_ID_INVALID"));
    }
    let chat_id = p.chat_id()?;
    let chat = w.chat_mut(chat_id)?;
    let message_id = p.required_int("message_id")?;
    let Some(msg) = chat.messages.get(&message_id) else {
        return Err(ApiError::bad_request("message to edit not found"));
    };
    let out = if text {
        check_text(p, || Ok(()))?
    } else {
        let reply_markup = p.object("reply_markup")?;
        if let Some(markup) = &reply_markup {
            check_reply_markup(markup)?;
        }
        Outgoing {
            raw_text: msg.raw_text.clone().unwrap_or_default(),
            text: msg.text.clone().unwrap_or_default(),
            parse_mode: msg.parse_mode.clone(),
            reply_markup,
        }
    };
    if msg.from.id != BOT_ID || msg.topic_created.is_some() {
        return Err(ApiError::bad_request("message can't be edited"));
    }
    if msg.raw_text.as_deref() == Some(out.raw_text.as_str())
        && msg.parse_mode == out.parse_mode
        && msg.reply_markup == out.reply_markup
    {
        return Err(ApiError::bad_request(
            "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
        ));
    }
    let msg = chat.messages.get_mut(&message_id).expect("checked above");
    msg.raw_text = Some(out.raw_text);
    msg.text = Some(out.text);
    msg.parse_mode = out.parse_mode;
    msg.reply_markup = out.reply_markup;
    msg.edit_date = Some(now());
    let msg = &chat.messages[&message_id];
    Ok(chat.render(msg, false))
}

fn delete_message(w: &mut World, p: &Params) -> ApiResult {
    let chat = w.chat_mut(p.chat_id()?)?;
    let message_id = p.required_int("message_id")?;
    match chat.messages.get(&message_id) {
        None => Err(ApiError::bad_request("message to delete not found")),
        Some(m) if m.topic_created.is_some() => {
            Err(ApiError::bad_request("message can't be deleted"))
        }
        Some(_) => {
            chat.messages.remove(&message_id);
            Ok(json!(true))
        }
    }
}

fn create_forum_topic(w: &mut World, p: &Params) -> ApiResult {
    let chat = w.chat_mut(p.chat_id()?)?;
    if !chat.is_forum() {
        return Err(ApiError::bad_request("the chat is not a forum"));
    }
    let name = p.string("name").unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("TOPIC_NAME_EMPTY"));
    }
    if name.chars().count() > 128 {
        return Err(ApiError::bad_request("TOPIC_NAME_INVALID"));
    }
    let icon_color = p.int("icon_color")?.unwrap_or(DEFAULT_ICON_COLOR);
    if !ICON_COLORS.contains(&icon_color) {
        return Err(ApiError::bad_request("TOPIC_ICON_COLOR_INVALID"));
    }
    let thread_id = chat.take_message_id();
    chat.messages.insert(
        thread_id,
        Msg {
            id: thread_id,
            from: bot_user(),
            date: now(),
            raw_text: None,
            text: None,
            parse_mode: None,
            thread_id: Some(thread_id),
            reply_to: None,
            reply_markup: None,
            edit_date: None,
            topic_created: Some((name.clone(), icon_color)),
        },
    );
    chat.topics.push(TopicRec {
        thread_id,
        name: name.clone(),
        icon_color,
    });
    let topic = chat.topics.last().expect("just pushed");
    Ok(
        json!({ "message_thread_id": topic.thread_id, "name": topic.name, "icon_color": topic.icon_color }),
    )
}

fn delete_forum_topic(w: &mut World, p: &Params) -> ApiResult {
    let chat = w.chat_mut(p.chat_id()?)?;
    if !chat.is_forum() {
        return Err(ApiError::bad_request("the chat is not a forum"));
    }
    let thread_id = p.required_int("message_thread_id")?;
    if !chat.has_topic(thread_id) {
        return Err(ApiError::bad_request("TOPIC_ID_INVALID"));
    }
    remove_topic(chat, thread_id);
    Ok(json!(true))
}

fn answer_callback_query(w: &mut World, p: &Params) -> ApiResult {
    let id = p.string("callback_query_id").unwrap_or_default();
    match w.callback_queries.get_mut(&id) {
        Some(answered @ false) => {
            *answered = true;
            w.callback_answers.push(Value::Object(p.0.clone()));
            Ok(json!(true))
        }
        _ => Err(ApiError::bad_request(
            "query is too old and response timeout expired or query ID is invalid",
        )),
    }
}

fn send_chat_action(w: &World, p: &Params) -> ApiResult {
    let chat = w.chat(p.chat_id()?)?;
    const ACTIONS: &[&str] = &[
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ];
    let action = p.string("action").unwrap_or_default();
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad_request("wrong parameter action in request"));
    }
    if let Some(t) = p.int("message_thread_id")? {
        if chat.is_forum() && t != 1 && !chat.has_topic(t) {
            return Err(ApiError::bad_request("message thread not found"));
        }
    }
    Ok(json!(true))
}

fn get_chat(w: &World, p: &Params) -> ApiResult {
    let chat = w.chat(p.chat_id()?)?;
    let mut info = chat.json();
    info["accent_color_id"] = json!(0);
    info["max_reaction_count"] = json!(11);
    Ok(info)
}

fn get_chat_member(w: &World, p: &Params) -> ApiResult {
    let chat = w.chat(p.chat_id()?)?;
    let user_id = p.required_int("user_id")?;
    if user_id == BOT_ID {
        if let ChatKind::Supergroup { forum, .. } = chat.kind {
            return Ok(json!({
                "status": "administrator",
                "user": bot_user(),
                "can_be_edited": false,
                "is_anonymous": false,
                "can_manage_chat": true,
                "can_delete_messages": true,
                "can_manage_video_chats": true,
                "can_restrict_members": true,
                "can_promote_members": false,
                "can_change_info": true,
                "can_invite_users": true,
                "can_post_stories": true,
                "can_edit_stories": true,
                "can_delete_stories": true,
                "can_pin_messages": true,
                "can_manage_topics": forum,
            }));
        }
        return Ok(json!({ "status": "member", "user": bot_user() }));
    }
    let user = w
        .users
        .get(&user_id)
        .ok_or_else(|| ApiError::bad_request("user not found"))?;
    Ok(json!({ "status": "member", "user": user }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode() {
        let m = parse_form("chat_id=-100&text=a+b%26c&reply_markup=%7B%22x%22%3A1%7D&bad=%zz");
        assert_eq!(m["chat_id"], json!("-100"));
        assert_eq!(m["text"], json!("a b&c"));
        assert_eq!(m["reply_markup"], json!({ "x": 1 }));
        assert_eq!(m["bad"], json!("%zz"));
    }
}
