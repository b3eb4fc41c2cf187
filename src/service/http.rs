//! The service's HTTP endpoints (tiny_http, one thread; 127.0.0.1 unless configured otherwise):
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 `ok`, or 503 naming stalled stages and failed outputs |
//! | `/readyz` | 200 once every pipeline file has been started and none is rejected or failed; 503 before, while stopping, and naming the rejected or failed |
//! | `/metrics` | Prometheus text format (see `prom`) |
//! | `/pipelines` | JSON: each pipeline file, its state, config hash, sources and counters |
//! | `/events` | JSON array of the most recent zone and line events (`?n=100`, at most 1000) |
//! | `/events/stream` | server-sent events: each event as it happens (`id`, `event: KIND`, `data: JSON`) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{PipelineState, ServeError, Service};
use crate::runtime::metrics::{OUTPUT_STAGE_PREFIX, PipelineMetrics, StageState, lock};

/// The running HTTP server; `stop` ends its thread.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn start(service: Arc<Service>, addr: SocketAddr) -> Result<HttpServer, ServeError> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| ServeError::Http(addr, e.to_string()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(req)) => handle(&service, req),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("{e}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .map_err(|e| ServeError::Http(addr, e.to_string()))?;
    tracing::info!(address = %addr, "HTTP endpoints: /healthz /readyz /metrics /pipelines /events /events/stream");
    Ok(HttpServer {
        stop,
        thread: Some(thread),
    })
}

fn header(k: &str, v: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok()
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

fn handle(service: &Arc<Service>, req: tiny_http::Request) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    if path == "/events/stream" && *req.method() == tiny_http::Method::Get {
        stream_events(service, req);
        return;
    }
    let (code, ctype, body) = if *req.method() != tiny_http::Method::Get {
        (405, "text/plain", "only GET\n".to_string())
    } else {
        match path.as_str() {
            "/healthz" => healthz(service),
            "/readyz" => readiness(service),
            "/metrics" => match super::prom::render(service) {
                Ok(text) => (200, "text/plain; version=0.0.4; charset=utf-8", text),
                Err(e) => (500, "text/plain", format!("{e}\n")),
            },
            "/events" => recent_events(service, req.url()),
            "/pipelines" => match serde_json::to_string_pretty(&status(service)) {
                Ok(j) => (200, "application/json", j + "\n"),
                Err(e) => (500, "text/plain", format!("{e}\n")),
            },
            _ => (
                404,
                "text/plain",
                "not found: try /healthz /readyz /metrics /pipelines /events /events/stream\n"
                    .to_string(),
            ),
        }
    };
    let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
    if let Some(h) = header("Content-Type", ctype) {
        resp = resp.with_header(h);
    }
    if let Err(e) = req.respond(resp) {
        tracing::debug!("respond: {e}");
    }
}

/// `/events?n=N`: the last N events (default 100), oldest first, as a JSON array.
fn recent_events(service: &Service, url: &str) -> (u16, &'static str, String) {
    let n = url
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100);
    let lines: Vec<String> = service
        .events
        .recent(n)
        .iter()
        .map(|p| p.json.to_string())
        .collect();
    (
        200,
        "application/json",
        format!("[{}]\n", lines.join(",\n")),
    )
}

/// How often an idle event stream sends a comment (proxies close silent connections).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `/events/stream`: server-sent events on a thread of its own, until the client goes or the
/// service stops. A client that reads too slowly is dropped by the hub, never waited for.
/// Event-stream threads alive, stuck writing to a client that stopped reading included (the
/// socket has no write timeout here): at most `runtime::events::MAX_SUBSCRIBERS` of them.
static SSE_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts one event-stream thread while it lives.
struct SseThread;

impl SseThread {
    fn enter() -> Option<Self> {
        let n = SSE_THREADS.fetch_add(1, Ordering::SeqCst);
        if n >= crate::runtime::events::MAX_SUBSCRIBERS {
            SSE_THREADS.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self)
    }
}

impl Drop for SseThread {
    fn drop(&mut self) {
        SSE_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn stream_events(service: &Arc<Service>, req: tiny_http::Request) {
    let thread = SseThread::enter();
    let sub = thread.as_ref().and_then(|_| service.events.subscribe());
    let (Some(thread), Some(sub)) = (thread, sub) else {
        let resp =
            tiny_http::Response::from_string("too many event streams\n").with_status_code(503);
        let _ = req.respond(resp);
        return;
    };
    let service = service.clone();
    let spawned = std::thread::Builder::new()
        .name("sse".into())
        .spawn(move || {
            let _alive = thread;
            let mut w = req.into_writer();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
            if w.write_all(head.as_bytes()).and_then(|()| w.flush()).is_err() {
                return;
            }
            let mut last_write = std::time::Instant::now();
            while !service.stopping.load(Ordering::Relaxed) {
                // wake every second to notice a stop; a comment after 15 s of silence
                let chunk = match sub.rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(p) => sse_message(&p),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout)
                        if last_write.elapsed() >= KEEP_ALIVE =>
                    {
                        ": keep-alive\n\n".to_string()
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                };
                if w.write_all(chunk.as_bytes()).and_then(|()| w.flush()).is_err() {
                    break;
                }
                last_write = std::time::Instant::now();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start an event stream: {e}");
    }
}

/// One event as a server-sent event: its id, its kind as the event name, its JSON as data.
fn sse_message(p: &crate::runtime::events::Published) -> String {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    let kind = serde_json::from_str::<Kind>(&p.json).map_or_else(|_| "event".into(), |k| k.kind);
    format!("id: {}\nevent: {kind}\ndata: {}\n\n", p.id, p.json)
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
