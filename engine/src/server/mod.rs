//! `sluice serve`: the engine as an HTTP service — REST + JSON under
//! `/v1`, server-sent events, Prometheus `/metrics`, git-push hooks, cron
//! schedules and the embedded dashboard.
//!
//! Invariants:
//! - Every run, component upload and artifact belongs to one tenant; any id
//!   of another tenant answers `404` on every route, exactly as an unknown id.
//! - A run is acknowledged only once its index row is durable; after a
//!   crash, unfinished runs resume (finished steps are cache hits) or are
//!   marked failed with the reason.
//! - Errors have one shape, `{"error": {"code", "message"}}`, with the
//!   stable codes of [`Code`].
//! - No client holds the service without bound: the request head has
//!   `header_read_timeout_ms`, every body read has a total and an idle
//!   timeout (`api::read_body_limited`), one client IP holds at most
//!   `max_connections_per_peer` connections and gets at most
//!   `auth_failures_per_minute` 401s, and `/healthz` needs nothing but a
//!   free connection.
//!
//! Boundary: HTTP and tenancy live here; runs execute through
//! [`crate::run`] on blocking threads, one per run.

mod api;
mod index;
mod live;
mod metrics;
mod openapi;
mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::{Config, Role};
use crate::run::StepSlots;

pub use index::Status;
pub use openapi::ROUTES;

/// Stable error codes of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 400: malformed request (bad JSON, bad UTF-8, bad parameter).
    BadRequest,
    /// 400: a JSON field the endpoint does not know.
    UnknownField,
    /// 401: no token or an unknown token.
    Unauthorized,
    /// 403: the token's role does not allow this.
    Forbidden,
    /// 404: no such resource for this tenant.
    NotFound,
    /// 404: no such route.
    NoRoute,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 409: the resource is not in a state for this.
    Conflict,
    /// 413: the body or artifact is over the limit.
    TooLarge,
    /// 422: the spec or component is invalid.
    Invalid,
    /// 403: a path outside the operator's allowed directories.
    PathNotAllowed,
    /// 408: the request body did not arrive in time.
    Timeout,
    /// 429: over the token's rate limit, the per-address failed
    /// authentication limit or the per-address connection cap.
    RateLimited,
    /// 503: every slot for this kind of work is taken; retry later.
    Busy,
    /// 500: the server failed.
    Internal,
    /// 503: shutting down.
    Unavailable,
}

