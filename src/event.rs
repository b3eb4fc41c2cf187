//! Events: what the analytics made of the tracks (a zone entered, a line crossed, a dwell, the
//! counts of an interval). They travel on the frame they happened in, from the track stage to the
//! outputs, which add the pipeline, source, class names and wall-clock time ([`EventRecord`] in
//! `output::record`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::frame::Detection;

/// Version of the event layout; bump on any incompatible change.
pub const EVENT_SCHEMA: u32 = 1;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A confirmed track is inside a zone (it walked in, or was first confirmed there).
    Enter,
    /// A track left a zone (or was lost while in it: `lost: true`).
    Exit,
    /// A track has been in a zone for the zone's `min_dwell` (once per visit).
    Dwell,
    /// A track crossed a line, in a named direction.
    Cross,
    /// Counts of one zone or line over the last interval (`analytics.count_every`).
    Count,
    /// A track appeared (MQTT `publish: events`).
    Start,
    /// A track has not been seen for `end_after` frames, or the stream ended (MQTT events).
    End,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enter => "enter",
            Self::Exit => "exit",
            Self::Dwell => "dwell",
            Self::Cross => "cross",
            Self::Count => "count",
            Self::Start => "start",
            Self::End => "end",
        }
    }
}

/// One event, in stream terms (frame `seq`, stream time); boxes in frame pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The frame it happened in.
    pub seq: u64,
    /// Stream time of that frame, seconds (its PTS, or `seq / fps`).
    pub time_s: f64,
    /// The zone or line it is about (empty for `start`/`end`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// `[x1, y1, x2, y2]` of the track's box in that frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// `cross`: the direction's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// `dwell` and `exit`: seconds in the zone so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
    /// `exit`: the track was lost while in the zone (it was not seen leaving).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    /// `count`: the interval's counts, keyed `direction/class` (lines) or `enter/class` (zones);
    /// the class is its id here and its name in what outputs write.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// `count` of a zone: tracks in it now, by class (id here, name in outputs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub occupancy: BTreeMap<String, u64>,
    /// `count`: the interval's start, stream seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_s: Option<f64>,
    /// `start`/`end`: the track's first and last frames, and the frames it was seen in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
}

impl Event {
    /// An event of `kind` about `region` with no track (counts).
    pub fn new(kind: EventKind, seq: u64, time_s: f64, region: &str) -> Self {
        Self {
            kind,
            seq,
            time_s,
            region: region.to_string(),
            track_id: None,
            class_id: None,
            score: None,
            bbox: None,
            direction: None,
            dwell_s: None,
            lost: false,
            counts: BTreeMap::new(),
            occupancy: BTreeMap::new(),
            since_s: None,
            first_seq: None,
            last_seq: None,
            frames: None,
        }
    }
}

