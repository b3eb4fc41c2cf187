//! What the console shows of the analytics: events (filtered), clips and their snapshots (from
//! the `clips` outputs' folders), and the counters per zone and line.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::ServiceExt;

use super::Service;
use super::api::{blocking, live_pipelines};
use super::http::error;
use crate::output::OutputSettings;

/// Most events one query returns.
const MAX_EVENTS: usize = 1000;
/// Most clips one query returns.
const MAX_CLIPS: usize = 200;

#[derive(Deserialize)]
pub struct EventQuery {
    pipeline: Option<String>,
    source: Option<String>,
    kind: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

fn rfc3339(v: Option<&str>) -> Result<Option<std::time::SystemTime>, String> {
    v.filter(|t| !t.is_empty())
        .map(|t| {
            humantime::parse_rfc3339_weak(t)
                .map_err(|e| format!("`{t}`: {e} (RFC 3339, e.g. 2026-12-02T10:00:00Z)"))
        })
        .transpose()
}

/// `GET /api/events`: the service's recent events (the last 1000), newest first, filtered.
pub async fn events(State(s): State<Arc<Service>>, Query(q): Query<EventQuery>) -> Response {
    let (since, until) = match (rfc3339(q.since.as_deref()), rfc3339(q.until.as_deref())) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(why), _) | (_, Err(why)) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let wanted = |v: &serde_json::Value, key: &str, want: &Option<String>| {
        want.as_deref()
            .filter(|w| !w.is_empty())
            .is_none_or(|w| v[key] == w)
    };
    let limit = q.limit.unwrap_or(100).min(MAX_EVENTS);
    let out: Vec<serde_json::Value> = s
        .events
        .recent(MAX_EVENTS)
        .iter()
        .rev()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(&p.json).ok())
        .filter(|v| {
            wanted(v, "pipeline", &q.pipeline)
                && wanted(v, "source", &q.source)
                && wanted(v, "kind", &q.kind)
        })
        .filter(|v| {
            let at = v["at"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
            since.is_none_or(|s| at.is_some_and(|a| a >= s))
                && until.is_none_or(|u| at.is_some_and(|a| a <= u))
        })
        .take(limit)
        .collect();
    Json(out).into_response()
}

/// The clips folders of the running pipelines: `(pipeline, source, output index, folder)`.
fn clip_folders(s: &Service) -> Vec<(String, String, usize, PathBuf)> {
    live_pipelines(s)
        .into_iter()
        .filter_map(|(name, _, plan)| plan.map(|p| (name, p)))
        .flat_map(|(name, plan)| {
            plan.outputs
                .iter()
                .enumerate()
                .filter_map(|(i, o)| match &o.settings {
                    OutputSettings::Clips(c) => {
                        Some((name.clone(), o.source.clone(), i, c.folder.clone()))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[derive(Deserialize)]
pub struct ClipQuery {
    pipeline: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
}

/// The clips of one folder: each sidecar with its files' names.
fn read_clips(
    pipeline: &str,
    source: &str,
    output: usize,
    folder: &std::path::Path,
) -> Vec<(u64, serde_json::Value)> {
    let Ok(rd) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let sidecar: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            let created = std::fs::metadata(&p)
                .ok()?
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            let stem = p.file_stem()?.to_string_lossy().to_string();
            let exists = |name: String| p.with_file_name(&name).is_file().then_some(name);
            let v = serde_json::json!({
                "pipeline": pipeline, "source": source, "output": output.to_string(),
                "clip": sidecar["clip"], "snapshot": exists(format!("{stem}.jpg")),
                "crop": exists(format!("{stem}-crop.jpg")), "start_s": sidecar["start_s"],
                "frames": sidecar["frames"], "events": sidecar["events"], "created": created,
            });
            Some((created, v))
        })
        .collect()
}

/// `GET /api/clips`: the clips on disk of the running pipelines, newest first.
pub async fn clips(State(s): State<Arc<Service>>, Query(q): Query<ClipQuery>) -> Response {
    let folders: Vec<_> = clip_folders(&s)
        .into_iter()
        .filter(|(p, src, _, _)| {
            q.pipeline.as_deref().is_none_or(|w| w.is_empty() || w == p)
                && q.source.as_deref().is_none_or(|w| w.is_empty() || w == src)
        })
        .collect();
    let limit = q.limit.unwrap_or(50).min(MAX_CLIPS);
    let found = blocking(move || {
        let mut all: Vec<(u64, serde_json::Value)> = folders
            .iter()
            .flat_map(|(p, src, i, dir)| read_clips(p, src, *i, dir))
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.0));
        all.into_iter()
            .take(limit)
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    })
    .await;
    match found {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/clips/{pipeline}/{output}/{file}`: a clip's MP4 (Range requests: seeking), its
/// snapshot or sidecar. Only plain names of that output's folder, never a path.
pub async fn clip_file(
    State(s): State<Arc<Service>>,
    UrlPath((pipeline, output, file)): UrlPath<(String, String, String)>,
    req: Request,
) -> Response {
    let plain = !file.is_empty() && !file.starts_with('.') && !file.contains(['/', '\\']);
    let known_kind = [".mp4", ".jpg", ".json"].iter().any(|x| file.ends_with(x));
    if !plain || !known_kind {
        return error(
            StatusCode::BAD_REQUEST,
            "a clip file is a plain .mp4, .jpg or .json name",
        );
    }
    let folder = clip_folders(&s)
        .into_iter()
        .find(|(p, _, i, _)| *p == pipeline && i.to_string() == output)
        .map(|(_, _, _, f)| f);
    let Some(folder) = folder else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pipeline `{pipeline}` has no clips output {output}"),
        );
    };
    match tower_http::services::ServeFile::new(folder.join(&file))
        .oneshot(req)
        .await
    {
        Ok(r) => r.into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `GET /api/counts`: events counted per zone/line, kind, direction and class; zone occupancy.
pub async fn counts(State(s): State<Arc<Service>>) -> Response {
    let counters: Vec<serde_json::Value> = s
        .events
        .counters()
        .into_iter()
        .map(|((pipeline, source, region, kind, direction, class), count)| {
            serde_json::json!({ "pipeline": pipeline, "source": source, "region": region, "kind": kind,
                "direction": direction, "class": class, "count": count })
        })
        .collect();
    let occupancy: Vec<serde_json::Value> = s
        .events
        .occupancy()
        .into_iter()
        .map(|((pipeline, source, zone, class), count)| {
            serde_json::json!({ "pipeline": pipeline, "source": source, "zone": zone, "class": class, "count": count })
        })
        .collect();
    Json(serde_json::json!({ "counters": counters, "occupancy": occupancy })).into_response()
}
