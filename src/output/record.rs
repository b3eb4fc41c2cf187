//! The metadata record: one JSON object per processed frame, the same for JSONL, MQTT, `vigil
//! detect --json` and regression goldens. Boxes are in source-frame pixels.

use serde::{Deserialize, Serialize};

use crate::event::{EVENT_SCHEMA, Event};
use crate::frame::Frame;

/// Version of the record layout; bump on any incompatible change.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub pipeline: String,
    pub source: String,
    pub seq: u64,
    pub pts_ns: Option<u64>,
    /// RFC 3339 wall-clock capture time (left out in deterministic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<String>,
    /// Milliseconds from capture (ingest) to this record being written (left out in deterministic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f32>,
    pub detections: Vec<RecordDetection>,
    /// Zone and line events of this frame (left out when there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// The cluster node that ran the pipeline (`vigil serve --cluster`; left out otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One event as outputs write it (the `events` output, MQTT): the analytics' [`Event`] with the
/// pipeline, source and class name, and the wall-clock time unless deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// [`EVENT_SCHEMA`].
    pub event_schema: u32,
    pub pipeline: String,
    pub source: String,
    #[serde(flatten)]
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// RFC 3339 wall-clock time of the frame (left out in deterministic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl EventRecord {
    /// The records of `frame`'s events.
    pub fn of(frame: &Frame, pipeline: &str, classes: &[String], with_clock: bool) -> Vec<Self> {
        Self::of_events(frame.events.clone(), frame, pipeline, classes, with_clock)
    }

    /// The records of `events`, which happened in `frame`.
    pub fn of_events(
        events: Vec<Event>,
        frame: &Frame,
        pipeline: &str,
        classes: &[String],
        with_clock: bool,
    ) -> Vec<Self> {
        let at =
            with_clock.then(|| humantime::format_rfc3339_millis(frame.captured_at).to_string());
        events
            .into_iter()
            .map(|e| Self::new(e, pipeline, &frame.stream, classes).with_time(at.clone()))
            .collect()
    }

    /// `event` of `source`, class ids in its counts named from `classes`; no wall-clock time.
    pub fn new(mut event: Event, pipeline: &str, source: &str, classes: &[String]) -> Self {
        let name = |key: &str| -> String {
            let (head, id) = key.rsplit_once('/').map_or(("", key), |(h, i)| (h, i));
            let class = id
                .parse::<usize>()
                .ok()
                .and_then(|i| classes.get(i).cloned())
                .unwrap_or_else(|| id.to_string());
            if head.is_empty() {
                class
            } else {
                format!("{head}/{class}")
            }
        };
        event.counts = event.counts.iter().map(|(k, n)| (name(k), *n)).collect();
        event.occupancy = event.occupancy.iter().map(|(k, n)| (name(k), *n)).collect();
        Self {
            event_schema: EVENT_SCHEMA,
            pipeline: pipeline.to_string(),
            source: source.to_string(),
            class: event
                .class_id
                .and_then(|c| classes.get(c as usize).cloned()),
            at: None,
            event,
        }
    }

    /// With the wall-clock time of its frame.
    pub fn with_time(mut self, at: Option<String>) -> Self {
        self.at = at;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordDetection {
    pub class: String,
    pub class_id: u32,
    pub score: f32,
    /// `[x1, y1, x2, y2]` in frame pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub track_id: Option<u64>,
    /// The object's pixels (segmentation models), COCO RLE over the frame; left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<super::rle::Rle>,
}

impl Record {
    /// The record of `frame`. `with_clock: false` leaves out wall-clock fields (deterministic output).
    pub fn of(frame: &Frame, pipeline: &str, classes: &[String], with_clock: bool) -> Self {
        Self {
            schema: SCHEMA,
            pipeline: pipeline.to_string(),
            source: frame.stream.to_string(),
            seq: frame.seq,
            pts_ns: frame.pts_ns,
            captured_at: with_clock
                .then(|| humantime::format_rfc3339_millis(frame.captured_at).to_string()),
            latency_ms: with_clock.then(|| frame.ingested.elapsed().as_secs_f32() * 1000.0),
            detections: frame
                .detections
                .iter()
                .map(|d| {
                    let b = d.box_in_frame.0;
                    RecordDetection {
                        class: classes
                            .get(d.class_id as usize)
                            .cloned()
                            .unwrap_or_else(|| d.class_id.to_string()),
                        class_id: d.class_id,
                        score: d.score,
                        bbox: [b.x1, b.y1, b.x2, b.y2],
                        track_id: d.track_id,
                        mask: d.mask.as_deref().map(|m| {
                            super::rle::Rle::encode(m, frame.image.width, frame.image.height)
                        }),
                    }
                })
                .collect(),
            events: frame.events.clone(),
            node: None,
        }
    }
}

/// Read a JSONL file of records (goldens, regression runs). Errors name the file and line.
pub fn read_jsonl(path: &std::path::Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
