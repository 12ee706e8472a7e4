//! Routes and handlers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::index::{Filter, Request, Row, Status};
use super::live::{self, LiveEvent};
use super::{ApiError, App, Caller, Code, metrics, openapi};
use crate::config::Role;
use crate::digest::Digest;
use crate::run::{self, RunId, RunSummary};

type Shared = State<Arc<App>>;
type ApiResult = Result<Response, ApiError>;

/// The service's routes, registered from [`openapi::ROUTES`] so the
/// document and the router cannot disagree.
pub fn router(app: Arc<App>) -> Router {
    let mut paths: BTreeMap<&str, MethodRouter<Arc<App>>> = BTreeMap::new();
    for route in openapi::ROUTES {
        let handler = handler(route.method, route.path);
        let merged = match paths.remove(route.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        paths.insert(route.path, merged);
    }
    let mut router = Router::new()
        .route("/", get(index_html))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css));
    for (path, methods) in paths {
        router = router.route(path, methods);
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            super::auth_guard,
        ))
        .with_state(app)
}

/// The handler of one documented operation.
fn handler(method: &str, path: &str) -> MethodRouter<Arc<App>> {
    match (method, path) {
        ("get", "/healthz") => get(healthz),
        ("get", "/metrics") => get(prometheus),
        ("get", "/v1/openapi.json") => get(openapi_json),
        ("get", "/v1/whoami") => get(whoami),
        ("get", "/v1/runs") => get(list_runs),
        ("post", "/v1/runs") => post(submit_run),
        ("get", "/v1/runs/{id}") => get(get_run),
        ("post", "/v1/runs/{id}/cancel") => post(cancel_run),
        ("get", "/v1/runs/{id}/events") => get(run_events),
        ("get", "/v1/runs/{id}/logs/{step}") => get(step_logs),
        ("post", "/v1/runs/{id}/replay") => post(replay_run),
        ("get", "/v1/runs/{id}/verify") => get(verify_run),
        ("get", "/v1/runs/{id}/provenance") => get(provenance),
        ("put", "/v1/components") => put(upload_component),
        ("get", "/v1/artifacts/{digest}") => get(artifact),
        ("get", "/v1/artifacts/{digest}/lineage") => get(artifact_lineage),
        ("post", "/v1/hooks/git") => post(git_hook),
        ("get", "/v1/admin/tokens") => get(admin_tokens),
        _ => panic!("no handler for documented route {method} {path}"),
    }
}

