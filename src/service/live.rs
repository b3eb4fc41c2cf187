//! Live views: the newest annotated frame of a source as JPEG, and MJPEG
//! (`multipart/x-mixed-replace`), which every browser shows in an `<img>` with no plugin and no
//! player, at the latency of one frame plus its encoding (a LAN adds milliseconds, not the
//! seconds of segment-based HLS). Frames are encoded only while somebody watches: the stages
//! leave their newest frame on the source's metrics and this module encodes it on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Service;
use super::api::blocking;
use super::http::error;
use crate::frame::Frame;
use crate::runtime::metrics::lock;

/// Live streams open at most: each costs one JPEG encoding per frame.
pub const MAX_LIVE_STREAMS: usize = 16;
/// A live stream sends at most this many frames a second.
const MAX_FPS: f64 = 15.0;
/// How often a stream looks for a new frame.
const POLL: Duration = Duration::from_millis(20);

static LIVE_STREAMS: AtomicUsize = AtomicUsize::new(0);

pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/api/sources/{pipeline}/{source}/frame.jpg",
            get(frame_jpeg),
        )
        .route("/api/sources/{pipeline}/{source}/live", get(live))
}

/// The newest frame of a source and its model's class names.
fn newest(s: &Service, pipeline: &str, source: &str) -> Option<(Frame, Arc<crate::config::Plan>)> {
    // one look at the entries (a live stream asks every 20 ms)
    let entries = lock(&s.entries);
    let e = entries
        .values()
        .find(|e| e.name == pipeline && e.state != super::PipelineState::Rejected)?;
    let m = e.metrics.sources.iter().find(|m| m.id == source)?;
    let frame = lock(&m.latest).clone()?;
    Some((frame, e.plan.clone()?))
}

async fn encode(frame: Frame, plan: Arc<crate::config::Plan>) -> Result<Vec<u8>, Response> {
    match blocking(move || crate::output::snapshot::annotated_jpeg(&frame, &plan.model.classes))
        .await
    {
        Ok(Ok(jpeg)) => Ok(jpeg),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("JPEG: {e}"),
        )),
        Err(r) => Err(r),
    }
}

async fn frame_jpeg(
    State(s): State<Arc<Service>>,
    UrlPath((pipeline, source)): UrlPath<(String, String)>,
) -> Response {
    let Some((frame, plan)) = newest(&s, &pipeline, &source) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no frame of `{pipeline}`/`{source}` yet"),
        );
    };
    match encode(frame, plan).await {
        Ok(jpeg) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            jpeg,
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Bits of the capture-time code (milliseconds since 1970 fit in 44 bits until the year 2527).
pub const TIMECODE_BITS: usize = 44;
/// Side of one bit's square, in pixels (big enough to survive JPEG).
pub const TIMECODE_BLOCK: usize = 8;

/// Draw the frame's capture time (ms since 1970, MSB first, white = 1) as a row of squares
/// along its top edge, for measuring capture-to-screen latency in a browser (see the console
/// test): a copy of the pixels, and only when asked for.
fn with_timecode(mut frame: Frame) -> Frame {
    let ms = frame
        .captured_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut image = (*frame.image).clone();
    let (w, h) = (image.width as usize, image.height as usize);
    for bit in 0..TIMECODE_BITS {
        let on = (ms >> (TIMECODE_BITS - 1 - bit)) & 1 == 1;
        for y in 0..TIMECODE_BLOCK.min(h) {
            for x in bit * TIMECODE_BLOCK..((bit + 1) * TIMECODE_BLOCK).min(w) {
                let at = (y * w + x) * 3;
                image.bgr[at..at + 3].fill(if on { 255 } else { 0 });
            }
        }
    }
    frame.image = Arc::new(image);
    frame
}

#[derive(serde::Deserialize)]
struct LiveQuery {
    /// `1` or `true`: draw the capture time into each frame ([`with_timecode`]).
    timecode: Option<String>,
}

/// Counts one open live stream while it lives.
struct LiveSlot;

impl LiveSlot {
    fn take() -> Option<Self> {
        if LIVE_STREAMS.fetch_add(1, Ordering::SeqCst) >= MAX_LIVE_STREAMS {
            LIVE_STREAMS.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self)
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        LIVE_STREAMS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a live stream remembers between frames.
struct Watch {
    s: Arc<Service>,
    pipeline: String,
    source: String,
    /// `(seq, capture time)` of the frame sent last.
    sent: Option<(u64, std::time::SystemTime)>,
    at: Instant,
    timecode: bool,
    _slot: LiveSlot,
}

/// The next part of the stream: waits for a frame newer than the last one sent (at most
/// `MAX_FPS`), ends when the service stops or the pipeline is gone.
async fn next_part(mut w: Watch) -> Option<(Result<Bytes, std::io::Error>, Watch)> {
    loop {
        if w.s.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let since = w.at.elapsed().as_secs_f64();
        if since >= 1.0 / MAX_FPS {
            let found = newest(&w.s, &w.pipeline, &w.source);
            if found.is_none() && super::api::find_source(&w.s, &w.pipeline, &w.source).is_none() {
                return None;
            }
            if let Some((frame, plan)) =
                found.filter(|(f, _)| w.sent != Some((f.seq, f.captured_at)))
            {
                w.sent = Some((frame.seq, frame.captured_at));
                w.at = Instant::now();
                let frame = if w.timecode {
                    with_timecode(frame)
                } else {
                    frame
                };
                let jpeg = encode(frame, plan).await.ok()?;
                let mut part = format!(
                    "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )
                .into_bytes();
                part.extend_from_slice(&jpeg);
                part.extend_from_slice(b"\r\n");
                return Some((Ok(Bytes::from(part)), w));
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn live(
    State(s): State<Arc<Service>>,
    UrlPath((pipeline, source)): UrlPath<(String, String)>,
    Query(q): Query<LiveQuery>,
) -> Response {
    if super::api::find_source(&s, &pipeline, &source).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no source `{source}` in pipeline `{pipeline}`"),
        );
    }
    let Some(slot) = LiveSlot::take() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{MAX_LIVE_STREAMS} live views are open already"),
        );
    };
    let watch = Watch {
        s,
        pipeline,
        source,
        sent: None,
        at: Instant::now() - Duration::from_secs(1),
        timecode: matches!(q.timecode.as_deref(), Some("1" | "true")),
        _slot: slot,
    };
    let body = Body::from_stream(futures_util::stream::unfold(watch, next_part));
    (
        [
            (
                header::CONTENT_TYPE,
                "multipart/x-mixed-replace; boundary=frame",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}
