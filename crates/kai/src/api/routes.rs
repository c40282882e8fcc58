//! The route table: the one list of what the HTTP server answers. The router
//! ([`super::router`]) and the OpenAPI document ([`super::openapi`]) are both built from it, and
//! the checks a request goes through (token, path and query parameters, body size) are read
//! from it, so the document cannot say one thing while the server does another.
//!

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::auth::Access;
use super::handlers as h;
use super::{ApiError, Call, Reply};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }

    /// The key of an operation in an OpenAPI path item.
    pub fn lower(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum In {
    Path,
    Query,
}

/// A path or query parameter, with the check the server applies to it.
pub struct Param {
    pub name: &'static str,
    pub location: In,
    pub required: bool,
    pub description: &'static str,
    pub schema: Value,
    /// Refuses a value the schema refuses (the message says why), before any handler runs.
    pub check: fn(&str) -> Result<(), String>,
}

/// A request body: a component schema's name.
pub struct Body {
    pub schema: &'static str,
    pub required: bool,
    pub description: &'static str,
}

/// One documented response.
pub struct Response {
    pub status: u16,
    pub description: &'static str,
    /// A component schema's name.
    pub schema: &'static str,
}

pub type Blocking = fn(&Call) -> Result<Reply, ApiError>;
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Reply, ApiError>> + Send>>;
pub type Async = fn(Call) -> BoxFuture;

pub enum Handler {
    /// Reads files or the ledger: runs on the blocking pool.
    Blocking(Blocking),
    /// Waits for something (a run to end): runs as a task.
    Async(Async),
    /// Served by `crate::http` (health, webhooks); listed here so the document has it.
    Http,
}

pub struct Route {
    pub method: Method,
    /// axum's path syntax, which is OpenAPI's: `/api/modules/{name}`.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub description: &'static str,
    pub access: Access,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    /// The responses particular to this route; [`Route::responses`] adds the common ones.
    pub own_responses: Vec<Response>,
    pub handler: Handler,
}

impl Route {
    fn new(
        method: Method,
        path: &'static str,
        operation_id: &'static str,
        access: Access,
        handler: Handler,
    ) -> Route {
        Route {
            method,
            path,
            operation_id,
            tag: "",
            summary: "",
            description: "",
            access,
            params: Vec::new(),
            body: None,
            own_responses: Vec::new(),
            handler,
        }
    }

    fn tag(mut self, tag: &'static str) -> Self {
        self.tag = tag;
        self
    }

    fn doc(mut self, summary: &'static str, description: &'static str) -> Self {
        self.summary = summary;
        self.description = description;
        self
    }

    fn param(mut self, p: Param) -> Self {
        self.params.push(p);
        self
    }

    fn body(mut self, schema: &'static str, required: bool, description: &'static str) -> Self {
        self.body = Some(Body {
            schema,
            required,
            description,
        });
        self
    }

    fn answers(mut self, status: u16, schema: &'static str, description: &'static str) -> Self {
        self.own_responses.push(Response {
            status,
            description,
            schema,
        });
        self
    }

    /// Every response this route can give: its own, and those every route of its kind gives.
    pub fn responses(&self) -> Vec<Response> {
        let mut all: Vec<Response> = self
            .own_responses
            .iter()
            .map(|r| Response {
                status: r.status,
                description: r.description,
                schema: r.schema,
            })
            .collect();
        let mut add = |status: u16, description: &'static str| {
            if !all.iter().any(|r| r.status == status) {
                all.push(Response {
                    status,
                    description,
                    schema: "Error",
                });
            }
        };
        if self.access.needs_bearer() {
            add(
                400,
                "Bad input: a malformed path or query parameter, an unknown query parameter, a body that is not a JSON object",
            );
            add(
                401,
                "No token, a malformed Authorization header, an unknown token, or the token of a run that has ended",
            );
            // Every bearer route refuses some kind of token: none admits all three.
            add(403, "The token is valid but lacks the scope for this route");
            if self.params.iter().any(|p| p.location == In::Path) {
                add(404, "No such module or run");
            }
            if self.body.is_some() {
                add(413, "The body is larger than 1 MiB");
                add(
                    422,
                    "The body is a JSON object but its fields are wrong: an unknown field, a wrong type, a value out of range",
                );
            }
            add(
                500,
                "kai could not read or write its own data; the message says what",
            );
        }
        all.sort_by_key(|r| r.status);
        all
    }

    pub fn path_params(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.location == In::Path)
    }

    pub fn query_params(&self) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(|p| p.location == In::Query)
    }
}

// --- parameters ------------------------------------------------------------------------------

/// Most entries one listing returns.
pub const MAX_LIMIT: usize = 1000;
/// Longest entity accepted in a query or an invoke.
pub const MAX_ENTITY_CHARS: usize = kai_core::template::MAX_ENTITY_CHARS;

