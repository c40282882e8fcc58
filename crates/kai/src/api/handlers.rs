//! What each route does, once [`super::dispatch`] has checked the token, the parameters and the
//! body's size. Handlers read through the ledger and the journal files; the only ones that
//! write are invoke (a delivery into the inbox), enable and disable (the switch), and notify.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{SecondsFormat, Utc};
use kai_core::{JournalEntry, LoadedModule, Registry};
use kai_sdk::{Trigger, TriggerType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::routes::{check_entity, parse_limit, parse_since, BoxFuture};
use super::schema::{MAX_NOTE_CHARS, MAX_REASON_CHARS};
use super::{openapi, to_json, ApiError, Call, Caller, Reply};
use crate::data_dir::DataDir;
use crate::engine::new_run_id;
use crate::journal::{self, Query};
use crate::ledger::{Answer, Answered, OutMessage};
use crate::ledger::{Delivery, Ledger, Phase};

/// The inbox source of API invokes; their delivery ids are `i_<ULID>`.
pub const INVOKE_SOURCE: &str = "invoke";
/// How long an invoke waits for the dispatcher before answering `"status": "accepted"`.
const DISPATCH_WAIT: Duration = Duration::from_secs(2);
/// Journal entries in a module's detail.
const RECENT: usize = 10;

fn ledger(call: &Call) -> &Ledger {
    &call.api.daemon.engine.ledger
}

fn data(call: &Call) -> &DataDir {
    &call.api.daemon.engine.data
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The module a load error is about, from its file: `.../modules/NAME/module.yaml` or
/// `builtin:NAME/module.yaml`.
fn module_of_file(file: &str) -> Option<String> {
    let dir = file.strip_suffix("/module.yaml")?;
    let name = dir.rsplit('/').next()?;
    let name = name.strip_prefix("builtin:").unwrap_or(name);
    kai_core::name::check(name).ok().map(|()| name.to_owned())
}

/// The loaded module of that name, or `404` saying whether it exists but failed to load.
fn find<'a>(registry: &'a Registry, name: &str) -> Result<&'a LoadedModule, ApiError> {
    if let Some(m) = registry.get(name) {
        return Ok(m);
    }
    let failed = registry
        .errors()
        .iter()
        .find(|e| module_of_file(&e.file).as_deref() == Some(name));
    Err(match failed {
        Some(e) => {
            ApiError::not_found("unknown_module", format!("module {name} did not load: {e}"))
        }
        None => ApiError::not_found(
            "unknown_module",
            format!("there is no module named {name} (GET /api/modules lists them)"),
        ),
    })
}

/// Whether new triggers start runs, and if not, why.
fn enabled_state(m: &LoadedModule, switched_off: Option<String>) -> (bool, Option<String>) {
    if !m.manifest.enabled {
        return (
            false,
            Some("disabled in its manifest (enabled: false)".into()),
        );
    }
    (switched_off.is_none(), switched_off)
}

