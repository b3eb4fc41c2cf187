//! Events: what the analytics made of the tracks (a zone entered, a line crossed, a dwell, the
//! counts of an interval). They travel on the frame they happened in, from the track stage to the
//! outputs, which add the pipeline, source, class names and wall-clock time ([`EventRecord`] in
//! `output::record`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
