//! `vigil analyze`: recorded tracks (or detections, through the pipeline's tracker) replayed
//! through one source's zones and lines, without video — for tuning them on real footage in
//! seconds, and as a regression base for the analytics.

use std::collections::BTreeMap;

use super::mot::MotRow;
use crate::analytics::Analytics;
use crate::config::Plan;
use crate::frame::{BoxInFrame, Detection};
use crate::output::record::EventRecord;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct Replay<'a> {
    pub plan: &'a Plan,
    /// Index of the source whose zones and lines apply.
    pub source: usize,
    /// Frame size (normalized coordinates scale to it).
    pub size: (u32, u32),
    /// Frames per second of the recording: stream time is `(frame − 1) / fps`.
    pub fps: f64,
    /// `true`: the rows' ids are track ids; `false`: the rows are detections and the pipeline's
    /// tracker gives the ids.
    pub tracks: bool,
}

/// The events of `rows` (MOT frames are 1-based), in order, as outputs write them (no clock).
pub fn events(r: &Replay, rows: &[MotRow]) -> Vec<EventRecord> {
    let mut by_frame: BTreeMap<i64, Vec<&MotRow>> = BTreeMap::new();
    for row in rows {
        by_frame.entry(row.frame).or_default().push(row);
    }
    let mut analytics = Analytics::new(r.plan.source_analytics[r.source].clone());
    let mut tracker = (!r.tracks)
        .then(|| r.plan.tracker.as_ref().map(crate::track::build))
        .flatten();
    let (first, last) = match (by_frame.keys().next(), by_frame.keys().next_back()) {
        (Some(f), Some(l)) => (*f, *l),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut end = (0, 0.0);
    // every frame in the range, also those without rows: tracks age and get forgotten there
    for frame in first..=last {
        let mut dets: Vec<Detection> = by_frame
            .get(&frame)
            .map(|rows| rows.iter().map(|row| detection(row, r.tracks)).collect())
            .unwrap_or_default();
        if let Some(t) = tracker.as_deref_mut() {
            crate::track::assign_ids(t, &mut dets);
        }
        let seq = u64::try_from(frame - first).unwrap_or(0);
        let time_s = (frame - 1).max(0) as f64 / r.fps;
        end = (seq, time_s);
        let events = analytics.update(seq, time_s, r.size, &dets);
        out.extend(records(r, events));
    }
    out.extend(records(r, analytics.finish(end.0, end.1)));
    out
}

fn detection(row: &MotRow, is_track: bool) -> Detection {
    Detection {
        class_id: 0,
        score: 1.0,
        box_in_frame: BoxInFrame(row.bbox),
        track_id: is_track.then(|| u64::try_from(row.id).unwrap_or(0)),
        mask: None,
    }
}

fn records(r: &Replay, events: Vec<crate::event::Event>) -> Vec<EventRecord> {
    events
        .into_iter()
        .map(|event| {
            let source = &r.plan.sources[r.source].id;
            EventRecord::new(event, &r.plan.name, source, &r.plan.model.classes)
        })
        .collect()
}
