//! The HTTP server: `/health` and the webhooks (SPEC 4); [`app`] adds the management API. A delivery is answered `202` only
//! once it is in the durable inbox; the modules it wakes run later, whatever they do.
//!
//! Checks come in this order, each with its status: body over 25 MiB `413`; GitHub webhooks
//! off (no secret configured) `403`; signature missing or wrong `401` (checked in constant
//! time over the raw body); event or delivery header missing or malformed `400`; body not a
//! JSON object `400`; `ping` `200`; a delivery id seen before `200` with `"duplicate": true`;
//! otherwise `202`. An event no module takes is still accepted (and announced).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use kai_sdk::{Trigger, TriggerType};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::daemon::Daemon;
use crate::ledger::Delivery;

/// Largest body accepted: GitHub caps payloads at 25 MiB.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The routes, over the daemon.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/webhook/github", post(github))
        .route("/webhook/{source}", post(generic))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(daemon)
}

/// Everything kai serves: `/health`, the webhooks and the management API (`crate::api`), with
/// JSON answers for unknown paths and methods. The webhooks keep their 25 MiB body limit; the
/// API reads at most 1 MiB ([`crate::api::MAX_API_BODY_BYTES`]).
pub fn app(daemon: Arc<Daemon>, api: Arc<crate::api::ApiState>) -> Router {
    router(daemon)
        .merge(crate::api::router(api))
        .fallback(crate::api::no_route)
        .method_not_allowed_fallback(crate::api::method_not_allowed)
}

/// An error as every route answers it: `{"error": "...", "code": "..."}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": message.into(), "code": code })),
    )
        .into_response()
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of `body`; constant time in the comparison.
pub fn signature_ok(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The body, or the JSON error for one that is too large or could not be read.
#[allow(clippy::result_large_err)] // as parse_object
pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Response> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the body is larger than {} MiB",
                    MAX_BODY_BYTES / (1024 * 1024)
                ),
            )
        } else {
            error(
                e.status(),
                "bad_body",
                format!("the body could not be read: {}", e.body_text()),
            )
        }
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Event names and delivery ids: short, printable, no spaces.
fn token_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| c.is_ascii_graphic())
}

// The error is a finished response, built once per rejected request: its size is no cost.
#[allow(clippy::result_large_err)]
fn parse_object(body: &[u8]) -> Result<Value, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "the body is JSON but not an object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("the body is not JSON: {e}"),
        )),
    }
}

fn accept(daemon: &Daemon, delivery: Delivery) -> Response {
    let id = delivery.delivery_id.clone();
    match crate::engine::off_runtime(|| daemon.accept(&delivery)) {
        Ok(true) => (
            StatusCode::ACCEPTED,
            Json(json!({ "accepted": true, "delivery_id": id })),
        )
            .into_response(),
        Ok(false) => {
            daemon.record_duplicate(&delivery.source, &delivery.trigger);
            (
                StatusCode::OK,
                Json(json!({ "duplicate": true, "delivery_id": id })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!("cannot store a delivery: {e:#}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_failed",
                "the delivery could not be stored; send it again",
            )
        }
    }
}

async fn github(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(secret) = daemon.engine.config.github_webhook_secret.clone() else {
        return error(
            StatusCode::FORBIDDEN,
            "webhooks_off",
            "GitHub webhooks are off: KAI_GITHUB_WEBHOOK_SECRET is not set",
        );
    };
    let Some(sig) = header(&headers, "x-hub-signature-256") else {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing X-Hub-Signature-256",
        );
    };
    if !signature_ok(secret.expose().as_bytes(), sig, &body) {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "X-Hub-Signature-256 does not match the body",
        );
    }
    let Some(event) = header(&headers, "x-github-event").filter(|e| token_ok(e, 64)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_event",
            "missing or malformed X-GitHub-Event",
        );
    };
    let payload = match parse_object(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if event == "ping" {
        return (StatusCode::OK, Json(json!({ "ok": true, "ping": true }))).into_response();
    }
    let Some(delivery_id) = header(&headers, "x-github-delivery").filter(|d| token_ok(d, 128))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_delivery",
            "missing or malformed X-GitHub-Delivery",
        );
    };
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .filter(|a| token_ok(a, 64))
        .map(str::to_owned);
    let trigger = Trigger {
        kind: TriggerType::Webhook,
        source: Some("github".into()),
        event: Some(event.to_owned()),
        action,
        delivery_id: Some(delivery_id.to_owned()),
        payload,
    };
    accept(
        &daemon,
        Delivery {
            source: "github".into(),
            delivery_id: delivery_id.to_owned(),
            trigger,
            module: None,
            entity: None,
            chat_id: None,
            run_id: None,
        },
    )
}

async fn generic(
    State(daemon): State<Arc<Daemon>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match read_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(cfg) = daemon.engine.config.sources.get(&source).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_source",
            "no webhook source by that name",
        );
    };
    let authorised = match (&cfg.secret, &cfg.token) {
        (Some(secret), _) => header(&headers, "x-kai-signature-256")
            .is_some_and(|sig| signature_ok(secret.expose().as_bytes(), sig, &body)),
        (None, Some(token)) => header(&headers, "authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|given| {
                bool::from(given.trim().as_bytes().ct_eq(token.expose().as_bytes()))
            }),
        (None, None) => false,
    };
    if !authorised {
        return error(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "missing or wrong signature or token",
        );
    }
    let payload = match parse_object(&body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let event = match (&cfg.event_field, &cfg.event_header) {
        (Some(field), _) => {
            let keys: Vec<&str> = field.split('.').collect();
            kai_core::template::lookup(&payload, &keys)
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
        (None, Some(h)) => header(&headers, h).map(str::to_owned),
        (None, None) => header(&headers, "x-kai-event").map(str::to_owned),
    };
    let Some(event) = event.filter(|e| token_ok(e, 64)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_event",
            "the event name is missing or malformed",
        );
    };
    let delivery_id = header(
        &headers,
        cfg.delivery_header.as_deref().unwrap_or("x-kai-delivery"),
    )
    .filter(|d| token_ok(d, 128))
    .map(str::to_owned)
    .unwrap_or_else(|| format!("d_{}", ulid::Ulid::new()));
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .filter(|a| token_ok(a, 64))
        .map(str::to_owned);
    let trigger = Trigger {
        kind: TriggerType::Webhook,
        source: Some(source.clone()),
        event: Some(event),
        action,
        delivery_id: Some(delivery_id.clone()),
        payload,
    };
    accept(
        &daemon,
        Delivery {
            source,
            delivery_id,
            trigger,
            module: None,
            entity: None,
            chat_id: None,
            run_id: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_githubs_check_value() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_ok(
            b"It's a Secret to Everybody",
            sig,
            b"Hello, World!"
        ));
        assert!(!signature_ok(
            b"It's a Secret to Everybody",
            sig,
            b"Hello, World?"
        ));
        assert!(!signature_ok(b"wrong", sig, b"Hello, World!"));
        assert!(!signature_ok(
            b"It's a Secret to Everybody",
            "sha1=abc",
            b"Hello, World!"
        ));
        assert!(!signature_ok(
            b"It's a Secret to Everybody",
            "sha256=zz",
            b"Hello, World!"
        ));
    }
}