async fn no_route() -> ApiError {
    ApiError::new(Code::NoRoute, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        "this route does not take that method",
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index_html() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn app_js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

async fn healthz(State(app): Shared) -> Response {
    let status = if app.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        "stopping"
    } else {
        "ok"
    };
    axum::Json(json!({"status": status, "version": env!("CARGO_PKG_VERSION")})).into_response()
}

async fn prometheus(State(app): Shared, headers: HeaderMap) -> ApiResult {
    app.caller(&headers, Role::Viewer)?;
    let text = blocking(move || Ok(metrics::render(&app))).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

async fn openapi_json() -> Response {
    axum::Json(openapi::document()).into_response()
}

async fn whoami(State(app): Shared, headers: HeaderMap) -> ApiResult {
    let c = app.caller(&headers, Role::Viewer)?;
    Ok(axum::Json(json!({
        "tenant": c.tenant,
        "role": c.role,
        "auth": !app.config.tokens.is_empty(),
    }))
    .into_response())
}

/// Runs `f` on the blocking pool (SQLite and file reads).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Reads a body of at most `max_body_bytes`.
async fn read_body(app: &App, body: Body) -> Result<Bytes, ApiError> {
    read_body_limited(app, body, app.config.server.max_body_bytes).await
}

/// Reads a body of at most `limit` bytes, within `body_read_timeout_ms`
/// in all and with no gap longer than `body_idle_timeout_ms`. Every handler
/// that reads a body reads it here, so no route waits on a slow client
/// without bound; on a timeout the unread rest makes hyper close the
/// connection after the `408`.
async fn read_body_limited(app: &App, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let total_ms = app.config.server.body_read_timeout_ms;
    let idle_ms = app.config.server.body_idle_timeout_ms;
    let too_large = || {
        ApiError::new(
            Code::TooLarge,
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    // Refuse a declared oversize body before reading any of it.
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(total_ms);
    let idle = std::time::Duration::from_millis(idle_ms);
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    loop {
        let until = deadline.min(tokio::time::Instant::now() + idle);
        let next = match tokio::time::timeout_at(until, stream.next()).await {
            Ok(next) => next,
            Err(_) if until == deadline => {
                return Err(ApiError::new(
                    Code::Timeout,
                    format!("the request body did not arrive within {total_ms} ms"),
                ));
            }
            Err(_) => {
                return Err(ApiError::new(
                    Code::Timeout,
                    format!("no request body bytes arrived for {idle_ms} ms"),
                ));
            }
        };
        match next {
            None => return Ok(Bytes::from(bytes)),
            Some(Err(e)) => {
                return Err(ApiError::new(
                    Code::BadRequest,
                    format!("reading the request body: {e}"),
                ));
            }
            Some(Ok(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
        }
    }
}

/// Reads query parameters into `T`, whose unknown fields are denied.
fn parse_query<T: serde::de::DeserializeOwned>(
    query: BTreeMap<String, String>,
) -> Result<T, ApiError> {
    serde_json::from_value(json!(query))
        .map_err(|e| ApiError::new(Code::UnknownField, format!("query: {e}")))
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("unknown field") {
            ApiError::new(Code::UnknownField, message)
        } else {
            ApiError::new(Code::BadRequest, format!("invalid JSON: {message}"))
        }
    })
}

/// Loads run `id` for `caller`: another tenant's run is "not found".
fn owned_row(app: &App, caller: &Caller, id: &str) -> Result<Row, ApiError> {
    match app.index.get(id).map_err(ApiError::internal)? {
        Some(row) if row.tenant == caller.tenant => Ok(row),
        _ => Err(ApiError::not_found("run", id)),
    }
}

/// A finished run's summary. Summaries never change once written, so they
/// are kept in a small in-memory cache.
fn summary_of(app: &App, row: &Row) -> Option<Arc<RunSummary>> {
    if !row.status.is_terminal() {
        return None;
    }
    if let Some(s) = app
        .summaries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&row.id)
    {
        return Some(s.clone());
    }
    let id: RunId = row.id.parse().ok()?;
    let summary = Arc::new(run::load_summary(&app.home, &id).ok()?);
    let mut cache = app.summaries.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= SUMMARY_CACHE_MAX {
        cache.clear();
    }
    cache.insert(row.id.clone(), summary.clone());
    Some(summary)
}

/// Summaries kept in memory at most (the cache is emptied when full).
const SUMMARY_CACHE_MAX: usize = 512;

/// The list entry of a run.
fn brief(row: &Row, steps: &[(String, &'static str)]) -> Value {
    let count = |pred: &dyn Fn(&str) -> bool| steps.iter().filter(|(_, s)| pred(s)).count();
    json!({
        "id": row.id,
        "pipeline": row.pipeline,
        "status": row.status,
        "tenant": row.tenant,
        "trigger": row.trigger,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "wall_ms": row.wall_ms,
        "params": row.params,
        "error": row.error,
        "counts": {
            "total": row.dag.len(),
            "done": count(&|s| !matches!(s, "pending" | "running")),
            "failed": count(&|s| s == "failed"),
            "running": count(&|s| s == "running"),
        },
    })
}

/// Step states of a run: live, from its summary, or pending.
fn step_states(app: &App, row: &Row) -> (Vec<(String, &'static str)>, BTreeMap<String, Value>) {
    let mut details = BTreeMap::new();
    let states = if let Some(live) = live::get(app, &row.id) {
        let steps = live.steps();
        row.dag
            .iter()
            .map(|d| {
                let s = steps.get(&d.name);
                let status = s.map_or("pending", |s| s.status);
                details.insert(
                    d.name.clone(),
                    json!({"attempt": s.map_or(0, |s| s.attempt), "report": s.and_then(|s| s.report.as_ref())}),
                );
                (d.name.clone(), status)
            })
            .collect()
    } else if let Some(summary) = summary_of(app, row) {
        let by_name: BTreeMap<&str, &run::StepReport> =
            summary.steps.iter().map(|s| (s.name.as_str(), s)).collect();
        row.dag
            .iter()
            .map(|d| {
                let report = by_name.get(d.name.as_str());
                details.insert(
                    d.name.clone(),
                    json!({"attempt": report.map_or(0, |r| r.attempts), "report": report}),
                );
                (
                    d.name.clone(),
                    report.map_or("pending", |r| live::step_status(r)),
                )
            })
            .collect()
    } else {
        let fallback = if row.status.is_terminal() {
            "skipped"
        } else {
            "pending"
        };
        row.dag.iter().map(|d| (d.name.clone(), fallback)).collect()
    };
    (states, details)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    pipeline: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list_runs(
    State(app): Shared,
    headers: HeaderMap,
    query: Query<BTreeMap<String, String>>,
) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    let q: ListQuery = parse_query(query.0)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::new(
                Code::BadRequest,
                format!("status {s:?} is not one of queued, running, succeeded, failed, cancelled"),
            )
        })?),
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::new(Code::BadRequest, format!("limit {l:?} is not a number")))?
            .clamp(1, 500),
    };
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::new(Code::BadRequest, format!("cursor {c:?} is not a cursor"))
        })?),
    };
    blocking(move || {
        let rows = app
            .index
            .list(&Filter {
                tenant: Some(&caller.tenant),
                status,
                pipeline: q.pipeline.as_deref().filter(|p| !p.is_empty()),
                before,
                limit: limit + 1,
            })
            .map_err(ApiError::internal)?;
        let more = rows.len() > limit;
        let runs: Vec<Value> = rows
            .iter()
            .take(limit)
            .map(|row| brief(row, &step_states(&app, row).0))
            .collect();
        let next = more.then(|| rows[limit - 1].seq.to_string());
        Ok(axum::Json(json!({"runs": runs, "next_cursor": next})).into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    /// A spec file on the server, relative to its root.
    pipeline: Option<String>,
    /// A spec: TOML text, or a JSON object of the same schema.
    spec: Option<Value>,
    /// Param overrides.
    #[serde(default)]
    params: BTreeMap<String, Value>,
}

fn param_text(name: &str, v: &Value) -> Result<String, ApiError> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("param `{name}` must be a string, number or boolean"),
            ));
        }
    })
}