fn module_name() -> Param {
    Param {
        name: "name",
        location: In::Path,
        required: true,
        description: "A module name: lowercase letters, digits and `-`, at most 63 characters",
        schema: json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}),
        check: kai_core::name::check,
    }
}

/// Run ids are `r_` and a ULID; anything of that alphabet is looked up, the rest refused.
pub fn check_run_id(id: &str) -> Result<(), String> {
    let ok = (3..=128).contains(&id.len())
        && id.starts_with("r_")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(80).collect();
        Err(format!(
            "`{shown}` is not a run id (r_ followed by letters and digits)"
        ))
    }
}

fn run_id() -> Param {
    Param {
        name: "id",
        location: In::Path,
        required: true,
        description: "A run id, as `POST /api/modules/{name}/invoke` returns it: `r_` and a ULID",
        schema: json!({"type": "string", "pattern": "^r_[A-Za-z0-9_-]{1,126}$"}),
        check: check_run_id,
    }
}

fn pending_run_id() -> Param {
    Param {
        name: "run_id",
        description: "The paused run whose question this answers",
        ..run_id()
    }
}

pub fn parse_limit(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
        Ok(n) => Err(format!("limit {n} is out of range: 1 to {MAX_LIMIT}")),
        Err(_) => Err(format!(
            "limit `{}` is not a whole number (1 to {MAX_LIMIT})",
            text.chars().take(40).collect::<String>()
        )),
    }
}

fn limit(default: usize) -> Param {
    Param {
        name: "limit",
        location: In::Query,
        required: false,
        description: "How many entries at most, newest first",
        schema: json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": default}),
        check: |t| parse_limit(t).map(drop),
    }
}

/// `0`, or one or more of a number and a unit: `2h`, `1h30m`, `7d`.
fn is_duration(t: &str) -> bool {
    if t == "0" {
        return true;
    }
    let mut digits = 0;
    for c in t.chars() {
        match c {
            '0'..='9' => digits += 1,
            's' | 'm' | 'h' | 'd' if digits > 0 => digits = 0,
            _ => return false,
        }
    }
    !t.is_empty() && digits == 0
}

/// `2026-04-04`, as the start of an RFC 3339 time or alone.
fn starts_with_date(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// A `since` parameter: a duration back from now, a date (UTC midnight) or an RFC 3339 time,
/// as `kai journal --since` takes it; and, unlike there, a duration of any length (one longer
/// than the manifests' 366 days reaches back to the start of everything).
pub fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let bad = || {
        format!(
            "since `{}` is neither a duration (2h, 7d), a date (2026-04-04) nor an RFC 3339 time (2026-04-04T14:23:01Z)",
            text.chars().take(40).collect::<String>()
        )
    };
    let shaped =
        is_duration(text) || (starts_with_date(text) && (text.len() == 10 || text.len() >= 20));
    if !shaped {
        return Err(bad());
    }
    match crate::cli::parse_since(text, chrono::Utc::now()) {
        Ok(t) => Ok(t),
        Err(_) if is_duration(text) => Ok(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH),
        Err(_) => Err(bad()),
    }
}

fn since() -> Param {
    Param {
        name: "since",
        location: In::Query,
        required: false,
        description: "Only what happened since: a duration back from now (`2h`, `1h30m`, `7d`), a date (`2026-04-04`, UTC midnight) or an RFC 3339 time",
        schema: json!({
            "anyOf": [
                {"type": "string", "pattern": "^(0|([0-9]+[smhd])+)$"},
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ],
            "examples": ["2h", "2026-04-04", "2026-04-04T14:23:01Z"],
        }),
        check: |t| parse_since(t).map(drop),
    }
}

pub fn check_entity(text: &str) -> Result<(), String> {
    let n = text.chars().count();
    if text.trim().is_empty() || n > MAX_ENTITY_CHARS || text.chars().any(char::is_control) {
        Err(format!(
            "an entity is 1 to {MAX_ENTITY_CHARS} characters, not blank, without control characters"
        ))
    } else {
        Ok(())
    }
}

fn entity_param() -> Param {
    Param {
        name: "entity",
        location: In::Query,
        required: false,
        description: "Only entries about this entity (`octo/repo#42`)",
        schema: entity_schema(),
        check: check_entity,
    }
}

/// A string with something visible in it and no control character, which is what
/// [`check_entity`] takes.
pub fn entity_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ENTITY_CHARS,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    })
}

fn status_param() -> Param {
    Param {
        name: "status",
        location: In::Query,
        required: false,
        description: "Only entries with this status",
        schema: json!({"$ref": "#/components/schemas/JournalStatus"}),
        check: |t| t.parse::<kai_core::JournalStatus>().map(drop),
    }
}

