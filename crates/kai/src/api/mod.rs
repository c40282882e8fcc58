//! The management API (SPEC 5): `/api/*`, JSON in and out, behind bearer tokens.
//!
//! - [`routes`]: the route table, the single list the router and the document come from;
//! - [`auth`]: tokens, callers and scopes;
//! - [`handlers`]: what each route does; [`journal_cache`]: journal listings that stay fast on
//!   long journals;
//! - [`schema`] and [`openapi`]: the OpenAPI 3.1 document, `GET /api/openapi.json`.
//!
//! Every request goes through [`dispatch`] in the same order, so every route refuses the same
//! way: token (`401`), the token's scope (`403`), path parameters (`400`), the run token's own
//! module (`403`), query parameters (`400`), body size (`413`); then the handler, which answers
//! `400` for a body that is not a JSON object, `422` for one whose fields are wrong, `404` for
//! what does not exist, `409` for a conflict. Nothing is written before all of these passed.
//! Errors are `{"error": "...", "code": "..."}`. A handler that panics answers `500`; the
//! server goes on.

pub mod auth;
pub mod handlers;
pub mod journal_cache;
pub mod openapi;
pub mod routes;
pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

pub use auth::{Access, ApiTokens, Caller};
pub use routes::{routes, Handler, In, Method, Route};

use crate::daemon::Daemon;

/// Largest API request body. Webhooks keep their own 25 MiB (`crate::http`).
pub const MAX_API_BODY_BYTES: usize = 1024 * 1024;

/// How long `"wait": true` waits for a run by default.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(30);

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The longest an invoke with `"wait": true` holds the request before answering `202`.
    pub wait_limit: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            wait_limit: DEFAULT_WAIT_LIMIT,
        }
    }
}

impl ApiOptions {
    /// From the environment: `KAI_API_WAIT_LIMIT` (a duration: `30s`, `2m`).
    /// From the settings (`KAI_API_WAIT_LIMIT`, flag, `kai.toml`).
    pub fn from_config(config: &crate::config::Config) -> ApiOptions {
        ApiOptions {
            wait_limit: config.api_wait_limit.unwrap_or(DEFAULT_WAIT_LIMIT),
        }
    }
}

/// What the API's handlers share.
pub struct ApiState {
    pub daemon: Arc<Daemon>,
    pub tokens: ApiTokens,
    pub options: ApiOptions,
    pub journal: journal_cache::JournalCache,
}

impl ApiState {
    pub fn new(daemon: Arc<Daemon>, tokens: ApiTokens, options: ApiOptions) -> Arc<ApiState> {
        Arc::new(ApiState {
            daemon,
            tokens,
            options,
            journal: journal_cache::JournalCache::default(),
        })
    }
}

impl ApiState {
    /// Reads every module's journal names in the background, so that the first journal query
    /// does not pay for reading a long events directory (about 60 ms for 100,000 files).
    pub fn warm_up(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let api = self.clone();
        runtime.spawn_blocking(move || {
            let data = &api.daemon.engine.data;
            for module in crate::journal::module_dirs(data) {
                api.journal.prime(data, &module);
            }
        });
    }
}

/// An error answer: `{"error": message, "code": code}` and any `extra` fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub extra: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// kai's own failure. The details go to the log; the caller gets what it can act on.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> ApiError {
        tracing::error!("api: {context}: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}; the log says why"),
        )
    }

    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.message));
        body.insert("code".into(), Value::String(self.code));
        body.extend(self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"kai\""),
            );
        }
        response
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn ok(body: Value) -> Result<Reply, ApiError> {
        Ok(Reply {
            status: StatusCode::OK,
            body,
        })
    }

    pub fn with_status(status: StatusCode, body: Value) -> Result<Reply, ApiError> {
        Ok(Reply { status, body })
    }
}

/// One request, checked against its route: who calls, with which parameters and body.
pub struct Call {
    pub api: Arc<ApiState>,
    pub caller: Caller,
    pub route: &'static Route,
    path: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    body: Bytes,
}

impl Call {
    /// A path parameter; the route declares it, so it is there and already checked.
    pub fn path(&self, name: &str) -> &str {
        self.path.get(name).map(String::as_str).unwrap_or_default()
    }

    /// A query parameter, if given (already checked).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// The body as `T`: `400` when it is not a JSON object, `422` when its fields do not fit.
    /// No body at all is `{}`.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let value: Value = if self.body.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(&self.body).map_err(|e| {
                ApiError::bad_request("bad_json", format!("the body is not valid JSON: {e}"))
            })?
        };
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "bad_json",
                "the body must be a JSON object",
            ));
        }
        serde_json::from_value(value)
            .map_err(|e| ApiError::invalid(format!("the body does not fit: {e}")))
    }
}

/// The API's routes, built from the route table.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<Arc<ApiState>>> = BTreeMap::new();
    for route in routes() {
        if matches!(route.handler, Handler::Http) {
            continue;
        }
        let filter = match route.method {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        };
        let endpoint = on(
            filter,
            move |State(api): State<Arc<ApiState>>, req: Request| dispatch(api, route, req),
        );
        let entry = by_path.remove(route.path);
        let merged = match entry {
            Some(existing) => existing.merge(endpoint),
            None => endpoint,
        };
        by_path.insert(route.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    router.with_state(state)
}

/// The answer to a path no route takes. Dot segments get a `400` of their own, since a client
/// sending `/api/modules/../etc` most likely meant a module name.
pub async fn no_route(req: Request) -> Response {
    let path = req.uri().path();
    let dotted = path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase();
        matches!(
            lower.as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    });
    if dotted {
        return ApiError::bad_request(
            "bad_path",
            "the path has `.` or `..` segments; module names are lowercase letters, digits and `-`",
        )
        .into_response();
    }
    ApiError::not_found(
        "no_route",
        format!(
            "no route {} {}",
            req.method(),
            path.chars().take(200).collect::<String>()
        ),
    )
    .into_response()
}