fn count_pending(data: &DataDir, module: &str) -> usize {
    std::fs::read_dir(data.pending_dir(module))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

fn summary(call: &Call, m: &LoadedModule) -> Result<Value, ApiError> {
    let name = m.name();
    let since = Utc::now() - chrono::Duration::hours(24);
    let activity = ledger(call)
        .activity(name, since)
        .map_err(|e| ApiError::internal("cannot read the run ledger", e))?;
    let off = ledger(call)
        .switched_off(name)
        .map_err(|e| ApiError::internal("cannot read the run ledger", e))?;
    let (enabled, disabled_reason) = enabled_state(m, off);
    let last_run = activity.last.map(|l| {
        json!({
            "run_id": l.run_id,
            "status": l.status,
            "entity": l.entity,
            "finished_at": rfc3339(l.finished_at),
        })
    });
    Ok(json!({
        "name": name,
        "version": m.manifest.version,
        "description": m.manifest.description,
        "builtin": m.is_builtin(),
        "enabled": enabled,
        "disabled_reason": disabled_reason,
        "triggers": m.manifest.triggers,
        "last_run": last_run,
        "counts_24h": { "runs": activity.finished, "failures": activity.failures },
        "queued": activity.queued,
        "running": activity.running,
        "pending": count_pending(data(call), name),
    }))
}

pub fn openapi(_call: &Call) -> Result<Reply, ApiError> {
    Reply::ok(openapi::document().clone())
}

pub fn list_modules(call: &Call) -> Result<Reply, ApiError> {
    let registry = call.api.daemon.registry();
    let modules = registry
        .modules()
        .map(|m| summary(call, m))
        .collect::<Result<Vec<_>, _>>()?;
    let errors: Vec<Value> = registry
        .errors()
        .iter()
        .map(|e| {
            json!({
                "module": module_of_file(&e.file),
                "file": e.file,
                "line": e.line,
                "message": e.message,
            })
        })
        .collect();
    Reply::ok(json!({ "modules": modules, "errors": errors }))
}

pub fn get_module(call: &Call) -> Result<Reply, ApiError> {
    let registry = call.api.daemon.registry();
    let m = find(&registry, call.path("name"))?;
    let data = data(call);
    let mut out = summary(call, m)?;
    let recent = call.api.journal.list(
        data,
        m.name(),
        &Query {
            limit: Some(RECENT),
            ..Default::default()
        },
    );
    let state = std::fs::read(data.state_file(m.name()))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .unwrap_or(Value::Null);
    let mut warnings = Vec::new();
    let questions = pending_of(data, m.name(), &mut warnings);
    let entries: Vec<&JournalEntry> = recent.entries.iter().map(|l| &l.entry).collect();
    let extra = json!({
        "manifest": m.manifest,
        "manifest_file": m.manifest_file,
        "data_dir": data.module_dir(m.name()),
        "state": state,
        "questions": questions,
        "recent": entries,
    });
    if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    Reply::ok(out)
}

pub fn list_events(call: &Call) -> Result<Reply, ApiError> {
    let name = call.path("name");
    let registry = call.api.daemon.registry();
    let data = data(call);
    // A module that is gone still has its journal; only a name kai never saw is unknown.
    if registry.get(name).is_none() && !data.module_dir(name).is_dir() {
        find(&registry, name)?;
    }
    let bad = |e: String| ApiError::bad_request("bad_query", e);
    let query = Query {
        entity: call.query("entity").map(str::to_owned),
        status: call
            .query("status")
            .map(str::parse)
            .transpose()
            .map_err(bad)?,
        since: call
            .query("since")
            .map(parse_since)
            .transpose()
            .map_err(bad)?,
        limit: Some(
            call.query("limit")
                .map(parse_limit)
                .transpose()
                .map_err(bad)?
                .unwrap_or(50),
        ),
    };
    let listing = call.api.journal.list(data, name, &query);
    let events: Vec<&JournalEntry> = listing.entries.iter().map(|l| &l.entry).collect();
    Reply::ok(json!({
        "module": name,
        "events": events,
        "warnings": listing.warnings,
    }))
}

/// The open questions of one module, from `pending/*.json`, oldest first. A file that is not a
/// checkpoint is named in `warnings` and left out.
fn pending_of(data: &DataDir, module: &str, warnings: &mut Vec<String>) -> Vec<Value> {
    let Ok(dir) = std::fs::read_dir(data.pending_dir(module)) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String, Value)> = Vec::new();
    for entry in dir.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".json") else {
            continue;
        };
        let path = entry.path();
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            .and_then(|v| {
                let q = serde_json::from_value::<kai_sdk::Question>(v["question"].clone())
                    .map_err(|e| format!("no valid question: {e}"))?;
                Ok((v, q))
            });
        let (v, question) = match parsed {
            Ok(p) => p,
            Err(e) => {
                warnings.push(format!("{module}/pending/{file}: {e}"));
                continue;
            }
        };
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let asked_at = text("asked_at");
        out.push((
            asked_at.clone().unwrap_or_default(),
            stem.to_owned(),
            json!({
                "run_id": text("run_id").unwrap_or_else(|| stem.to_owned()),
                "module": module,
                "entity": text("entity"),
                "chat_id": v.get("chat_id").and_then(Value::as_i64),
                "question": question,
                "asked_at": asked_at,
                "expires_at": text("expires_at"),
            }),
        ));
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out.into_iter().map(|(_, _, v)| v).collect()
}

pub fn list_pending(call: &Call) -> Result<Reply, ApiError> {
    let data = data(call);
    let mut warnings = Vec::new();
    let mut all: Vec<Value> = journal::module_dirs(data)
        .iter()
        .flat_map(|m| pending_of(data, m, &mut warnings))
        .collect();
    all.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["asked_at"].as_str().unwrap_or_default().to_owned(),
                v["run_id"].as_str().unwrap_or_default().to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    Reply::ok(json!({ "pending": all, "warnings": warnings }))
}