/// What the overlay draws of a source's analytics: zones with their occupancy, lines with their
/// counts since the start, in frame pixels. Shared by every frame until something changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionsView {
    pub zones: Vec<ZoneView>,
    pub lines: Vec<LineView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZoneView {
    pub name: String,
    pub points: Vec<(f32, f32)>,
    /// Confirmed tracks in it now.
    pub occupancy: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineView {
    pub name: String,
    pub points: Vec<(f32, f32)>,
    /// `(direction, crossings since the start)`, both directions.
    pub counts: [(String, u64); 2],
}

/// A track seen so far (for its `end` event).
#[derive(Debug, Clone)]
struct OpenTrack {
    class_id: u32,
    /// Best score seen.
    score: f32,
    bbox: [f32; 4],
    first_seq: u64,
    last_seq: u64,
    frames: u64,
}

/// Start and end of tracks: `start` the first frame a track id is seen, `end` once it has been
/// missing for `end_after` frames (or at end of stream).
#[derive(Debug)]
pub struct TrackLifecycle {
    open: BTreeMap<u64, OpenTrack>,
    end_after: u64,
    last: (u64, f64),
}

impl TrackLifecycle {
    pub fn new(end_after: u32) -> Self {
        Self {
            open: BTreeMap::new(),
            end_after: u64::from(end_after.max(1)),
            last: (0, 0.0),
        }
    }

    fn event(kind: EventKind, id: u64, t: &OpenTrack, (seq, time_s): (u64, f64)) -> Event {
        let mut e = Event::new(kind, seq, time_s, "");
        e.track_id = Some(id);
        e.class_id = Some(t.class_id);
        e.score = Some(t.score);
        e.bbox = Some(t.bbox);
        e.first_seq = Some(t.first_seq);
        e.last_seq = Some(t.last_seq);
        e.frames = Some(t.frames);
        e
    }

    /// Events of frame `seq` at stream time `time_s` with its tracked `detections`.
    pub fn update(&mut self, seq: u64, time_s: f64, detections: &[Detection]) -> Vec<Event> {
        self.last = (seq, time_s);
        let mut out = Vec::new();
        for d in detections {
            let Some(id) = d.track_id else { continue };
            let b = d.box_in_frame.0;
            let bbox = [b.x1, b.y1, b.x2, b.y2];
            if let Some(t) = self.open.get_mut(&id) {
                t.last_seq = seq;
                t.frames += 1;
                t.bbox = bbox;
                t.score = t.score.max(d.score);
                continue;
            }
            let t = OpenTrack {
                class_id: d.class_id,
                score: d.score,
                bbox,
                first_seq: seq,
                last_seq: seq,
                frames: 1,
            };
            out.push(Self::event(EventKind::Start, id, &t, self.last));
            self.open.insert(id, t);
        }
        let end_after = self.end_after;
        let gone: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, t)| seq.saturating_sub(t.last_seq) >= end_after)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(t) = self.open.remove(&id) {
                out.push(Self::event(EventKind::End, id, &t, self.last));
            }
        }
        out
    }

    /// End of stream: every open track ends.
    pub fn finish(&mut self) -> Vec<Event> {
        let at = self.last;
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|(id, t)| Self::event(EventKind::End, id, &t, at))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{BoxInFrame, Xyxy};

    fn dets(seq: u64, ids: &[u64]) -> Vec<Detection> {
        ids.iter()
            .map(|&id| Detection {
                class_id: 0,
                score: 0.5 + seq as f32 / 100.0,
                box_in_frame: BoxInFrame(Xyxy {
                    x1: 0.0,
                    y1: 0.0,
                    x2: 10.0,
                    y2: 10.0 + seq as f32,
                }),
                track_id: Some(id),
            })
            .collect()
    }

    #[test]
    fn tracks_start_once_and_end_after_absence() {
        let mut ev = TrackLifecycle::new(3);
        let mut all = Vec::new();
        let script: [&[u64]; 8] = [&[1], &[1, 2], &[2], &[2], &[2], &[], &[], &[]];
        for (seq, ids) in script.iter().enumerate() {
            let seq = seq as u64;
            all.extend(ev.update(seq, seq as f64 / 10.0, &dets(seq, ids)));
        }
        let kinds: Vec<(EventKind, Option<u64>, u64)> =
            all.iter().map(|e| (e.kind, e.track_id, e.seq)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Start, Some(1), 0),
                (EventKind::Start, Some(2), 1),
                (EventKind::End, Some(1), 4),
                (EventKind::End, Some(2), 7)
            ]
        );
        let end1 = &all[2];
        assert_eq!(
            (end1.first_seq, end1.last_seq, end1.frames),
            (Some(0), Some(1), Some(2))
        );
        assert!((end1.score.unwrap() - 0.51).abs() < 1e-6);
        assert!(ev.finish().is_empty());
    }

    #[test]
    fn open_tracks_end_at_end_of_stream() {
        let mut ev = TrackLifecycle::new(30);
        ev.update(0, 0.0, &dets(0, &[5, 6]));
        let ends = ev.finish();
        assert_eq!(ends.len(), 2);
        assert!(ends.iter().all(|e| e.kind == EventKind::End));
    }
}