async fn submit_run(State(app): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let caller = app.caller(&headers, Role::Runner)?;
    let bytes = read_body(&app, body).await?;
    let submit: Submit = parse_json(&bytes)?;
    let params = submit
        .params
        .iter()
        .map(|(k, v)| Ok((k.clone(), param_text(k, v)?)))
        .collect::<Result<BTreeMap<_, _>, ApiError>>()?;
    let request = match (submit.pipeline, submit.spec) {
        (Some(pipeline), None) => Request::Path { pipeline, params },
        (None, Some(Value::String(spec))) => Request::Inline { spec, params },
        (None, Some(obj @ Value::Object(_))) => {
            let spec = toml::to_string(&obj).map_err(|e| {
                ApiError::new(Code::Invalid, format!("spec: cannot express as TOML: {e}"))
            })?;
            Request::Inline { spec, params }
        }
        (None, Some(_)) => {
            return Err(ApiError::new(
                Code::BadRequest,
                "`spec` must be TOML text or a JSON object",
            ));
        }
        _ => {
            return Err(ApiError::new(
                Code::BadRequest,
                "give exactly one of `pipeline` (a spec path on the server) and `spec`",
            ));
        }
    };
    let id = {
        let app = app.clone();
        let handle = tokio::runtime::Handle::current();
        blocking(move || {
            let _guard = handle.enter();
            live::submit(&app, &caller.tenant, request, "api")
        })
        .await?
    };
    let mut response = (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn get_run(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    blocking(move || {
        let row = owned_row(&app, &caller, &id)?;
        let (states, mut details) = step_states(&app, &row);
        let mut out = brief(&row, &states);
        let deps: BTreeMap<&str, &Vec<String>> =
            row.dag.iter().map(|d| (d.name.as_str(), &d.deps)).collect();
        out["steps"] = states
            .iter()
            .map(|(name, status)| {
                let detail = details.remove(name).unwrap_or(Value::Null);
                json!({
                    "name": name,
                    "deps": deps.get(name.as_str()),
                    "status": status,
                    "attempt": detail["attempt"],
                    "report": detail["report"],
                })
            })
            .collect();
        if let Some(summary) = summary_of(&app, &row)
            && !summary.sweep.is_empty()
        {
            out["sweep"] = json!(summary.sweep);
        }
        Ok(axum::Json(out).into_response())
    })
    .await
}

async fn cancel_run(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = app.caller(&headers, Role::Runner)?;
    blocking(move || {
        let row = owned_row(&app, &caller, &id)?;
        match live::get(&app, &id) {
            Some(l) => {
                l.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok((
                    StatusCode::ACCEPTED,
                    axum::Json(json!({"id": id, "status": "cancelling"})),
                )
                    .into_response())
            }
            None => Err(ApiError::new(
                Code::Conflict,
                format!("run `{id}` already ended ({})", row.status.as_str()),
            )),
        }
    })
    .await
}

fn sse_event(e: &LiveEvent) -> SseEvent {
    SseEvent::default()
        .id(e.id.to_string())
        .event(e.kind)
        .data(e.data.to_string())
}

async fn run_events(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(0, |n| n + 1);
    let (row, live) = {
        let app = app.clone();
        blocking(move || {
            let row = owned_row(&app, &caller, &id)?;
            let live = live::get(&app, &id);
            Ok((row, live))
        })
        .await?
    };
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        match live {
            Some(live) => Box::pin(live_stream(live, from)),
            None => {
                let app = app.clone();
                let events = blocking(move || {
                    Ok(match summary_of(&app, &row) {
                        Some(summary) => live::replayed_events(&summary, row.status),
                        None => vec![LiveEvent {
                            id: 0,
                            kind: "end",
                            data: json!({"status": row.status}),
                        }],
                    })
                })
                .await?;
                let events: Vec<_> = events
                    .into_iter()
                    .skip(from)
                    .map(|e| Ok(sse_event(&e)))
                    .collect();
                Box::pin(stream::iter(events))
            }
        };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Streams a live run's events from index `from`, ending after `end`. On
/// shutdown every live run is cancelled, so every stream ends soon after.
fn live_stream(
    live: Arc<live::LiveRun>,
    from: usize,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    stream::unfold((live, from, false), |(live, cursor, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let batch = {
                let changed = live.changed();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let (events, done) = live.events_from(cursor);
                if events.is_empty() {
                    if done {
                        return None;
                    }
                    changed.await;
                    continue;
                }
                events
            };
            let next = cursor + batch.len();
            let ended = batch.iter().any(|e| e.kind == "end");
            let items: Vec<_> = batch.iter().map(|e| Ok(sse_event(e))).collect();
            return Some((stream::iter(items), (live, next, ended)));
        }
    })
    .flatten()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    stream: Option<String>,
}

async fn step_logs(
    State(app): Shared,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    query: Query<BTreeMap<String, String>>,
) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    let q: LogQuery = parse_query(query.0)?;
    let streams: Vec<&str> = match q.stream.as_deref() {
        None | Some("") => vec!["stdout", "stderr"],
        Some(s @ ("stdout" | "stderr")) => vec![if s == "stdout" { "stdout" } else { "stderr" }],
        Some(other) => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("stream {other:?} is not stdout or stderr"),
            ));
        }
    };
    blocking(move || {
        let row = owned_row(&app, &caller, &id)?;
        if !row.dag.iter().any(|d| d.name == step) {
            return Err(ApiError::not_found("step", &format!("{id}/{step}")));
        }
        let (_, details) = step_states(&app, &row);
        let report = &details
            .get(&step)
            .map_or(Value::Null, |d| d["report"].clone());
        let store = &app.store;
        let mut text = String::new();
        for s in streams {
            let Some(digest) = report[s].as_str().and_then(|d| d.parse::<Digest>().ok()) else {
                continue;
            };
            let bytes = store.read_bytes(&digest).map_err(ApiError::internal)?;
            text.push_str(&crate::quoting::escape_controls(
                &String::from_utf8_lossy(&bytes),
                1 << 20,
            ));
        }
        Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
    })
    .await
}

