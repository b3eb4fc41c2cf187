//! The JSON API under `/api` (described in `console/openapi.json`): sessions, pipelines
//! (list, read, create/replace, delete — validated by the same checker as `vigil check`, written
//! atomically into the state folder, rolled back when the service refuses them), sources (state,
//! rate, latency; stop and start), events, clips, counts, the last hour's history, models.
//! Reads need a viewer; changes need an admin ([`Admin`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Extension, Path as UrlPath, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, LoginRefused};
use super::http::{Admin, SESSION_COOKIE, error};
use super::{PipelineState, Service};
use crate::runtime::metrics::{SourceMetrics, lock};

pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/api/session", get(session))
        .route("/api/logout", post(logout))
        .route("/api/pipelines", get(list_pipelines))
        .route(
            "/api/pipelines/{name}",
            get(get_pipeline).put(put_pipeline).delete(delete_pipeline),
        )
        .route("/api/check", post(check))
        .route("/api/sources", get(list_sources))
        .route("/api/sources/{pipeline}/{source}/stop", post(stop_source))
        .route("/api/sources/{pipeline}/{source}/start", post(start_source))
        .route("/api/events", get(super::media::events))
        .route("/api/events/stream", get(super::http::stream_events))
        .route("/api/clips", get(super::media::clips))
        .route(
            "/api/clips/{pipeline}/{output}/{file}",
            get(super::media::clip_file),
        )
        .route("/api/counts", get(super::media::counts))
        .route("/api/history", get(history))
        .route("/api/models", get(models))
}

/// Run blocking work (files, reconciling, encoding) off the server's threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &format!("worker: {e}")))
}

#[derive(Deserialize)]
pub struct LoginBody {
    token: String,
}

#[derive(Serialize)]
struct SessionView {
    role: super::auth::Role,
    name: String,
    csrf: Option<String>,
}

