//! The JSON Schemas (2020-12, as OpenAPI 3.1 takes them) of every body the API reads or
//! writes, by name. Objects are closed (`additionalProperties: false`) wherever kai builds
//! them, so a field added to an answer without being added here fails the OpenAPI test.

use serde_json::{json, Map, Value};

use super::handlers::MAX_CHAT_ID;
use super::routes::{entity_schema, MAX_ENTITY_CHARS};

/// Longest note accepted by `POST /api/notify`, in characters.
pub const MAX_NOTE_CHARS: usize = 16 * 1024;
/// Longest reason accepted by `POST /api/modules/{name}/disable`, in characters.
pub const MAX_REASON_CHARS: usize = 500;

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn nullable(schema: Value) -> Value {
    match schema.get("type").cloned() {
        Some(Value::String(t)) if schema.get("$ref").is_none() => {
            let mut s = schema;
            s["type"] = json!([t, "null"]);
            s
        }
        _ => json!({ "anyOf": [schema, { "type": "null" }] }),
    }
}

/// A closed object: these properties, the first `required` of them required.
fn object(props: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert(k.to_owned(), v);
    }
    json!({
        "type": "object",
        "properties": p,
        "required": required,
        "additionalProperties": false,
    })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn time() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn name() -> Value {
    json!({ "type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$" })
}

/// Run statuses as the API shows them: where a run is (`accepted`: in the inbox, not yet
/// dispatched), then how it ended.
pub const RUN_STATUSES: [&str; 10] = [
    "accepted",
    "queued",
    "running",
    "finishing",
    "done",
    "paused",
    "error",
    "skipped",
    "timeout",
    "interrupted",
];

fn module_summary_props() -> Vec<(&'static str, Value)> {
    vec![
        ("name", name()),
        ("version", string()),
        ("description", string()),
        ("builtin", json!({"type": "boolean"})),
        (
            "enabled",
            json!({"type": "boolean", "description": "Whether new triggers can start runs: the manifest's `enabled` and the switch (`POST .../enable`, `.../disable`, or a reached budget)"}),
        ),
        ("disabled_reason", nullable(string())),
        (
            "triggers",
            json!({"type": "array", "items": r("ManifestTrigger")}),
        ),
        ("last_run", nullable(r("LastRun"))),
        (
            "counts_24h",
            object(
                vec![("runs", count()), ("failures", count())],
                &["runs", "failures"],
            ),
        ),
        ("queued", count()),
        ("running", count()),
        (
            "pending",
            json!({"type": "integer", "minimum": 0, "description": "Open questions"}),
        ),
    ]
}

const MODULE_SUMMARY_REQUIRED: [&str; 12] = [
    "name",
    "version",
    "description",
    "builtin",
    "enabled",
    "disabled_reason",
    "triggers",
    "last_run",
    "counts_24h",
    "queued",
    "running",
    "pending",
];

