//! `GET /api/openapi.json`: the OpenAPI 3.1 document, written from the route table
//! ([`super::routes`]) and the schemas ([`super::schema`]) and nothing else.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::auth::Access;
use super::routes::{routes, In, Route};
use super::{schema, MAX_API_BODY_BYTES};

/// The document; built once, it never changes while kai runs.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn operation(route: &Route) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(route.operation_id));
    op.insert("summary".into(), json!(route.summary));
    let kinds = route.access.token_kinds();
    let who = match route.access {
        Access::Public => "No token.".to_owned(),
        Access::Signed => {
            "Authenticated by the webhook's signature, not a bearer token.".to_owned()
        }
        _ => format!("Tokens: {}.", kinds.join(", ")),
    };
    op.insert(
        "description".into(),
        json!(format!("{}\n\n{who}", route.description)),
    );
    op.insert("tags".into(), json!([route.tag]));
    op.insert("x-kai-tokens".into(), json!(kinds));
    op.insert(
        "security".into(),
        if route.access.needs_bearer() {
            json!([{ "bearer": [] }])
        } else {
            json!([])
        },
    );
    let params: Vec<Value> = route
        .params
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "in": match p.location { In::Path => "path", In::Query => "query" },
                "required": p.required || p.location == In::Path,
                "description": p.description,
                "schema": p.schema,
            })
        })
        .collect();
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let Some(body) = &route.body {
        op.insert(
            "requestBody".into(),
            json!({
                "required": body.required,
                "description": body.description,
                "content": { "application/json": { "schema": schema_ref(body.schema) } },
            }),
        );
    }
    let mut responses = Map::new();
    for r in route.responses() {
        responses.insert(
            r.status.to_string(),
            json!({
                "description": r.description,
                "content": { "application/json": { "schema": schema_ref(r.schema) } },
            }),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn build() -> Value {
    let mut paths = Map::new();
    for route in routes() {
        let item = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.lower()] = operation(route);
    }
    let mut tags: Vec<&str> = Vec::new();
    for route in routes() {
        if !tags.contains(&route.tag) {
            tags.push(route.tag);
        }
    }
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "kai",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "The management API of kai, a self-hosted agent host",
            "description": format!(
                "Every `/api/*` route takes `Authorization: Bearer <token>`: the admin token (`KAI_API_TOKEN`, or `$KAI_DATA_DIR/api_token`), the chat token (`$KAI_DATA_DIR/chat_token`), or a run token (`KAI_RUN_TOKEN`, valid while its run is in flight). Each operation's `x-kai-tokens` lists the tokens it takes. Errors are `{{\"error\": \"...\", \"code\": \"...\"}}`. Request bodies are JSON objects of at most {} KiB; unknown query parameters and body fields are refused. See docs/API.md.",
                MAX_API_BODY_BYTES / 1024
            ),
            "license": { "name": "MIT", "identifier": "MIT" },
        },
        "tags": tags.iter().map(|t| json!({ "name": t })).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": schema::components(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin, chat or run token",
                },
            },
        },
    })
}