/// `POST /api/login {token}`: a session cookie and its CSRF token; 401, or 429 after too many
/// failures from the same address. The token never reaches a log.
pub async fn login(
    State(s): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(body): Json<LoginBody>,
) -> Response {
    match s.auth.login(peer.ip(), body.token.trim()) {
        Ok((id, caller)) => {
            tracing::info!(who = %caller.name, role = %caller.role, from = %peer.ip(), "console login");
            let cookie = format!(
                "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                super::auth::SESSION_TTL.as_secs()
            );
            let mut resp = Json(SessionView {
                role: caller.role,
                name: caller.name,
                csrf: caller.csrf,
            })
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(LoginRefused::BadToken) => {
            tracing::warn!(from = %peer.ip(), "console login refused: unknown token");
            error(StatusCode::UNAUTHORIZED, "unknown token")
        }
        Err(LoginRefused::TooMany(wait)) => {
            let secs = wait.as_secs().max(1);
            let body = serde_json::json!({
                "error": format!("too many failed logins from this address: try again in {secs} s"),
                "retry_after_s": secs,
            });
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
        Err(LoginRefused::NoRandom) => error(StatusCode::INTERNAL_SERVER_ERROR, "no random source"),
    }
}

async fn session(Extension(c): Extension<Caller>) -> Response {
    Json(SessionView {
        role: c.role,
        name: c.name,
        csrf: c.csrf,
    })
    .into_response()
}

async fn logout(State(s): State<Arc<Service>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(id) = super::http::cookie(&headers, SESSION_COOKIE) {
        s.auth.logout(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// One pipeline as the API shows it: its status, and its file's text when asked for one.
#[derive(Serialize)]
struct PipelineView {
    #[serde(flatten)]
    status: super::http::PipelineStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    yaml: Option<String>,
}

async fn list_pipelines(State(s): State<Arc<Service>>) -> Response {
    Json(super::http::status(&s)).into_response()
}

fn find_status(s: &Service, name: &str) -> Option<super::http::PipelineStatus> {
    super::http::status(s).into_iter().find(|p| p.name == name)
}

async fn get_pipeline(State(s): State<Arc<Service>>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(status) = find_status(&s, &name) else {
        return error(StatusCode::NOT_FOUND, &format!("no pipeline `{name}`"));
    };
    let file = PathBuf::from(&status.file);
    let yaml = match blocking(move || std::fs::read_to_string(file)).await {
        Ok(Ok(t)) => Some(t),
        Ok(Err(_)) => None,
        Err(r) => return r,
    };
    Json(PipelineView { status, yaml }).into_response()
}

/// A problem of a pipeline text, placed for the editor.
#[derive(Debug, Serialize)]
pub struct ProblemView {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

fn problems_of(e: &crate::config::ConfigError) -> Vec<ProblemView> {
    e.problems
        .iter()
        .map(|p| ProblemView {
            line: p.line,
            column: p.column,
            message: p.message.clone(),
        })
        .collect()
}

/// Where the API's pipeline `name` lives.
fn managed_file(s: &Service, name: &str) -> PathBuf {
    s.managed_dir().join(format!("{name}.yaml"))
}

/// `POST /api/check`: what `vigil check` says of the text, as if it were a file of the API's
/// folder (relative paths resolve there). Writes nothing.
async fn check(State(s): State<Arc<Service>>, body: String) -> Response {
    let path = s.managed_dir().join("(editor).yaml");
    let problems = match blocking(move || crate::config::parse(&path, &body)).await {
        Ok(Ok(_)) => Vec::new(),
        Ok(Err(e)) => problems_of(&e),
        Err(r) => return r,
    };
    Json(serde_json::json!({ "ok": problems.is_empty(), "problems": problems })).into_response()
}

/// A name the API accepts for a pipeline: it becomes a file name.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn invalid(problems: Vec<ProblemView>) -> Response {
    let body = serde_json::json!({ "error": "invalid pipeline", "problems": problems });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// `PUT /api/pipelines/{name}`: create or replace an API pipeline (admin).
async fn put_pipeline(
    State(s): State<Arc<Service>>,
    Admin(who): Admin,
    UrlPath(name): UrlPath<String>,
    body: String,
) -> Response {
    if !valid_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            "a pipeline name is 1-64 of A-Z a-z 0-9 - _",
        );
    }
    let s2 = s.clone();
    match blocking(move || save_pipeline(&s2, &name, &body, &who.name)).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

/// Validate, write atomically, reconcile; put the previous file back when the service refuses
/// the new one.
fn save_pipeline(s: &Service, name: &str, text: &str, who: &str) -> Response {
    if let Some(c) = &s.opts.cluster {
        return save_to_cluster(c, name, text, who);
    }
    if let Some(st) = find_status(s, name).filter(|p| !p.managed) {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "`{name}` comes from {} (read-only here): change it there",
                st.file
            ),
        );
    }
    let file = managed_file(s, name);
    let plan = match crate::config::parse(&file, text) {
        Ok(p) => p,
        Err(e) => return invalid(problems_of(&e)),
    };
    if let Some(r) = name_differs(&plan, name) {
        return r;
    }
    if let Some(why) = s.blocked_by_others(&file, &plan) {
        return invalid(vec![ProblemView {
            line: 0,
            column: 0,
            message: why,
        }]);
    }
    let previous = std::fs::read(&file).ok();
    if let Err(e) = write_atomically(&file, text.as_bytes()) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{}: {e}", file.display()),
        );
    }
    tracing::info!(pipeline = %name, by = %who, file = %file.display(), "pipeline written through the API");
    if let Err(e) = s.reconcile() {
        tracing::error!("reload: {e}");
    }
    let sha = crate::hash::sha256_hex(text.as_bytes());
    let refused = lock(&s.entries)
        .get(&file)
        .filter(|e| e.rejected_sha256.as_deref() == Some(sha.as_str()))
        .and_then(|e| e.reload_error.clone());
    if let Some(why) = refused {
        roll_back(s, &file, previous.as_deref());
        return invalid(vec![ProblemView {
            line: 0,
            column: 0,
            message: why,
        }]);
    }
    match find_status(s, name) {
        Some(st) if previous.is_some() => Json(st).into_response(),
        Some(st) => (StatusCode::CREATED, Json(st)).into_response(),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "written, but the service does not list it",
        ),
    }
}

/// Cluster mode: validate as the nodes will (relative paths against `--data-dir`) and store the
/// text in the cluster; whichever node placement picks runs it. 202: stored, not yet running.
fn save_to_cluster(c: &super::ClusterNode, name: &str, text: &str, who: &str) -> Response {
    let plan = match crate::config::parse(&c.data_dir.join(format!("{name}.yaml")), text) {
        Ok(p) => p,
        Err(e) => return invalid(problems_of(&e)),
    };
    if let Some(r) = name_differs(&plan, name) {
        return r;
    }
    match c.store.put(name, text) {
        Ok(()) => {
            tracing::info!(pipeline = %name, by = %who, "pipeline stored in the cluster through the API");
            let body = serde_json::json!({ "name": name, "stored_in": "cluster" });
            (StatusCode::ACCEPTED, Json(body)).into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, &format!("etcd: {e}")),
    }
}