fn run_id(id: &str) -> Result<RunId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("run", id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    rerun_gpu: Option<String>,
}

async fn replay_run(
    State(app): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Query<BTreeMap<String, String>>,
) -> ApiResult {
    let caller = app.caller(&headers, Role::Runner)?;
    let q: ReplayQuery = parse_query(query.0)?;
    let gpu_mode = match q.rerun_gpu.as_deref() {
        None | Some("" | "false") => crate::replay::GpuReplay::Recorded,
        Some("true") => crate::replay::GpuReplay::Rerun(app.gpu.clone()),
        Some(other) => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("rerun_gpu {other:?} is not true or false"),
            ));
        }
    };
    blocking(move || {
        let row = owned_row(&app, &caller, &id)?;
        if !row.status.is_terminal() {
            return Err(ApiError::new(
                Code::Conflict,
                format!("run `{id}` has not finished"),
            ));
        }
        // A replay executes steps like a run, so it takes a run slot and
        // one step slot. It answers in the response, so it does not queue
        // behind runs (an open request per waiting replay): with every run
        // slot taken it is refused. It runs its steps one at a time on its
        // one step slot, waiting for that slot like any attempt.
        let _run_slot = app.run_slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                Code::Busy,
                format!(
                    "all {} run slots are taken; replay run `{id}` later",
                    app.config.server.max_concurrent_runs
                ),
            )
        })?;
        let Some(_step_slot) = app
            .step_slots
            .hold(&|| app.shutting_down.load(std::sync::atomic::Ordering::SeqCst))
        else {
            return Err(ApiError::new(
                Code::Unavailable,
                "the server is shutting down",
            ));
        };
        let report = crate::replay::replay(
            &app.home,
            &run_id(&id)?,
            1,
            app.compile_cache.clone(),
            gpu_mode,
            app.store.remote().cloned(),
        )
        .map_err(|e| ApiError::new(Code::Conflict, e.to_string()))?;
        Ok(axum::Json(report).into_response())
    })
    .await
}