pub fn list_decisions(call: &Call) -> Result<Reply, ApiError> {
    let bad = |e: String| ApiError::bad_request("bad_query", e);
    let since = call
        .query("since")
        .map(parse_since)
        .transpose()
        .map_err(bad)?;
    let limit = call
        .query("limit")
        .map(parse_limit)
        .transpose()
        .map_err(bad)?
        .unwrap_or(100);
    let decisions = ledger(call)
        .decisions(call.query("module"), since, limit)
        .map_err(|e| ApiError::internal("cannot read the why-not log", e))?;
    Reply::ok(json!({ "decisions": to_json(&decisions) }))
}

fn phase_str(phase: Phase) -> &'static str {
    match phase {
        Phase::Queued => "queued",
        Phase::Running => "running",
        Phase::Finishing => "finishing",
        Phase::Finished => "finished",
    }
}

pub fn get_run(call: &Call) -> Result<Reply, ApiError> {
    let id = call.path("id");
    let internal = |e| ApiError::internal("cannot read the run ledger", e);
    let Some(row) = ledger(call).get(id).map_err(internal)? else {
        return Err(ApiError::not_found(
            "unknown_run",
            format!("there is no run {id}"),
        ));
    };
    let times = ledger(call).run_times(id).map_err(internal)?;
    let entry = row.outcome.as_ref().map(|f| &f.entry);
    let status = match (row.phase, entry) {
        (Phase::Finishing | Phase::Finished, Some(e)) => e.status.as_str(),
        (phase, _) => phase_str(phase),
    };
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(rfc3339);
    Reply::ok(json!({
        "run_id": row.run_id,
        "module": row.module,
        "entity": row.entity,
        "trigger": row.trigger.label(),
        "delivery_id": row.trigger.delivery_id,
        "chat_id": row.chat_id,
        "phase": phase_str(row.phase),
        "status": status,
        "attempt": row.attempt,
        "created_at": time(times.as_ref().and_then(|t| t.created_at)),
        "started_at": time(times.as_ref().and_then(|t| t.started_at)),
        "finished_at": time(times.as_ref().and_then(|t| t.finished_at)),
        "entry": entry,
    }))
}

// --- invoke ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeBody {
    entity: Option<String>,
    data: Option<Value>,
    #[serde(default, deserialize_with = "whole_number")]
    chat_id: Option<i64>,
    #[serde(default)]
    wait: bool,
}

/// Largest chat id taken: Telegram's ids have at most 52 significant bits, and within 2^53 a
/// number means the same as an integer and as a float.
pub const MAX_CHAT_ID: i64 = (1 << 53) - 1;

/// An integer as JSON Schema has it: `12` and `12.0` alike (serde takes only the first), within
/// ±[`MAX_CHAT_ID`].
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let limit = MAX_CHAT_ID as f64;
    let value = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i).filter(|i| i.abs() <= MAX_CHAT_ID),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() <= limit => Some(f as i64),
        _ => None,
    };
    value.map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "chat_id: {n} is not a whole number between -{MAX_CHAT_ID} and {MAX_CHAT_ID}"
        ))
    })
}

pub fn invoke(call: Call) -> BoxFuture {
    Box::pin(invoke_run(call))
}

/// Where an invoked run is, as far as the ledger says.
enum Progress {
    /// Still in the inbox.
    Waiting,
    Declined(crate::ledger::Decision),
    Run(Box<crate::ledger::RunRow>),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::internal("cannot use the run ledger", e)),
        Err(e) => Err(ApiError::internal("cannot use the run ledger", e)),
    }
}

async fn progress(call: &Call, run_id: &str, delivery_id: &str) -> Result<Progress, ApiError> {
    let engine = call.api.daemon.engine.clone();
    let (run_id, delivery_id) = (run_id.to_owned(), delivery_id.to_owned());
    blocking(move || {
        if let Some(row) = engine.ledger.get(&run_id)? {
            return Ok(Progress::Run(Box::new(row)));
        }
        // The run is queued in the same transaction that marks the delivery dispatched, so a
        // dispatched delivery without its run was declined.
        if engine
            .ledger
            .delivery_dispatched(INVOKE_SOURCE, &delivery_id)?
            != Some(true)
        {
            return Ok(Progress::Waiting);
        }
        // Dispatched meanwhile: the run may exist now (a `concurrency` decision is logged for
        // a run that waits, and it still runs).
        if let Some(row) = engine.ledger.get(&run_id)? {
            return Ok(Progress::Run(Box::new(row)));
        }
        Ok(match engine.ledger.decision_for_delivery(&delivery_id)? {
            Some(d) if d.reason != "concurrency" => Progress::Declined(d),
            _ => Progress::Waiting,
        })
    })
    .await
}