/// 422 when the text's `name:` is not the name it is saved under.
fn name_differs(plan: &crate::config::Plan, name: &str) -> Option<Response> {
    (plan.name != name).then(|| {
        invalid(vec![ProblemView {
            line: plan.name_at.0,
            column: plan.name_at.1,
            message: format!(
                "the pipeline's name is `{}` but it is saved as `{name}`: make them equal",
                plan.name
            ),
        }])
    })
}

/// Put `previous` back (or remove the file when there was none) and reconcile again.
fn roll_back(s: &Service, file: &Path, previous: Option<&[u8]>) {
    let undone = match previous {
        Some(bytes) => write_atomically(file, bytes),
        None => std::fs::remove_file(file),
    };
    match undone {
        Ok(()) => tracing::warn!(file = %file.display(), "refused by the service: rolled back"),
        Err(e) => tracing::error!(file = %file.display(), "cannot roll back: {e}"),
    }
    if let Err(e) = s.reconcile() {
        tracing::error!("reload: {e}");
    }
}

/// Write `bytes` to `file` through a hidden temporary file and a rename: a reader (the folder
/// poll) sees the old file or the new one, never half of one.
pub fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    // the rename itself survives a crash once the folder is synced
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// `DELETE /api/pipelines/{name}` (admin): stop it and remove its file.
async fn delete_pipeline(
    State(s): State<Arc<Service>>,
    Admin(who): Admin,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if let Some(c) = s.opts.cluster.clone() {
        return match blocking(move || c.store.delete(&name)).await {
            Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
            Ok(Ok(false)) => error(StatusCode::NOT_FOUND, "no such pipeline in the cluster"),
            Ok(Err(e)) => error(StatusCode::BAD_GATEWAY, &format!("etcd: {e}")),
            Err(r) => r,
        };
    }
    let Some(st) = find_status(&s, &name) else {
        return error(StatusCode::NOT_FOUND, &format!("no pipeline `{name}`"));
    };
    if !st.managed {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "`{name}` comes from {} (read-only here): remove it there",
                st.file
            ),
        );
    }
    let s2 = s.clone();
    let removed = blocking(move || {
        std::fs::remove_file(&st.file)?;
        tracing::info!(pipeline = %name, by = %who.name, "pipeline deleted through the API");
        if let Err(e) = s2.reconcile() {
            tracing::error!("reload: {e}");
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    match removed {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(r) => r,
    }
}

/// One source as the API shows it.
#[derive(Serialize)]
pub struct SourceView {
    pipeline: String,
    source: String,
    state: String,
    paused: bool,
    fps: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    frames_in: u64,
    frames_processed: u64,
    frames_dropped: u64,
    reconnects: u64,
    last_error: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
}

fn source_view(s: &Service, pipeline: &str, m: &SourceMetrics) -> SourceView {
    let paused = m.paused.load(Ordering::Relaxed);
    let newest = lock(&s.history).newest(pipeline, &m.id);
    let size = lock(&m.latest)
        .as_ref()
        .map(|f| (f.image.width, f.image.height));
    let q = |q| m.latency.quantile_ms(q).map(|v| v as f64);
    SourceView {
        pipeline: pipeline.to_string(),
        source: m.id.clone(),
        state: if paused {
            "paused".into()
        } else {
            m.state.get().as_str().to_string()
        },
        paused,
        fps: newest.map(|p| p.fps),
        // the last interval's when there is one, else since the start
        latency_p50_ms: newest.and_then(|p| p.latency_p50_ms).or_else(|| q(0.5)),
        latency_p99_ms: newest.and_then(|p| p.latency_p99_ms).or_else(|| q(0.99)),
        frames_in: m.ingest.frames.load(Ordering::Relaxed),
        frames_processed: m.processed.frames.load(Ordering::Relaxed),
        frames_dropped: m.first_edge.dropped.load(Ordering::Relaxed),
        reconnects: m.reconnects.load(Ordering::Relaxed),
        last_error: lock(&m.last_error).clone(),
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
    }
}

/// `(pipeline name, its metrics)` of every pipeline that has sources to show.
pub fn live_pipelines(
    s: &Service,
) -> Vec<(
    String,
    Arc<crate::runtime::metrics::PipelineMetrics>,
    Option<Arc<crate::config::Plan>>,
)> {
    lock(&s.entries)
        .values()
        .filter(|e| e.state != PipelineState::Rejected)
        .map(|e| (e.name.clone(), e.metrics.clone(), e.plan.clone()))
        .collect()
}

async fn list_sources(State(s): State<Arc<Service>>) -> Response {
    let views: Vec<SourceView> = live_pipelines(&s)
        .iter()
        .flat_map(|(name, m, _)| {
            m.sources
                .iter()
                .map(|src| source_view(&s, name, src))
                .collect::<Vec<_>>()
        })
        .collect();
    Json(views).into_response()
}

/// The metrics of source `source` of pipeline `pipeline`.
pub fn find_source(s: &Service, pipeline: &str, source: &str) -> Option<Arc<SourceMetrics>> {
    lock(&s.entries)
        .values()
        .filter(|e| e.name == pipeline && e.state != PipelineState::Rejected)
        .flat_map(|e| e.metrics.sources.iter())
        .find(|m| m.id == source)
        .cloned()
}

fn set_paused(s: &Service, pipeline: &str, source: &str, paused: bool, who: &str) -> Response {
    let Some(m) = find_source(s, pipeline, source) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no source `{source}` in pipeline `{pipeline}`"),
        );
    };
    m.paused.store(paused, Ordering::Relaxed);
    let key = (pipeline.to_string(), source.to_string());
    let mut set = lock(&s.paused);
    if paused {
        set.insert(key);
    } else {
        set.remove(&key);
    }
    drop(set);
    s.save_paused();
    tracing::info!(pipeline, source, by = %who, "source {} through the API", if paused { "stopped" } else { "started" });
    Json(source_view(s, pipeline, &m)).into_response()
}