async fn verify_run(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    blocking(move || {
        owned_row(&app, &caller, &id)?;
        let report = crate::verify::verify(&app.home, &run_id(&id)?, None)
            .map_err(|e| ApiError::new(Code::Conflict, e.to_string()))?;
        Ok(axum::Json(report).into_response())
    })
    .await
}

async fn provenance(State(app): Shared, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    blocking(move || {
        owned_row(&app, &caller, &id)?;
        let path = app.home.join("runs").join(&id).join(run::PROVENANCE_FILE);
        let bytes = std::fs::read(&path).map_err(|_| {
            ApiError::new(Code::Conflict, format!("run `{id}` has no provenance yet"))
        })?;
        Ok((
            [(
                header::CONTENT_TYPE,
                "application/vnd.dsse.envelope.v1+json",
            )],
            bytes,
        )
            .into_response())
    })
    .await
}

async fn upload_component(State(app): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let caller = app.caller(&headers, Role::Runner)?;
    // Held while the body is read and the component compiled: compiling is
    // the heavy part, and parallel uploads must not starve runs.
    let permit = app.uploads.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            Code::Busy,
            format!(
                "{} component uploads are in progress, the most this server takes at once; retry later",
                app.config.server.max_concurrent_uploads
            ),
        )
    })?;
    let bytes = read_body(&app, body).await?;
    blocking(move || {
        let _permit = permit;
        let digest = Digest::of(&bytes);
        let sandbox = app.sandbox()?;
        sandbox
            .prepare(std::path::Path::new("upload.wasm"), &bytes, &digest)
            .map_err(|e| {
                ApiError::new(
                    Code::Invalid,
                    format!("not a sluice:step component: {}", e.reason),
                )
            })?;
        let store = &app.store;
        let (stored, size) = store.put_bytes(&bytes).map_err(ApiError::internal)?;
        store.sync().map_err(ApiError::internal)?;
        app.index
            .grant(&caller.tenant, "component", &[stored.to_string()])
            .map_err(ApiError::internal)?;
        Ok((
            StatusCode::CREATED,
            axum::Json(json!({"digest": stored, "size": size})),
        )
            .into_response())
    })
    .await
}