async fn invoke_run(call: Call) -> Result<Reply, ApiError> {
    let started = Instant::now();
    let body: InvokeBody = call.json_body()?;
    if let Some(e) = &body.entity {
        check_entity(e).map_err(|msg| ApiError::invalid(format!("entity: {msg}")))?;
    }
    let name = call.path("name").to_owned();
    find(&call.api.daemon.registry(), &name)?;
    let run_id = new_run_id();
    let delivery_id = format!("i_{}", ulid::Ulid::new());
    let trigger = Trigger {
        kind: TriggerType::Invoke,
        source: Some("api".into()),
        event: None,
        action: None,
        delivery_id: Some(delivery_id.clone()),
        payload: body.data.unwrap_or_else(|| json!({})),
    };
    let delivery = Delivery {
        source: INVOKE_SOURCE.into(),
        delivery_id: delivery_id.clone(),
        trigger,
        module: Some(name.clone()),
        entity: body.entity.as_deref().map(|e| e.trim().to_owned()),
        chat_id: body.chat_id,
        run_id: Some(run_id.clone()),
    };
    let daemon = call.api.daemon.clone();
    let fresh = blocking(move || daemon.accept(&delivery)).await?;
    if !fresh {
        return Err(ApiError::internal(
            "cannot store the invoke",
            format!("delivery id {delivery_id} was taken"),
        ));
    }
    tracing::info!(target: "kai::api", module = %name, run = %run_id, caller = call.caller.kind(), "invoked through the API");
    let answer = |status: StatusCode, run_status: &str, result: Option<&JournalEntry>| {
        let mut body = json!({
            "run_id": run_id,
            "status": run_status,
            "module": name,
            "delivery_id": delivery_id,
        });
        if let Some(entry) = result {
            body["result"] = to_json(entry);
        }
        Reply::with_status(status, body)
    };
    let wait_limit = call.api.options.wait_limit;
    let mut pause = Duration::from_millis(5);
    let mut last = "accepted";
    loop {
        match progress(&call, &run_id, &delivery_id).await? {
            Progress::Declined(d) => {
                tracing::info!(target: "kai::api", module = %name, reason = %d.reason, "invoke declined: {}", d.detail);
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "declined",
                    format!("{name} did not start a run: {}", d.detail),
                )
                .with("reason", json!(d.reason))
                .with("delivery_id", json!(delivery_id))
                .with("decision", to_json(&d)));
            }
            Progress::Run(row) => {
                let ended = row.phase == Phase::Finished;
                match (&row.outcome, ended) {
                    (Some(f), true) if body.wait => {
                        return answer(StatusCode::OK, f.entry.status.as_str(), Some(&f.entry));
                    }
                    (Some(f), true) => {
                        return answer(StatusCode::ACCEPTED, f.entry.status.as_str(), None)
                    }
                    _ if !body.wait => {
                        return answer(StatusCode::ACCEPTED, phase_str(row.phase), None)
                    }
                    _ => last = phase_str(row.phase),
                }
            }
            Progress::Waiting if !body.wait && started.elapsed() >= DISPATCH_WAIT => {
                return answer(StatusCode::ACCEPTED, "accepted", None);
            }
            Progress::Waiting => {}
        }
        let stopping = call.api.daemon.shutdown.is_cancelled();
        if (body.wait && started.elapsed() >= wait_limit) || stopping {
            return answer(StatusCode::ACCEPTED, last, None);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

// --- switches --------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableBody {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableBody {
    reason: Option<String>,
}

pub fn enable(call: &Call) -> Result<Reply, ApiError> {
    let EnableBody {} = call.json_body()?;
    let registry = call.api.daemon.registry();
    let m = find(&registry, call.path("name"))?;
    if !m.manifest.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "disabled_in_manifest",
            format!(
                "{} is disabled in its manifest (enabled: false); edit {} to switch it on",
                m.name(),
                m.manifest_file
            ),
        ));
    }
    ledger(call)
        .switch(m.name(), None)
        .map_err(|e| ApiError::internal("cannot record the switch", e))?;
    tracing::info!(target: "kai::api", module = m.name(), caller = call.caller.kind(), "enabled through the API");
    Reply::ok(json!({ "name": m.name(), "enabled": true, "disabled_reason": null }))
}