impl Code {
    /// The code's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::UnknownField => "unknown_field",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::NoRoute => "no_route",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::TooLarge => "too_large",
            Code::Invalid => "invalid",
            Code::PathNotAllowed => "path_not_allowed",
            Code::Timeout => "timeout",
            Code::RateLimited => "rate_limited",
            Code::Busy => "busy",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BadRequest | Code::UnknownField => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden | Code::PathNotAllowed => StatusCode::FORBIDDEN,
            Code::NotFound | Code::NoRoute => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Timeout => StatusCode::REQUEST_TIMEOUT,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An API error: rendered as `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
    /// `Retry-After` seconds of a `429`/`503` (1 when not set).
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds.max(1));
        self
    }

    fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::new(
            Code::NotFound,
            format!("no {what} `{}`", crate::quoting::escape_controls(id, 100)),
        )
    }

    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(Code::Internal, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.code.status(),
            axum::Json(json!({"error": {"code": self.code.as_str(), "message": self.message}})),
        )
            .into_response();
        if matches!(self.code, Code::RateLimited | Code::Busy) {
            response.headers_mut().insert(
                "retry-after",
                axum::http::HeaderValue::from(self.retry_after_s.unwrap_or(1)),
            );
        }
        if self.code == Code::Unauthorized {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        response
    }
}

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Their tenant.
    pub tenant: String,
    /// Their role.
    pub role: Role,
    /// Rate-limit key: the token's label, or `anonymous`.
    key: String,
}

/// `sluice serve` settings from the command line.
#[derive(Debug)]
pub struct ServeArgs {
    /// Overrides `[server] listen`.
    pub listen: Option<String>,
    /// The engine home.
    pub home: PathBuf,
    /// The config file.
    pub config: Option<PathBuf>,
    /// Shared compile cache.
    pub compile_cache: Option<PathBuf>,
}

/// The service's shared state.
pub struct App {
    home: PathBuf,
    root: PathBuf,
    /// Where specs, sources and components may come from: inside
    /// `allow_paths`, never in the home or the config file.
    policy: crate::policy::PathPolicy,
    config: Config,
    hooks: BTreeMap<String, crate::hook::Hook>,
    index: index::Index,
    live: Mutex<HashMap<String, Arc<live::LiveRun>>>,
    run_slots: Arc<tokio::sync::Semaphore>,
    step_slots: Arc<StepSlots>,
    queued: AtomicUsize,
    active: AtomicUsize,
    idle: tokio::sync::Notify,
    metrics: metrics::Metrics,
    rate: Mutex<HashMap<String, (f64, Instant)>>,
    shutting_down: AtomicBool,
    shutdown: tokio::sync::watch::Sender<bool>,
    compile_cache: Option<PathBuf>,
    sandbox: std::sync::OnceLock<Result<crate::sandbox::Sandbox, String>>,
    /// One warm worker pool for every run the service executes.
    gpu: Arc<crate::gpu::Dispatcher>,
    /// The home's store, opened once (reads, uploads).
    store: crate::store::Store,
    /// Summaries of finished runs by id (they never change).
    summaries: Mutex<HashMap<String, Arc<crate::run::RunSummary>>>,
    /// Finished runs' lineage facts, read once each.
    lineage: crate::lineage::FactsCache,
    /// Failed authentications per client address.
    auth_failures: AuthFailures,
    /// Component uploads being read or compiled (`max_concurrent_uploads`).
    uploads: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Authenticates `headers` and checks `role`, then the rate limit.
    fn caller(&self, headers: &HeaderMap, role: Role) -> Result<Caller, ApiError> {
        let caller = if self.config.tokens.is_empty() {
            Caller {
                tenant: "default".to_string(),
                role: Role::Admin,
                key: "anonymous".to_string(),
            }
        } else {
            let value = headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or_else(|| ApiError::new(Code::Unauthorized, "missing bearer token"))?;
            let presented = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    ApiError::new(
                        Code::Unauthorized,
                        "the Authorization header must be `Bearer <token>`",
                    )
                })?;
            // Compare against every token in constant time per token.
            let mut found = None;
            for t in &self.config.tokens {
                if constant_time_eq(t.secret.as_bytes(), presented.as_bytes()) {
                    found = Some(t);
                }
            }
            let t = found.ok_or_else(|| ApiError::new(Code::Unauthorized, "unknown token"))?;
            Caller {
                tenant: t.tenant.clone(),
                role: t.role,
                key: t.label.clone(),
            }
        };
        if caller.role < role {
            return Err(ApiError::new(
                Code::Forbidden,
                format!(
                    "this needs the `{}` role; the token has `{}`",
                    role.as_str(),
                    caller.role.as_str()
                ),
            ));
        }
        self.rate_limit(&caller.key)?;
        Ok(caller)
    }

    /// A token bucket per caller key (a token's label, `anonymous`, or
    /// `hooks:<client IP>`): `rate_limit_per_minute` capacity, refilled
    /// continuously.
    fn rate_limit(&self, key: &str) -> Result<(), ApiError> {
        let per_minute = f64::from(self.config.server.rate_limit_per_minute);
        if per_minute <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        // Hook senders are keyed by address: forget recovered buckets
        // before the map outgrows the per-address bound.
        if rate.len() >= TRACKED_PEERS_MAX && !rate.contains_key(key) {
            rate.retain(|_, (t, at)| {
                *t + now.duration_since(*at).as_secs_f64() * per_minute / 60.0 < per_minute
            });
            if rate.len() >= TRACKED_PEERS_MAX {
                rate.clear();
            }
        }
        let (tokens, at) = rate.entry(key.to_string()).or_insert((per_minute, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * per_minute / 60.0).min(per_minute);
        *at = now;
        if *tokens < 1.0 {
            self.metrics.request_rate_limited();
            return Err(ApiError::new(
                Code::RateLimited,
                format!(
                    "over the limit of {} requests per minute",
                    self.config.server.rate_limit_per_minute
                ),
            ));
        }
        *tokens -= 1.0;
        Ok(())
    }

    fn sandbox(&self) -> Result<&crate::sandbox::Sandbox, ApiError> {
        self.sandbox
            .get_or_init(|| {
                let cache = self
                    .compile_cache
                    .clone()
                    .unwrap_or_else(|| self.home.join("components"));
                crate::sandbox::Sandbox::new(&cache, 1).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| ApiError::new(Code::Internal, e.clone()))
    }

    /// `path` relative to the root for messages, so they do not reveal the
    /// server's layout.
    fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// The client address of a request, inserted by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// Addresses tracked at most by the per-address limits; past it, entries
/// that have recovered are forgotten first, then all (a flood from that
/// many addresses is beyond what a per-address limit can answer anyway).
const TRACKED_PEERS_MAX: usize = 4096;

/// A token bucket of failed authentications per client address: capacity
/// `auth_failures_per_minute`, refilled continuously. A request is refused
/// while its address's bucket is empty; every `401` takes one token.
#[derive(Debug)]
struct AuthFailures {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl AuthFailures {
    fn new(per_minute: u32) -> AuthFailures {
        AuthFailures {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut (f64, Instant), now: Instant) {
        bucket.0 = (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * self.per_minute / 60.0)
            .min(self.per_minute);
        bucket.1 = now;
    }

    /// `Err` (429) while `peer` has no failures left.
    fn check(&self, peer: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets.get_mut(&peer) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.0 >= 1.0 {
            return Ok(());
        }
        let wait_s = ((1.0 - bucket.0) * 60.0 / self.per_minute).ceil() as u64;
        Err(ApiError::new(
            Code::RateLimited,
            format!(
                "too many failed authentications from {peer}: at most {} per minute",
                self.per_minute
            ),
        )
        .retry_after(wait_s))
    }

    /// Takes one token from `peer`'s bucket.
    fn failed(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TRACKED_PEERS_MAX && !buckets.contains_key(&peer) {
            let full = self.per_minute;
            buckets.retain(|_, b| b.0 + now.duration_since(b.1).as_secs_f64() * full / 60.0 < full);
            if buckets.len() >= TRACKED_PEERS_MAX {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(peer).or_insert((self.per_minute, now));
        self.refill(bucket, now);
        bucket.0 -= 1.0;
    }
}

/// Middleware on every route: refuses a client address that used up its
/// failed authentications, and counts each `401` it gets. Tokens are
/// checked in the handlers; this only sees the outcome.
async fn auth_guard(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    if let Some(ip) = peer
        && let Err(e) = app.auth_failures.check(ip)
    {
        app.metrics.request_rate_limited();
        return e.into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED
        && let Some(ip) = peer
    {
        app.auth_failures.failed(ip);
    }
    response
}

/// Open connections per client address, capped at `max`.
#[derive(Debug)]
struct PeerConnections {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a peer; dropping it frees the place.
struct PeerSlot {
    peers: Arc<PeerConnections>,
    ip: IpAddr,
}

impl PeerConnections {
    /// A place for one more connection of `ip`, or `None` at the cap.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Answers a connection over the per-address cap with `429` and closes it,
/// without reading from it. Best effort: a full socket buffer just closes.
fn refuse_connection(stream: &tokio::net::TcpStream, ip: IpAddr, max: usize) {
    let body = json!({"error": {
        "code": Code::RateLimited.as_str(),
        "message": format!("too many connections from {ip}: at most {max} per address"),
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use hmac::Mac;
    // HMAC both under a fixed key and compare the tags with `verify_slice`,
    // which is constant time: lengths leak nothing either.
    let tag = |bytes: &[u8]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"sluice-token-compare")
            .expect("any key length");
        m.update(bytes);
        m
    };
    let expected = tag(a).finalize().into_bytes();
    tag(b).verify_slice(&expected).is_ok()
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Runs the service until SIGTERM or ctrl-c.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), &args.home)?;
    let remote = crate::config::open_remote(config.store.as_deref())?;
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| config.server.listen.clone());
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&listen)
        .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| anyhow::anyhow!("--listen {listen}: no address"))?;
    if config.tokens.is_empty() && !is_loopback(&addr) {
        anyhow::bail!(
            "refusing to listen on {addr} without tokens: configure [[tokens]] in the config file, or listen on a loopback address"
        );
    }
    std::fs::create_dir_all(args.home.join("server"))?;
    let hooks = config.hooks.clone();
    let root = match &config.server.root {
        Some(r) => r.clone(),
        None => std::env::current_dir()?,
    }
    .canonicalize()?;
    let allowed: Vec<PathBuf> = config
        .server
        .allow_paths
        .iter()
        .map(|p| root.join(p))
        .collect();
    // Even with `allow_paths = ["."]` and the home under the root, the home
    // and the config file stay unreadable (the policy excludes them).
    let mut policy =
        crate::policy::PathPolicy::confined(&args.home, config.path.as_deref(), &allowed);
    if let Some(cache) = &args.compile_cache {
        // The compile cache's tag key is a secret even outside the home.
        policy = policy.also_private(&crate::sandbox::compile_cache_key_path(cache));
    }
    for warning in &config.warnings {
        eprintln!("sluice: warning: {warning}");
    }
    let index = index::Index::open(&args.home.join("server").join("index.sqlite"))?;
    let workers = config.workers.clone();
    let gpu = Arc::new(crate::gpu::Dispatcher::new(
        workers,
        args.home.join("scratch").join("gpu"),
    ));
    let (shutdown, _) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        run_slots: Arc::new(tokio::sync::Semaphore::new(
            config.server.max_concurrent_runs,
        )),
        step_slots: Arc::new(StepSlots::new(config.server.max_running_steps)),
        home: args.home.clone(),
        root,
        policy,
        hooks,
        index,
        live: Mutex::new(HashMap::new()),
        queued: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        idle: tokio::sync::Notify::new(),
        metrics: metrics::Metrics::default(),
        rate: Mutex::new(HashMap::new()),
        shutting_down: AtomicBool::new(false),
        shutdown,
        compile_cache: args.compile_cache.clone(),
        sandbox: std::sync::OnceLock::new(),
        gpu,
        store: crate::store::Store::open_with(&args.home, remote.clone())?,
        summaries: Mutex::new(HashMap::new()),
        lineage: crate::lineage::FactsCache::default(),
        auth_failures: AuthFailures::new(config.server.auth_failures_per_minute),
        uploads: Arc::new(tokio::sync::Semaphore::new(
            config.server.max_concurrent_uploads,
        )),
        config,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{local}")?;
            out.flush()?;
        }
        if app.config.tokens.is_empty() {
            eprintln!(
                "sluice: no tokens configured: serving loopback only, without authentication (tenant `default`)"
            );
        }
        live::recover(&app);
        schedule::start(&app);
        let router = api::router(app.clone());
        accept_loop(listener, router, &app).await;
        live::wait_idle(&app).await;
        eprintln!("sluice: stopped");
        anyhow::Ok(())
    })
}

/// Serves connections until a shutdown signal, then drains them. Each
/// connection must send its request head within `header_read_timeout_ms`
/// (slow clients are dropped); at most `max_connections` are open at once,
/// at most `max_connections_per_peer` of them from one address (one more is
/// answered `429` and closed). Body reads are bounded in the handlers
/// (`api::read_body`). Every request carries its client's [`Peer`].
async fn accept_loop(listener: tokio::net::TcpListener, router: axum::Router, app: &Arc<App>) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(
        app.config.server.max_connections,
    ));
    let peers = Arc::new(PeerConnections {
        max: app.config.server.max_connections_per_peer,
        open: Mutex::new(HashMap::new()),
    });
    let header_timeout = std::time::Duration::from_millis(app.config.server.header_read_timeout_ms);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut signal => break,
        };
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let ip = addr.ip();
        let Some(peer_slot) = peers.enter(ip) else {
            refuse_connection(&stream, ip, peers.max);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let inner = hyper_util::service::TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(Peer(ip));
                hyper::service::Service::call(&inner, request)
            },
        );
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(peer_slot);
            drop(permit);
        });
    }
    eprintln!("sluice: shutting down: no new steps start; running steps are stopped");
    app.shutting_down.store(true, Ordering::SeqCst);
    let _ = app.shutdown.send(true);
    live::cancel_all(app);
    graceful.shutdown().await;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abcdefabcdefabcd", b"abcdefabcdefabcd"));
        assert!(!constant_time_eq(b"abcdefabcdefabcd", b"abcdefabcdefabce"));
        assert!(!constant_time_eq(b"abcdefabcdefabcd", b"abcdef"));
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(Code::UnknownField.as_str(), "unknown_field");
        assert_eq!(Code::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(Code::NotFound.status(), StatusCode::NOT_FOUND);
    }
}
