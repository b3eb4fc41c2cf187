//! The service's HTTP server (axum on a small tokio runtime of its own, beside the stage threads;
//! 127.0.0.1 unless configured otherwise): the console, its JSON API (`api`, `live`) and the
//! operational endpoints. One port for all: the console is a client of the same API as any other
//! program, and one listener is one thing to secure, proxy and document.
//!
//! | path | answer | who |
//! |---|---|---|
//! | `/healthz` | 200 `ok`, or 503 naming stalled stages and failed outputs | anyone |
//! | `/readyz` | 200 once every pipeline file has been started and none is rejected or failed; 503 before, while stopping, and naming the rejected or failed | anyone |
//! | `/`, `/assets/*`, `/api/openapi.json`, `POST /api/login` | the console, the API's description, login | anyone |
//! | `/metrics` | Prometheus text format (see `prom`) | viewer (anyone with `--metrics-public`) |
//! | `/pipelines` | JSON: each pipeline file, its state, config hash, sources and counters | viewer |
//! | `/events` | JSON array of the most recent zone and line events (`?n=100`, at most 1000) | viewer |
//! | `/events/stream`, `/api/events/stream` | server-sent events: each event as it happens (`id`, `event: KIND`, `data: JSON`) | viewer |
//! | `/api/*` | see `api` and `console/openapi.json` | viewer; changes: admin |

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::auth::{Caller, Role};
use super::{PipelineState, ServeError, Service};
use crate::runtime::metrics::{OUTPUT_STAGE_PREFIX, PipelineMetrics, StageState, lock};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vigil_session";

/// The running HTTP server; `stop` ends it.
pub struct HttpServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How long `stop` waits for open connections to finish.
const STOP_WAIT: Duration = Duration::from_secs(3);

impl HttpServer {
    /// Stop accepting, let answers in progress finish (streams end on the service's `stopping`),
    /// and wait at most [`STOP_WAIT`]: a client that holds a connection never holds up a stop.
    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + STOP_WAIT;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("HTTP connections still open at stop: left behind");
            }
        }
    }
}

pub fn start(service: Arc<Service>, addr: SocketAddr) -> Result<HttpServer, ServeError> {
    let err = |e: std::io::Error| ServeError::Http(addr, e.to_string());
    // bound here, so a taken port is an error of `vigil serve` itself, at once
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .map_err(err)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = router(service);
    let thread = std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("HTTP: {e}"),
                };
                let served = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
                if let Err(e) = served {
                    tracing::error!("HTTP: {e}");
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(500));
        })
        .map_err(err)?;
    tracing::info!(address = %addr, "HTTP: console at /, API under /api, /healthz /readyz /metrics /pipelines /events /events/stream");
    Ok(HttpServer {
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Every route: public ones, then those that need a viewer (changes check for an admin in
/// their handlers, through [`Admin`]).
fn router(service: Arc<Service>) -> Router {
    let public = Router::new()
        .route(
            "/healthz",
            get(|State(s): State<Arc<Service>>| async move { text(healthz(&s)) }),
        )
        .route(
            "/readyz",
            get(|State(s): State<Arc<Service>>| async move { text(readiness(&s)) }),
        )
        .route("/", get(super::console::index))
        .route("/assets/{file}", get(super::console::asset))
        .route("/api/openapi.json", get(super::console::openapi))
        .route("/api/login", post(super::api::login));
    let metrics = Router::new().route("/metrics", get(metrics));
    let metrics = if service.opts.metrics_public {
        metrics
    } else {
        metrics.layer(axum::middleware::from_fn_with_state(
            service.clone(),
            authenticate,
        ))
    };
    let viewer = Router::new()
        .route("/pipelines", get(legacy_pipelines))
        .route("/events", get(recent_events))
        .route("/events/stream", get(stream_events))
        .merge(super::api::routes())
        .merge(super::live::routes())
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            authenticate,
        ));
    public
        .merge(metrics)
        .merge(viewer)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not found: the console is at /, the API under /api (see /api/openapi.json)",
            )
        })
        .with_state(service)
}