pub fn disable(call: &Call) -> Result<Reply, ApiError> {
    let body: DisableBody = call.json_body()?;
    let reason = match body.reason {
        None => "switched off through the API".to_owned(),
        Some(r) => {
            let clean: String = r
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>()
                .trim()
                .to_owned();
            if clean.is_empty() || clean.chars().count() > MAX_REASON_CHARS {
                return Err(ApiError::invalid(format!(
                    "reason: 1 to {MAX_REASON_CHARS} characters, not blank"
                )));
            }
            clean
        }
    };
    let registry = call.api.daemon.registry();
    let m = find(&registry, call.path("name"))?;
    ledger(call)
        .switch(m.name(), Some(&reason))
        .map_err(|e| ApiError::internal("cannot record the switch", e))?;
    tracing::info!(target: "kai::api", module = m.name(), caller = call.caller.kind(), "disabled through the API: {reason}");
    let (enabled, disabled_reason) = enabled_state(m, Some(reason));
    Reply::ok(json!({ "name": m.name(), "enabled": enabled, "disabled_reason": disabled_reason }))
}

// --- notify ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyBody {
    text: String,
    /// `plain` (default), `markdown` or `html`; a text Telegram cannot parse is sent plain.
    #[serde(default)]
    format: Option<String>,
}

pub fn notify(call: &Call) -> Result<Reply, ApiError> {
    let Caller::Run { module, token, .. } = &call.caller else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "run_token_required",
            "POST /api/notify takes a run token",
        ));
    };
    let body: NotifyBody = call.json_body()?;
    let text = body.text.trim();
    if text.is_empty() || text.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::invalid(format!(
            "text: 1 to {MAX_NOTE_CHARS} characters, not blank"
        )));
    }
    let engine = &call.api.daemon.engine;
    let mut secrets = engine.config.secrets();
    secrets.extend([
        call.api.tokens.admin().expose(),
        call.api.tokens.chat().expose(),
        token.expose(),
    ]);
    let text = kai_core::outcome::redact(text, &secrets);
    let parse_mode = match body.format.as_deref() {
        None | Some("plain") => None,
        Some("markdown") => Some("Markdown".to_owned()),
        Some("html") => Some("HTML".to_owned()),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format: one of plain, markdown, html, not `{other}`"
            )))
        }
    };
    let note = OutMessage {
        parse_mode,
        ..OutMessage::to_module(module, text)
    };
    engine
        .tell(&[note])
        .map_err(|e| ApiError::internal("cannot queue the note", e))?;
    Reply::with_status(
        StatusCode::ACCEPTED,
        json!({ "queued": true, "module": module }),
    )
}

// --- answer ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    answer: String,
}

/// `POST /api/pending/{run_id}/answer`: the first answer resumes the run; a later one is `409`
/// saying who answered and when.
pub fn answer(call: &Call) -> Result<Reply, ApiError> {
    let run_id = call.path("run_id");
    let body: AnswerBody = call.json_body()?;
    let text = body.answer.trim();
    if text.is_empty() || text.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::invalid(format!(
            "answer: 1 to {MAX_NOTE_CHARS} characters, not blank"
        )));
    }
    let a = Answer {
        text: text.to_owned(),
        by: format!("api ({} token)", call.caller.kind()),
        at: Utc::now(),
        via: "api".into(),
    };
    let engine = &call.api.daemon.engine;
    let result = crate::questions::answer(engine, run_id, a, |_, _| Ok(()))
        .map_err(|e| ApiError::internal("cannot record the answer", e))?;
    call.api.daemon.wake();
    match result {
        Answered::Accepted(q) => {
            let a = q.answer.as_ref();
            Reply::ok(json!({
                "run_id": q.run_id,
                "module": q.module,
                "entity": q.entity,
                "answer": a.map(|a| a.text.clone()),
                "answered_by": a.map(|a| a.by.clone()),
                "answered_at": a.map(|a| rfc3339(a.at)),
                "resumes": true,
            }))
        }
        Answered::Already(q) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_answered",
            crate::questions::already_text(&q),
        )
        .with(
            "answered_by",
            json!(q.answer.as_ref().map(|a| a.by.clone())),
        )
        .with(
            "answered_at",
            json!(q.answer.as_ref().map(|a| rfc3339(a.at))),
        )
        .with("closed", json!(q.closed))),
        Answered::Unknown => Err(ApiError::not_found(
            "unknown_question",
            format!("there is no question of run {run_id}"),
        )),
    }
}