/// `digest` as an artifact the caller's tenant was granted; anything else
/// (malformed, unknown, another tenant's) is the same `not_found`.
fn granted_artifact(app: &App, caller: &Caller, digest: &str) -> Result<Digest, ApiError> {
    let d: Digest = digest
        .parse()
        .map_err(|_| ApiError::not_found("artifact", digest))?;
    if !app
        .index
        .granted(&caller.tenant, digest, None)
        .map_err(ApiError::internal)?
    {
        return Err(ApiError::not_found("artifact", digest));
    }
    Ok(d)
}

async fn artifact(State(app): Shared, headers: HeaderMap, Path(digest): Path<String>) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    let (file, size) = blocking(move || {
        let d = granted_artifact(&app, &caller, &digest)?;
        let store = &app.store;
        // Verified in full before the first byte is served.
        let file = store.open_verified(&d).map_err(|e| {
            ApiError::new(
                Code::Internal,
                format!("artifact {digest} cannot be served: {e}"),
            )
        })?;
        let size = file.metadata().map_err(ApiError::internal)?.len();
        let max = app.config.server.max_artifact_bytes;
        if size > max {
            return Err(ApiError::new(
                Code::TooLarge,
                format!("artifact {digest} is {size} bytes; this server serves at most {max}"),
            ));
        }
        Ok((file, size))
    })
    .await?;
    let chunks = stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await;
        match read {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, file))) => Some((Ok(Bytes::from(buf)), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// Most runs of a tenant a lineage request reads (newest first).
const LINEAGE_RUNS_MAX: usize = 10_000;

/// An artifact's lineage among the caller's runs: an artifact the tenant
/// was never granted is `not_found`, exactly as one that does not exist.
async fn artifact_lineage(
    State(app): Shared,
    headers: HeaderMap,
    Path(digest): Path<String>,
) -> ApiResult {
    let caller = app.caller(&headers, Role::Viewer)?;
    blocking(move || {
        let d = granted_artifact(&app, &caller, &digest)?;
        let rows = app
            .index
            .list(&Filter {
                tenant: Some(&caller.tenant),
                status: None,
                pipeline: None,
                before: None,
                limit: LINEAGE_RUNS_MAX,
            })
            .map_err(ApiError::internal)?;
        let runs: Vec<RunId> = rows.iter().filter_map(|r| r.id.parse().ok()).collect();
        let (facts, skipped) = app.lineage.facts(&app.home, &runs);
        Ok(axum::Json(crate::lineage::lineage(&d, &facts, skipped)).into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookQuery {
    hook: Option<String>,
}

/// `POST /v1/hooks/git`: unauthenticated by token, authenticated by the
/// hook's HMAC. Everything checkable without the body (hook name, signature
/// and delivery headers, declared length) is checked before a byte of it
/// is read, and the body is capped at [`crate::hook::BODY_BYTES_MAX`].
async fn git_hook(
    State(app): Shared,
    axum::Extension(peer): axum::Extension<super::Peer>,
    headers: HeaderMap,
    query: Query<BTreeMap<String, String>>,
    body: Body,
) -> ApiResult {
    let q: HookQuery = parse_query(query.0)?;
    // Per sender address, so junk from one client cannot use up the
    // budget of the real git server.
    app.rate_limit(&format!("hooks:{}", peer.0))?;
    let hook = match q.hook {
        Some(name) => app
            .hooks
            .get(&name)
            .ok_or_else(|| ApiError::not_found("hook", &name))?,
        None if app.hooks.len() == 1 => app.hooks.values().next().expect("one hook"),
        None if app.hooks.is_empty() => {
            return Err(ApiError::new(
                Code::NotFound,
                "no hooks are configured on this server",
            ));
        }
        None => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!(
                    "name the hook with ?hook=NAME (configured: {})",
                    app.hooks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    .clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = header("x-hub-signature-256");
    // The shape of the signature, before reading: the HMAC itself needs
    // the body.
    let well_formed = signature.as_deref().is_some_and(|s| {
        s.trim()
            .strip_prefix("sha256=")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if !well_formed {
        return Err(ApiError::new(
            Code::Unauthorized,
            format!(
                "hook `{}`: {}",
                hook.name,
                if signature.is_none() {
                    "no X-Hub-Signature-256 header"
                } else {
                    "signature must be `sha256=<64 hex digits>`"
                }
            ),
        ));
    }
    let delivery = header("x-github-delivery")
        .or_else(|| header("x-gitea-delivery"))
        .ok_or_else(|| {
            ApiError::new(
                Code::BadRequest,
                "missing X-GitHub-Delivery or X-Gitea-Delivery header",
            )
        })?;
    crate::hook::check_delivery(&hook, &delivery)
        .map_err(|e| ApiError::new(Code::BadRequest, e.to_string()))?;
    let bytes = read_body_limited(&app, body, crate::hook::BODY_BYTES_MAX).await?;
    let handle = tokio::runtime::Handle::current();
    blocking(move || {
        use crate::hook::{Decision, HookError};
        let decision =
            crate::hook::handle(&app.home, &hook, &bytes, signature.as_deref(), &delivery)
                .map_err(|e| match e {
                    HookError::Unauthorized { .. } => {
                        ApiError::new(Code::Unauthorized, e.to_string())
                    }
                    HookError::Io { .. } => ApiError::internal(e),
                    HookError::BadPayload { .. } => ApiError::new(Code::BadRequest, e.to_string()),
                })?;
        match decision {
            Decision::Run { push, param } => {
                let _guard = handle.enter();
                let request = Request::Path {
                    pipeline: hook.pipeline.display().to_string(),
                    params: BTreeMap::from([param]),
                };
                let id = live::submit(&app, &hook.tenant, request, &format!("hook:{}", hook.name))?;
                Ok((
                    StatusCode::CREATED,
                    axum::Json(json!({"id": id, "commit": push.commit, "branch": push.branch})),
                )
                    .into_response())
            }
            Decision::Duplicate { first_delivery } => Err(ApiError::new(
                Code::Conflict,
                format!(
                    "hook `{}`: this signed payload was already delivered (first as `{first_delivery}`); a repeated payload starts no run, whatever its delivery id",
                    hook.name
                ),
            )),
            Decision::Ignored(reason) => {
                Ok((StatusCode::ACCEPTED, axum::Json(json!({"ignored": reason}))).into_response())
            }
        }
    })
    .await
}

async fn admin_tokens(State(app): Shared, headers: HeaderMap) -> ApiResult {
    app.caller(&headers, Role::Admin)?;
    let tokens: Vec<Value> = app
        .config
        .tokens
        .iter()
        .map(|t| json!({"label": t.label, "tenant": t.tenant, "role": t.role}))
        .collect();
    Ok(axum::Json(json!({"tokens": tokens})).into_response())
}