/// A JSON error answer: `{"error": message}`.
pub fn error(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

fn text((code, ctype, body): (u16, &'static str, String)) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, ctype)], body).into_response()
}

/// The value of cookie `name`, if the request has it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who calls: a bearer token, else the session cookie (which, on a request that changes
/// anything, must come with the session's CSRF token). 401 without either, 403 on a missing or
/// wrong CSRF token. The caller rides on the request for the handlers.
async fn authenticate(State(s): State<Arc<Service>>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = match bearer {
        Some(token) => s.auth.by_token(token.trim()),
        None => cookie(headers, SESSION_COOKIE).and_then(|id| s.auth.by_session(id)),
    };
    let Some(caller) = caller else {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication required: Authorization: Bearer TOKEN (vigil token create), or log in at /",
        );
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (false, Some(expected)) = (safe, &caller.csrf) {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|t| super::auth::constant_time_eq(t.as_bytes(), expected.as_bytes())) {
            return error(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token");
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A handler's caller that must be an admin (403 for a viewer).
pub struct Admin(pub Caller);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(c) if c.role == Role::Admin => Ok(Self(c.clone())),
            Some(_) => Err(error(
                StatusCode::FORBIDDEN,
                "this needs an admin token; yours is a viewer's",
            )),
            None => Err(error(StatusCode::UNAUTHORIZED, "authentication required")),
        }
    }
}

async fn metrics(State(s): State<Arc<Service>>) -> Response {
    match super::prom::render(&s) {
        Ok(t) => text((200, "text/plain; version=0.0.4; charset=utf-8", t)),
        Err(e) => text((500, "text/plain", format!("{e}\n"))),
    }
}

async fn legacy_pipelines(State(s): State<Arc<Service>>) -> Response {
    axum::Json(status(&s)).into_response()
}

#[derive(serde::Deserialize)]
struct RecentQuery {
    n: Option<usize>,
}

/// `/events?n=N`: the last N events (default 100), oldest first, as a JSON array.
async fn recent_events(State(s): State<Arc<Service>>, Query(q): Query<RecentQuery>) -> Response {
    let lines: Vec<String> = s
        .events
        .recent(q.n.unwrap_or(100))
        .iter()
        .map(|p| p.json.to_string())
        .collect();
    text((
        200,
        "application/json",
        format!("[{}]\n", lines.join(",\n")),
    ))
}

/// How often an idle event stream sends a comment (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Server-sent events until the client goes or the service stops. A client that reads too
/// slowly is dropped by the hub, never waited for; at most `MAX_SUBSCRIBERS` streams.
pub async fn stream_events(State(s): State<Arc<Service>>) -> Response {
    let Some(sub) = s.events.subscribe() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many event streams");
    };
    let stream = futures_util::stream::unfold((sub, s), |(sub, s)| async move {
        loop {
            if s.stopping.load(Ordering::Relaxed) {
                return None;
            }
            match sub.rx.try_recv() {
                Ok(p) => {
                    let msg = sse_message(&p);
                    return Some((Ok::<_, std::convert::Infallible>(msg), (sub, s)));
                }
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
                // the hub's channel cannot wake a task: look again soon
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    axum::response::sse::Sse::new(stream)
        .keep_alive(axum::response::sse::KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// One event as a server-sent event: its id, its kind as the event name, its JSON as data.
fn sse_message(p: &crate::runtime::events::Published) -> axum::response::sse::Event {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    let kind = serde_json::from_str::<Kind>(&p.json).map_or_else(|_| "event".into(), |k| k.kind);
    axum::response::sse::Event::default()
        .id(p.id.to_string())
        .event(kind)
        .data(p.json.as_ref())
}

/// 200 `ok`; 503 naming stalled stages and failed outputs of running pipelines.
fn healthz(service: &Service) -> (u16, &'static str, String) {
    let stuck = service.stuck();
    let failed = service.failed_outputs();
    if stuck.is_empty() && failed.is_empty() {
        return (200, "text/plain", "ok\n".to_string());
    }
    let mut body = String::new();
    for s in stuck {
        body.push_str(&format!("no progress: {s}\n"));
    }
    for f in failed {
        body.push_str(&format!("output failed: {f}\n"));
    }
    (503, "text/plain", body)
}

/// `/readyz`: 200 once every pipeline file was started and each runs (or finished); 503 before,
/// while stopping, and while a file is rejected or its pipeline failed (naming them).
fn readiness(service: &Service) -> (u16, &'static str, String) {
    if !service.ready.load(Ordering::Relaxed) || service.stopping.load(Ordering::Relaxed) {
        return (503, "text/plain", "not ready\n".to_string());
    }
    let down: Vec<String> = lock(&service.entries)
        .values()
        .filter(|e| matches!(e.state, PipelineState::Rejected | PipelineState::Failed))
        .map(|e| {
            let state = if e.state == PipelineState::Rejected {
                "rejected"
            } else {
                "failed"
            };
            format!("{} ({}): {state}", e.name, e.file.display())
        })
        .collect();
    if down.is_empty() {
        (200, "text/plain", "ready\n".to_string())
    } else {
        (
            503,
            "text/plain",
            format!("not ready: {}\n", down.join(", ")),
        )
    }
}

/// `/pipelines`: one object per pipeline file.
#[derive(Debug, Serialize)]
pub struct PipelineStatus {
    pub file: String,
    pub name: String,
    pub state: PipelineState,
    /// SHA-256 of the config file version that is running.
    pub config_sha256: String,
    /// Unix seconds.
    pub started_at: u64,
    pub starts: u64,
    pub error: Option<String>,
    /// Why the newest version of the file was rejected (the previous config keeps running).
    pub reload_error: Option<String>,
    pub model: Option<String>,
    /// The model manifest (absolute where the file gave it so).
    pub model_path: Option<String>,
    /// Written through the API: it may change and delete it.
    pub managed: bool,
    pub sources: Vec<SourceStatus>,
    pub outputs: Vec<OutputStatus>,
}

/// One output of a pipeline as it runs (or ran).
#[derive(Debug, Serialize)]
pub struct OutputStatus {
    pub output: String,
    /// The file it writes now (MP4 continues in `NAME-N.mp4` after a restart).
    pub file: Option<String>,
    pub state: StageState,
    pub frames: u64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceStatus {
    pub id: String,
    pub state: String,
    pub frames_in: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
}

pub fn status(service: &Service) -> Vec<PipelineStatus> {
    lock(&service.entries)
        .values()
        .map(|e| PipelineStatus {
            file: e.file.display().to_string(),
            name: e.name.clone(),
            state: e.state,
            config_sha256: e.config_sha256.clone(),
            started_at: e
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            starts: e.starts,
            error: e.error.clone(),
            reload_error: e.reload_error.clone(),
            model: e.plan.as_ref().map(|p| p.model.name.clone()),
            model_path: e.plan.as_ref().map(|p| {
                let m = &p.model.manifest;
                std::fs::canonicalize(m)
                    .unwrap_or_else(|_| m.clone())
                    .display()
                    .to_string()
            }),
            managed: e.managed,
            sources: e
                .metrics
                .sources
                .iter()
                .map(|s| SourceStatus {
                    id: s.id.clone(),
                    state: s.state.get().as_str().to_string(),
                    frames_in: s.ingest.frames.load(Ordering::Relaxed),
                    frames_processed: s.processed.frames.load(Ordering::Relaxed),
                    frames_dropped: s.first_edge.dropped.load(Ordering::Relaxed),
                    reconnects: s.reconnects.load(Ordering::Relaxed),
                })
                .collect(),
            outputs: output_status(&e.metrics),
        })
        .collect()
}

/// The outputs of a pipeline from its live stage counters.
fn output_status(m: &PipelineMetrics) -> Vec<OutputStatus> {
    lock(&m.stages)
        .iter()
        .filter_map(|(name, st)| {
            Some(OutputStatus {
                output: name.strip_prefix(OUTPUT_STAGE_PREFIX)?.to_string(),
                file: st.file(),
                state: st.state(),
                frames: st.frames.load(Ordering::Relaxed),
                error: st.error(),
            })
        })
        .collect()
}