/// The answer to a known path with a method it does not take.
pub async fn method_not_allowed(req: Request) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not take {}",
            req.uri().path().chars().take(200).collect::<String>(),
            req.method()
        ),
    )
    .into_response()
}

async fn dispatch(api: Arc<ApiState>, route: &'static Route, req: Request) -> Response {
    let method = route.method.as_str();
    let result = check_and_call(api, route, req).await;
    let (status, caller) = match &result {
        Ok((reply, caller)) => (reply.status, caller.kind()),
        Err((e, caller)) => (e.status, caller.as_ref().map_or("none", Caller::kind)),
    };
    tracing::debug!(target: "kai::api", %status, caller, "{method} {}", route.path);
    match result {
        Ok((reply, _)) => (reply.status, Json(reply.body)).into_response(),
        Err((e, _)) => e.into_response(),
    }
}

type Checked = Result<(Reply, Caller), (ApiError, Option<Caller>)>;

async fn check_and_call(api: Arc<ApiState>, route: &'static Route, req: Request) -> Checked {
    let (mut parts, body) = req.into_parts();
    let caller = auth::authenticate(&parts.headers, &api.tokens, &api.daemon.engine.run_tokens)
        .map_err(|e| (e, None))?;
    let fail = |e: ApiError| (e, Some(caller.clone()));
    // Scope first, on what the token is, before anything about the request is looked at; a
    // run token's own module is checked once the path's name is known to be a name.
    if route.access != Access::OwnModule {
        route.access.allows(&caller, None).map_err(fail)?;
    }
    let raw = RawPathParams::from_request_parts(&mut parts, &api)
        .await
        .map_err(|e| fail(ApiError::bad_request("bad_path", e.body_text())))?;
    let mut path = BTreeMap::new();
    for (key, value) in raw.iter() {
        if let Some(param) = route.path_params().find(|p| p.name == key) {
            (param.check)(value).map_err(|msg| fail(ApiError::bad_request("bad_path", msg)))?;
        }
        path.insert(key.to_owned(), value.to_owned());
    }
    if route.access == Access::OwnModule {
        route
            .access
            .allows(&caller, path.get("name").map(String::as_str))
            .map_err(fail)?;
    }
    let query = parse_query(route, parts.uri.query()).map_err(fail)?;
    let body = if route.body.is_some() {
        read_body(&parts.headers, body).await.map_err(fail)?
    } else {
        Bytes::new()
    };
    let call = Call {
        api,
        caller: caller.clone(),
        route,
        path,
        query,
        body,
    };
    let outcome = match &route.handler {
        Handler::Blocking(f) => {
            let f = *f;
            tokio::task::spawn_blocking(move || f(&call)).await
        }
        Handler::Async(f) => {
            let task = tokio::spawn(f(call));
            // A caller that goes away (a closed connection) takes its task with it.
            let _abort = AbortOnDrop(task.abort_handle());
            task.await
        }
        Handler::Http => unreachable!("http routes are not mounted here"),
    };
    match outcome {
        Ok(Ok(reply)) => Ok((reply, caller)),
        Ok(Err(e)) => Err(fail(e)),
        Err(join) => Err(fail(ApiError::internal(
            &format!("{} {} failed", route.method.as_str(), route.path),
            join,
        ))),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The query string, against the route's declared parameters: unknown or repeated names are
/// refused, and each value passes its parameter's check.
fn parse_query(route: &Route, query: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(out);
    };
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(query)?;
    for (key, value) in pairs {
        let Some(param) = route.query_params().find(|p| p.name == key) else {
            let known: Vec<&str> = route.query_params().map(|p| p.name).collect();
            let shown: String = key.chars().take(40).collect();
            return Err(ApiError::bad_request(
                "bad_query",
                if known.is_empty() {
                    format!("unknown query parameter `{shown}`: this route takes none")
                } else {
                    format!(
                        "unknown query parameter `{shown}`: this route takes {}",
                        known.join(", ")
                    )
                },
            ));
        };
        if out.contains_key(param.name) {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("query parameter `{}` is given twice", param.name),
            ));
        }
        (param.check)(&value).map_err(|msg| ApiError::bad_request("bad_query", msg))?;
        out.insert(key, value);
    }
    Ok(out)
}

fn serde_urlencoded_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    use axum::extract::Query;
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| ApiError::bad_request("bad_query", "the query string is malformed"))?;
    Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs)
        .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))
}

/// Reads at most [`MAX_API_BODY_BYTES`]; more is `413`, whether the length was announced or not.
async fn read_body(headers: &axum::http::HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {} KiB", MAX_API_BODY_BYTES / 1024),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_API_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, MAX_API_BODY_BYTES).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if over {
                Err(too_large())
            } else {
                Err(ApiError::bad_request(
                    "bad_body",
                    format!("the body could not be read: {e}"),
                ))
            }
        }
    }
}

/// The JSON of a value that serializes; kai's own types always do.
pub fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "unserializable": e.to_string() }))
}