/// `components.schemas`.
pub fn components() -> Value {
    let mut s = Map::new();
    let mut put = |k: &str, v: Value| {
        s.insert(k.to_owned(), v);
    };
    put(
        "Error",
        object(
            vec![
                (
                    "error",
                    json!({"type": "string", "description": "What is wrong, for a person"}),
                ),
                (
                    "code",
                    json!({"type": "string", "description": "What is wrong, for a program: unauthorized, forbidden, run_token_required, bad_path, bad_query, bad_json, bad_body, too_large, invalid, unknown_module, unknown_run, unknown_question, already_answered, no_route, method_not_allowed, declined, disabled_in_manifest, internal, ..."}),
                ),
                (
                    "reason",
                    json!({"type": "string", "description": "For `declined`: the guardrail (disabled, budget, cooldown, coalesced, skipped, filter, ...)"}),
                ),
                ("run_id", string()),
                ("delivery_id", string()),
                ("decision", r("Decision")),
                (
                    "answered_by",
                    json!({"type": ["string", "null"], "description": "For `already_answered`: who answered first"}),
                ),
                (
                    "answered_at",
                    json!({"type": ["string", "null"], "format": "date-time", "description": "For `already_answered`: when the question closed"}),
                ),
                (
                    "closed",
                    json!({"type": ["string", "null"], "description": "For `already_answered`: how the question closed (answered, expired, withdrawn)"}),
                ),
            ],
            &["error", "code"],
        ),
    );
    put(
        "Health",
        object(vec![("status", json!({"const": "ok"}))], &["status"]),
    );
    put(
        "WebhookPayload",
        json!({"type": "object", "description": "The event's payload, as the sender sends it"}),
    );
    put(
        "WebhookAnswer",
        object(
            vec![
                ("accepted", json!({"type": "boolean"})),
                ("duplicate", json!({"type": "boolean"})),
                ("delivery_id", string()),
                ("ok", json!({"type": "boolean"})),
                ("ping", json!({"type": "boolean"})),
            ],
            &[],
        ),
    );
    put(
        "OpenApiDocument",
        json!({"type": "object", "required": ["openapi", "info", "paths"]}),
    );
    put(
        "JournalStatus",
        json!({"type": "string", "enum": kai_core::JournalStatus::ALL.map(|s| s.as_str())}),
    );
    put(
        "RunStatus",
        json!({"type": "string", "enum": RUN_STATUSES, "description": "`accepted` (in the inbox), `queued`, `running`, `finishing`, then the journal status"}),
    );
    put(
        "Question",
        object(
            vec![
                ("text", string()),
                (
                    "options",
                    json!({"type": "array", "items": {"type": "string"}}),
                ),
                ("expires", string()),
                ("default", string()),
            ],
            &["text"],
        ),
    );
    put(
        "JournalEntry",
        object(
            vec![
                ("run_id", string()),
                ("timestamp", time()),
                ("module", string()),
                (
                    "trigger",
                    json!({"type": "string", "description": "type[:event[:action]]"}),
                ),
                ("delivery_id", nullable(string())),
                ("entity", string()),
                ("chat_id", json!({"type": ["integer", "null"]})),
                ("status", r("JournalStatus")),
                ("summary", string()),
                ("duration_seconds", json!({"type": "number", "minimum": 0})),
                ("attempt", json!({"type": "integer", "minimum": 1})),
                (
                    "details",
                    json!({"description": "Free-form, from the module; `cost_usd` is added up for budgets"}),
                ),
                ("error", string()),
                ("stderr_tail", string()),
                ("retry", json!({"type": "boolean"})),
                ("question", r("Question")),
            ],
            &[
                "run_id",
                "timestamp",
                "module",
                "trigger",
                "delivery_id",
                "entity",
                "chat_id",
                "status",
                "summary",
                "duration_seconds",
                "attempt",
                "details",
            ],
        ),
    );
    put(
        "ManifestTrigger",
        json!({"type": "object", "description": "One entry of the manifest's `triggers:`, as written there (`webhook`, `schedule`, `every` or `command`, with its options)"}),
    );
    put(
        "Manifest",
        json!({
            "type": "object",
            "description": "The module's `module.yaml`, with defaults filled in (SPEC 3.2)",
            "required": ["name", "version", "description", "run"],
            "properties": {
                "name": name(),
                "version": string(),
                "description": string(),
                "run": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "triggers": {"type": "array", "items": r("ManifestTrigger")},
            },
        }),
    );
    put(
        "LastRun",
        object(
            vec![
                ("run_id", string()),
                ("status", r("JournalStatus")),
                ("entity", string()),
                ("finished_at", time()),
            ],
            &["run_id", "status", "entity", "finished_at"],
        ),
    );
    put(
        "ModuleSummary",
        object(module_summary_props(), &MODULE_SUMMARY_REQUIRED),
    );
    put(
        "LoadError",
        object(
            vec![
                ("module", nullable(string())),
                ("file", string()),
                ("line", json!({"type": ["integer", "null"], "minimum": 1})),
                ("message", string()),
            ],
            &["module", "file", "line", "message"],
        ),
    );
    put(
        "ModuleList",
        object(
            vec![
                (
                    "modules",
                    json!({"type": "array", "items": r("ModuleSummary")}),
                ),
                ("errors", json!({"type": "array", "items": r("LoadError")})),
            ],
            &["modules", "errors"],
        ),
    );
    let mut detail = module_summary_props();
    detail.extend([
        ("manifest", r("Manifest")),
        ("manifest_file", json!({"type": "string", "description": "The manifest's path, or `builtin:NAME/module.yaml`"})),
        ("data_dir", string()),
        ("state", json!({"description": "`state.json`, or null when there is none yet (or it is not JSON)"})),
        ("questions", json!({"type": "array", "items": r("PendingQuestion")})),
        ("recent", json!({"type": "array", "items": r("JournalEntry"), "maxItems": 10})),
    ]);
    let mut detail_required = MODULE_SUMMARY_REQUIRED.to_vec();
    detail_required.extend([
        "manifest",
        "manifest_file",
        "data_dir",
        "state",
        "questions",
        "recent",
    ]);
    put("ModuleDetail", object(detail, &detail_required));
    put(
        "EventList",
        object(
            vec![
                ("module", name()),
                (
                    "events",
                    json!({"type": "array", "items": r("JournalEntry")}),
                ),
                (
                    "warnings",
                    json!({"type": "array", "items": {"type": "string"}, "description": "Journal files that could not be read"}),
                ),
            ],
            &["module", "events", "warnings"],
        ),
    );
    put(
        "InvokeRequest",
        object(
            vec![
                (
                    "entity",
                    json!({
                        "anyOf": [entity_schema(), {"type": "null"}],
                        "description": format!("What the run is about (at most {MAX_ENTITY_CHARS} characters); default (or null): the manifest's `entity` template over `data`, else `invoke`"),
                    }),
                ),
                (
                    "data",
                    json!({"description": "The trigger's payload (any JSON); default `{}`"}),
                ),
                (
                    "chat_id",
                    json!({"type": ["integer", "null"], "minimum": -MAX_CHAT_ID, "maximum": MAX_CHAT_ID, "description": "The chat the run belongs to (a Telegram chat id); default (or null): `KAI_NOTIFY_CHAT` or the owner's"}),
                ),
                (
                    "wait",
                    json!({"type": "boolean", "default": false, "description": "Answer when the run ends (up to the server's wait limit)"}),
                ),
            ],
            &[],
        ),
    );
    put(
        "InvokeAccepted",
        object(
            vec![
                ("run_id", string()),
                ("status", r("RunStatus")),
                ("module", name()),
                ("delivery_id", string()),
            ],
            &["run_id", "status", "module", "delivery_id"],
        ),
    );
    put(
        "InvokeResult",
        object(
            vec![
                ("run_id", string()),
                ("status", r("JournalStatus")),
                ("module", name()),
                ("delivery_id", string()),
                ("result", r("JournalEntry")),
            ],
            &["run_id", "status", "module", "delivery_id", "result"],
        ),
    );
    put("EnableRequest", object(vec![], &[]));
    put(
        "DisableRequest",
        object(
            vec![(
                "reason",
                json!({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_REASON_CHARS, "pattern": "\\S", "description": "Why; default (or null): switched off through the API"}),
            )],
            &[],
        ),
    );
    put(
        "SwitchResult",
        object(
            vec![
                ("name", name()),
                ("enabled", json!({"type": "boolean"})),
                ("disabled_reason", nullable(string())),
            ],
            &["name", "enabled", "disabled_reason"],
        ),
    );
    put(
        "Run",
        object(
            vec![
                ("run_id", string()),
                ("module", string()),
                ("entity", string()),
                (
                    "trigger",
                    json!({"type": "string", "description": "type[:event[:action]]"}),
                ),
                ("delivery_id", nullable(string())),
                ("chat_id", json!({"type": ["integer", "null"]})),
                (
                    "phase",
                    json!({"type": "string", "enum": ["queued", "running", "finishing", "finished"]}),
                ),
                ("status", r("RunStatus")),
                ("attempt", count()),
                ("created_at", nullable(time())),
                ("started_at", nullable(time())),
                ("finished_at", nullable(time())),
                ("entry", nullable(r("JournalEntry"))),
            ],
            &[
                "run_id",
                "module",
                "entity",
                "trigger",
                "delivery_id",
                "chat_id",
                "phase",
                "status",
                "attempt",
                "created_at",
                "started_at",
                "finished_at",
                "entry",
            ],
        ),
    );
    put(
        "PendingQuestion",
        object(
            vec![
                ("run_id", string()),
                ("module", string()),
                ("entity", nullable(string())),
                ("chat_id", json!({"type": ["integer", "null"]})),
                ("question", r("Question")),
                ("asked_at", nullable(string())),
                ("expires_at", nullable(string())),
            ],
            &[
                "run_id",
                "module",
                "entity",
                "chat_id",
                "question",
                "asked_at",
                "expires_at",
            ],
        ),
    );
    put(
        "PendingList",
        object(
            vec![
                (
                    "pending",
                    json!({"type": "array", "items": r("PendingQuestion")}),
                ),
                (
                    "warnings",
                    json!({"type": "array", "items": {"type": "string"}}),
                ),
            ],
            &["pending", "warnings"],
        ),
    );
    put(
        "Decision",
        object(
            vec![
                ("at", time()),
                ("module", nullable(string())),
                ("entity", nullable(string())),
                ("trigger", string()),
                ("delivery_id", nullable(string())),
                ("reason", string()),
                ("detail", string()),
            ],
            &[
                "at",
                "module",
                "entity",
                "trigger",
                "delivery_id",
                "reason",
                "detail",
            ],
        ),
    );
    put(
        "DecisionList",
        object(
            vec![(
                "decisions",
                json!({"type": "array", "items": r("Decision")}),
            )],
            &["decisions"],
        ),
    );
    put(
        "NotifyRequest",
        object(
            vec![
                (
                    "text",
                    json!({"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS, "pattern": "\\S"}),
                ),
                (
                    "format",
                    json!({"type": "string", "enum": ["plain", "markdown", "html"], "default": "plain", "description": "How Telegram should read the text; a text it cannot parse is sent plain"}),
                ),
            ],
            &["text"],
        ),
    );
    put(
        "AnswerRequest",
        object(
            vec![(
                "answer",
                json!({"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS, "pattern": "\\S"}),
            )],
            &["answer"],
        ),
    );
    put(
        "AnswerAccepted",
        object(
            vec![
                ("run_id", string()),
                ("module", name()),
                ("entity", string()),
                ("answer", string()),
                ("answered_by", string()),
                ("answered_at", time()),
                ("resumes", json!({"const": true})),
            ],
            &[
                "run_id",
                "module",
                "entity",
                "answer",
                "answered_by",
                "answered_at",
                "resumes",
            ],
        ),
    );
    put(
        "NotifyAccepted",
        object(
            vec![("queued", json!({"const": true})), ("module", name())],
            &["queued", "module"],
        ),
    );
    Value::Object(s)
}