fn module_filter() -> Param {
    Param {
        name: "module",
        location: In::Query,
        required: false,
        description: "Only decisions about this module",
        schema: json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}),
        check: kai_core::name::check,
    }
}

// --- the table -------------------------------------------------------------------------------

/// Every route, in the order the document lists them.
pub fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(build)
}

fn build() -> Vec<Route> {
    use Access::*;
    use Method::{Get, Post};
    vec![
        Route::new(Get, "/health", "health", Public, Handler::Http)
            .tag("server")
            .doc("Liveness", "Answers while the server runs. No token needed.")
            .answers(200, "Health", "The server is up"),
        Route::new(Post, "/webhook/github", "githubWebhook", Signed, Handler::Http)
            .tag("webhooks")
            .doc(
                "A GitHub webhook delivery",
                "Authenticated by `X-Hub-Signature-256` (HMAC-SHA256 of the raw body with `KAI_GITHUB_WEBHOOK_SECRET`), not by a bearer token. Needs `X-GitHub-Event` and `X-GitHub-Delivery`. The delivery is stored durably before the `202`. Bodies up to 25 MiB.",
            )
            .body("WebhookPayload", true, "The event's JSON payload, as GitHub sends it")
            .answers(200, "WebhookAnswer", "A `ping`, or a delivery id seen before (`\"duplicate\": true`)")
            .answers(202, "WebhookAnswer", "Stored; the modules it reaches run later")
            .answers(400, "Error", "A missing or malformed event or delivery header, or a body that is not a JSON object")
            .answers(401, "Error", "The signature is missing or does not match the body")
            .answers(403, "Error", "GitHub webhooks are off: `KAI_GITHUB_WEBHOOK_SECRET` is not set")
            .answers(413, "Error", "The body is larger than 25 MiB")
            .answers(503, "Error", "The delivery could not be stored; send it again"),
        Route::new(Post, "/webhook/{source}", "genericWebhook", Signed, Handler::Http)
            .tag("webhooks")
            .doc(
                "A delivery from a generic webhook source",
                "For the sources named in `kai.toml` (`[sources.NAME]`), each with its own HMAC secret (`X-Kai-Signature-256`) or bearer token. The event name comes from the header or payload field the source declares (default header `X-Kai-Event`).",
            )
            .param(Param {
                name: "source",
                location: In::Path,
                required: true,
                description: "A source name from `kai.toml`",
                schema: json!({"type": "string"}),
                check: |_| Ok(()),
            })
            .body("WebhookPayload", true, "The event's JSON payload")
            .answers(200, "WebhookAnswer", "A delivery id seen before (`\"duplicate\": true`)")
            .answers(202, "WebhookAnswer", "Stored; the modules it reaches run later")
            .answers(400, "Error", "A missing or malformed event name, or a body that is not a JSON object")
            .answers(401, "Error", "The signature or token is missing or wrong")
            .answers(404, "Error", "No source of that name is configured")
            .answers(413, "Error", "The body is larger than 25 MiB")
            .answers(503, "Error", "The delivery could not be stored; send it again"),
        Route::new(Get, "/api/openapi.json", "openapi", Read, Handler::Blocking(h::openapi))
            .tag("server")
            .doc("This document", "The OpenAPI 3.1 description of every route, generated from the server's route table.")
            .answers(200, "OpenApiDocument", "The document"),
        Route::new(Get, "/api/modules", "listModules", Read, Handler::Blocking(h::list_modules))
            .tag("modules")
            .doc(
                "Every module",
                "Each loaded module with its triggers, whether it is enabled, its last run, its runs and failures in the last 24 hours (from the run ledger) and its open questions; and every manifest that failed to load, with file, line and reason.",
            )
            .answers(200, "ModuleList", "The modules and the load errors"),
        Route::new(Get, "/api/modules/{name}", "getModule", OwnModule, Handler::Blocking(h::get_module))
            .tag("modules")
            .doc(
                "One module",
                "The module's summary (as in the list), its manifest, its state (`state.json`), its open questions and its last 10 journal entries. A run token may read its own module.",
            )
            .param(module_name())
            .answers(200, "ModuleDetail", "The module"),
        Route::new(Get, "/api/modules/{name}/events", "listEvents", OwnModule, Handler::Blocking(h::list_events))
            .tag("modules")
            .doc(
                "A module's journal",
                "The module's journal entries (one per run outcome, the files in `modules/NAME/events/`), newest first. A run token may read its own module's journal. Entries in files that cannot be read are left out and named in `warnings`.",
            )
            .param(module_name())
            .param(entity_param())
            .param(status_param())
            .param(since())
            .param(limit(50))
            .answers(200, "EventList", "The entries, newest first"),
        Route::new(Post, "/api/modules/{name}/invoke", "invokeModule", Invoke, Handler::Async(h::invoke))
            .tag("modules")
            .doc(
                "Start a run",
                "Puts an `invoke` trigger into the inbox, through the same dispatcher, queue and guardrails as a webhook or a schedule. Answers once the trigger is dispatched: `202` with the run id when a run is queued (or `\"status\": \"accepted\"` if dispatch takes longer than 2 s), `409` with the decision when a guardrail declined it (module disabled, budget reached, cooldown, `per_entity` skip or coalesce). With `\"wait\": true` the answer waits for the run to end: `200` with its journal entry, or `202` when it outlasts the server's wait limit (`KAI_API_WAIT_LIMIT`, default 30 s); then poll `GET /api/runs/{id}`.",
            )
            .param(module_name())
            .body("InvokeRequest", false, "What to run with; no body at all is `{}`")
            .answers(200, "InvokeResult", "`wait` was true and the run ended within the wait limit")
            .answers(202, "InvokeAccepted", "The run is queued or running (or, with `wait`, outlasted the wait limit)")
            .answers(409, "Error", "A guardrail declined the trigger: `reason` says which, `decision` is the why-not log entry"),
        Route::new(Post, "/api/modules/{name}/enable", "enableModule", Manage, Handler::Blocking(h::enable))
            .tag("modules")
            .doc(
                "Switch a module on",
                "Switches the module on, and lifts a reached budget for the rest of the UTC day. Idempotent. A module disabled in its manifest (`enabled: false`) cannot be switched on here: `409`.",
            )
            .param(module_name())
            .body("EnableRequest", false, "Nothing, or `{}`")
            .answers(200, "SwitchResult", "The module is enabled")
            .answers(409, "Error", "The manifest says `enabled: false`; edit `module.yaml`"),
        Route::new(Post, "/api/modules/{name}/disable", "disableModule", Manage, Handler::Blocking(h::disable))
            .tag("modules")
            .doc(
                "Switch a module off",
                "New triggers for the module are declined (decision `disabled`) until it is enabled; runs already queued or running carry on. Idempotent.",
            )
            .param(module_name())
            .body("DisableRequest", false, "Optionally why, shown in the why-not log")
            .answers(200, "SwitchResult", "The module is disabled"),
        Route::new(Get, "/api/runs/{id}", "getRun", Read, Handler::Blocking(h::get_run))
            .tag("runs")
            .doc(
                "One run",
                "The run's phase (`queued`, `running`, `finishing`, `finished`), status, attempt, times, and its journal entry once it has one.",
            )
            .param(run_id())
            .answers(200, "Run", "The run"),
        Route::new(Get, "/api/pending", "listPending", Read, Handler::Blocking(h::list_pending))
            .tag("questions")
            .doc(
                "Open questions",
                "Every checkpoint waiting for an answer (`modules/*/pending/*.json`), across modules, oldest first. `POST /api/pending/{run_id}/answer` answers one.",
            )
            .answers(200, "PendingList", "The open questions"),
        Route::new(Post, "/api/pending/{run_id}/answer", "answerQuestion", Invoke, Handler::Blocking(h::answer))
            .tag("questions")
            .doc(
                "Answer a question",
                "The first answer to a paused run's question wins, whatever the route (a Telegram button, a reply, `kai answer`, this): the question closes and a new run of the module resumes with `trigger.type = \"resume\"` and the answer. A later answer is `409`, saying who answered and when.",
            )
            .param(pending_run_id())
            .body("AnswerRequest", true, "The answer")
            .answers(200, "AnswerAccepted", "The answer is recorded; the resume run is queued")
            .answers(404, "Error", "No question of that run is known")
            .answers(409, "Error", "The question was answered (or expired) before: `answered_by`, `answered_at`"),
        Route::new(Get, "/api/decisions", "listDecisions", Read, Handler::Blocking(h::list_decisions))
            .tag("runs")
            .doc(
                "The why-not log",
                "Triggers that reached a module and started no run, with the reason (duplicate, cooldown, coalesced, skipped, disabled, budget, filter, concurrency, loop, missed_schedule), newest first.",
            )
            .param(module_filter())
            .param(since())
            .param(limit(100))
            .answers(200, "DecisionList", "The decisions, newest first"),
        Route::new(Post, "/api/notify", "notify", Notify, Handler::Blocking(h::notify))
            .tag("runs")
            .doc(
                "Post a note into the calling module's topic",
                "For modules during a run, with their run token: the text goes to the module's Telegram topic (or the log without Telegram), scrubbed of kai's secrets. The admin and chat tokens have no topic of their own: `403`.",
            )
            .body("NotifyRequest", true, "The note")
            .answers(202, "NotifyAccepted", "The note is queued for sending"),
    ]
}
