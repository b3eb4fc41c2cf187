//! The metadata record: one JSON object per processed frame, the same for JSONL, MQTT, `vigil
//! detect --json` and regression goldens. Boxes are in source-frame pixels.

use serde::{Deserialize, Serialize};

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
                    }
                })
                .collect(),
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