async fn stop_source(
    State(s): State<Arc<Service>>,
    Admin(who): Admin,
    UrlPath((pipeline, source)): UrlPath<(String, String)>,
) -> Response {
    set_paused(&s, &pipeline, &source, true, &who.name)
}

async fn start_source(
    State(s): State<Arc<Service>>,
    Admin(who): Admin,
    UrlPath((pipeline, source)): UrlPath<(String, String)>,
) -> Response {
    set_paused(&s, &pipeline, &source, false, &who.name)
}

#[derive(Deserialize)]
struct HistoryQuery {
    minutes: Option<u64>,
}

async fn history(State(s): State<Arc<Service>>, Query(q): Query<HistoryQuery>) -> Response {
    let minutes = q.minutes.unwrap_or(60).min(60);
    let series: Vec<serde_json::Value> = lock(&s.history)
        .last(minutes)
        .into_iter()
        .map(|(pipeline, source, points)| serde_json::json!({ "pipeline": pipeline, "source": source, "points": points }))
        .collect();
    Json(serde_json::json!({ "interval_s": super::history::INTERVAL.as_secs(), "series": series }))
        .into_response()
}

/// `GET /api/models`: the model manifests beside those the pipelines use (for a new pipeline).
async fn models(State(s): State<Arc<Service>>) -> Response {
    let manifests: Vec<PathBuf> = live_pipelines(&s)
        .iter()
        .filter_map(|(_, _, plan)| plan.as_ref().map(|p| p.model.manifest.clone()))
        .collect();
    let found = blocking(move || {
        let used: Vec<PathBuf> = manifests
            .iter()
            .map(|m| std::fs::canonicalize(m).unwrap_or_else(|_| m.clone()))
            .collect();
        let mut dirs: Vec<PathBuf> = used
            .iter()
            .filter_map(|m| m.parent().map(Path::to_path_buf))
            .collect();
        dirs.sort();
        dirs.dedup();
        // (not used by a running pipeline, path): the ones in use come first
        let mut out = std::collections::BTreeSet::new();
        for dir in dirs {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.filter_map(Result::ok) {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "yaml")
                    && crate::detect::manifest::ModelInfo::load(&p).is_ok()
                {
                    let abs = std::fs::canonicalize(&p).unwrap_or(p);
                    out.insert((!used.contains(&abs), abs));
                }
            }
        }
        out.into_iter()
            .map(|(_, p)| {
                let name = p
                    .file_stem()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                serde_json::json!({ "name": name, "path": p.display().to_string() })
            })
            .collect::<Vec<_>>()
    })
    .await;
    match found {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}
