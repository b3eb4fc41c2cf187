//! Analytics: tracks turned into events people act on — zones (enter, exit, dwell, occupancy),
//! directional line crossing, and per-interval counts.
//!
//! Counting right is the point. A track is followed by one anchor point of its box (bottom centre
//! by default: where a person stands). A line keeps, per track, the side the anchor was last
//! *committed* to — at least `hysteresis` pixels away from the line — and counts a crossing only
//! when the anchor commits to the other side and the way between crossed the line itself (not
//! round its end). Box jitter inside the band never counts; a track lost and found again under
//! the same ID keeps its side, so it counts once. A zone changes a track's state only after
//! `inertia` frames in a row on the other side of its edge. Tracks count once confirmed
//! (`min_hits` frames seen); before that their state is kept but nothing is reported.

pub mod geometry;
pub mod spec;

use std::collections::{BTreeMap, HashMap};

use crate::event::{Event, EventKind, LineView, RegionsView, ZoneView};
use crate::frame::Detection;
use geometry::Pt;
pub use spec::{AnalyticsSpec, Anchor, Coords, LineSpec, ZoneSpec};

/// A zone, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSettings {
    pub name: String,
    /// Corners, in frame pixels, or in 0–1 of the frame size when `coords` is normalized.
    pub points: Vec<[f64; 2]>,
    pub coords: Coords,
    /// `None`: every class.
    pub classes: Option<Vec<u32>>,
    /// Seconds in the zone before a `dwell` event; `None`: no dwell events.
    pub min_dwell_s: Option<f64>,
    /// Frames in a row on the other side of the edge before a track's state changes.
    pub inertia: u32,
    pub anchor: Anchor,
}

/// A line, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LineSettings {
    pub name: String,
    /// Two or more points, in frame pixels or 0–1 (`coords`).
    pub points: Vec<[f64; 2]>,
    pub coords: Coords,
    pub classes: Option<Vec<u32>>,
    /// Pixels the anchor must be from the line to be on a side.
    pub hysteresis: f64,
    /// Names of the two directions: from the left-hand side to the right-hand side of someone
    /// walking the line from its first point to its last, and back.
    pub left_to_right: String,
    pub right_to_left: String,
    pub anchor: Anchor,
}

/// The analytics of one source.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnalyticsSettings {
    pub zones: Vec<ZoneSettings>,
    pub lines: Vec<LineSettings>,
    /// Frames a track must be seen before it counts.
    pub min_hits: u32,
    /// Frames a track may be missing before it is forgotten (then `exit` with `lost`).
    pub forget_after: u64,
    /// Seconds between `count` events; `None`: no count events.
    pub count_every_s: Option<f64>,
}

impl AnalyticsSettings {
    /// No zones and no lines: nothing to do.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.lines.is_empty()
    }
}

/// Where one track stands with one zone.
#[derive(Debug, Clone, Default)]
struct ZoneState {
    inside: bool,
    /// Consecutive frames observed on the other side of `inside`.
    against: u32,
    /// Stream time it entered (for dwell).
    since_s: f64,
    dwell_reported: bool,
    /// `inside` has been reported with `enter` (the track was confirmed when it was).
    reported: bool,
    /// The class it entered as: its exit and the occupancy count under that class even if the
    /// detector has changed its mind since (car ↔ truck).
    class_id: u32,
}

/// One track as the analytics follow it.
#[derive(Debug, Clone)]
struct TrackState {
    hits: u32,
    last_seq: u64,
    /// Per line: the side the anchor is committed to (`true`: right-hand) and where it was then.
    sides: Vec<Option<(bool, Pt)>>,
    zones: Vec<ZoneState>,
}

/// Counts of one zone or line since the last `count` event.
#[derive(Debug, Clone, Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
}

/// The zones and lines in frame pixels for one frame size.
#[derive(Debug, Clone)]
struct Geometry {
    size: (u32, u32),
    zones: Vec<Vec<Pt>>,
    lines: Vec<Vec<Pt>>,
}

/// Live analytics of one source.
#[derive(Debug)]
pub struct Analytics {
    settings: AnalyticsSettings,
    geometry: Option<Geometry>,
    tracks: HashMap<u64, TrackState>,
    zone_tally: Vec<Tally>,
    line_tally: Vec<Tally>,
    /// Start of the current count interval, stream seconds.
    interval_start: Option<f64>,
    /// Crossings since the start per line, `[left_to_right, right_to_left]` (for the overlay).
    line_totals: Vec<[u64; 2]>,
}

fn to_pixels(points: &[[f64; 2]], coords: Coords, size: (u32, u32)) -> Vec<Pt> {
    let (sx, sy) = match coords {
        Coords::Pixels => (1.0, 1.0),
        Coords::Normalized => (f64::from(size.0), f64::from(size.1)),
    };
    points
        .iter()
        .map(|p| Pt {
            x: p[0] * sx,
            y: p[1] * sy,
        })
        .collect()
}

fn anchor_of(d: &Detection, anchor: Anchor) -> Pt {
    let b = d.box_in_frame.0;
    let x = f64::from(b.x1 + b.x2) / 2.0;
    let y = match anchor {
        Anchor::BottomCenter => f64::from(b.y2),
        Anchor::Center => f64::from(b.y1 + b.y2) / 2.0,
    };
    Pt { x, y }
}

fn wants(classes: &Option<Vec<u32>>, class_id: u32) -> bool {
    classes.as_ref().is_none_or(|c| c.contains(&class_id))
}

/// A track's event about `region` at this frame.
fn track_event(kind: EventKind, at: (u64, f64), region: &str, id: u64, d: &Detection) -> Event {
    let b = d.box_in_frame.0;
    let mut e = Event::new(kind, at.0, at.1, region);
    e.track_id = Some(id);
    e.class_id = Some(d.class_id);
    e.score = Some(d.score);
    e.bbox = Some([b.x1, b.y1, b.x2, b.y2]);
    e
}

impl Analytics {
    pub fn new(settings: AnalyticsSettings) -> Self {
        Self {
            zone_tally: vec![Tally::default(); settings.zones.len()],
            line_tally: vec![Tally::default(); settings.lines.len()],
            line_totals: vec![[0; 2]; settings.lines.len()],
            settings,
            geometry: None,
            tracks: HashMap::new(),
            interval_start: None,
        }
    }

    pub fn settings(&self) -> &AnalyticsSettings {
        &self.settings
    }

    /// The zones and lines in frame pixels for frames of `size` (normalized ones scaled).
    pub fn pixels(&mut self, size: (u32, u32)) -> (&[Vec<Pt>], &[Vec<Pt>]) {
        let g = self.geometry_for(size);
        (&g.zones, &g.lines)
    }

    fn geometry_for(&mut self, size: (u32, u32)) -> &Geometry {
        if self.geometry.as_ref().is_some_and(|g| g.size != size) {
            self.geometry = None;
        }
        let s = &self.settings;
        self.geometry.get_or_insert_with(|| Geometry {
            size,
            zones: s
                .zones
                .iter()
                .map(|z| to_pixels(&z.points, z.coords, size))
                .collect(),
            lines: s
                .lines
                .iter()
                .map(|l| to_pixels(&l.points, l.coords, size))
                .collect(),
        })
    }

    /// The zones (with occupancy) and lines (with counts since the start) for the overlay.
    pub fn view(&mut self, size: (u32, u32)) -> RegionsView {
        let occupancy = self.occupancy();
        let g = self.geometry_for(size).clone();
        let points = |p: &[Pt]| p.iter().map(|p| (p.x as f32, p.y as f32)).collect();
        let s = &self.settings;
        RegionsView {
            zones: s
                .zones
                .iter()
                .zip(&g.zones)
                .zip(occupancy)
                .map(|((z, p), o)| ZoneView {
                    name: z.name.clone(),
                    points: points(p),
                    occupancy: o.values().sum(),
                })
                .collect(),
            lines: s
                .lines
                .iter()
                .zip(&g.lines)
                .zip(&self.line_totals)
                .map(|((l, p), t)| LineView {
                    name: l.name.clone(),
                    points: points(p),
                    counts: [
                        (l.left_to_right.clone(), t[0]),
                        (l.right_to_left.clone(), t[1]),
                    ],
                })
                .collect(),
        }
    }

    /// Tracks in each zone now, by class (confirmed and reported ones).
    pub fn occupancy(&self) -> Vec<BTreeMap<u32, u64>> {
        let mut out = vec![BTreeMap::new(); self.settings.zones.len()];
        for t in self.tracks.values() {
            for (zi, z) in t.zones.iter().enumerate() {
                if z.inside && z.reported {
                    *out[zi].entry(z.class_id).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// One frame: the tracked detections of frame `seq` at stream time `time_s`, of a frame of
    /// `size`. Detections without a track id are ignored. Returns the events, in order.
    pub fn update(
        &mut self,
        seq: u64,
        time_s: f64,
        size: (u32, u32),
        detections: &[Detection],
    ) -> Vec<Event> {
        let mut events = Vec::new();
        self.geometry_for(size);
        // lent out for the frame (not cloned: this runs on every frame)
        if let Some(geometry) = self.geometry.take() {
            for d in detections {
                let Some(id) = d.track_id else { continue };
                self.observe(&geometry, (seq, time_s), id, d, &mut events);
            }
            self.geometry = Some(geometry);
        }
        self.forget_lost(seq, time_s, &mut events);
        self.maybe_count(seq, time_s, &mut events);
        events
    }

    /// End of stream: tracks still in zones are reported lost, and the last interval's counts.
    pub fn finish(&mut self, seq: u64, time_s: f64) -> Vec<Event> {
        let mut events = Vec::new();
        let ids: Vec<u64> = self.tracks.keys().copied().collect();
        for id in ids {
            self.drop_track(id, (seq, time_s), &mut events);
        }
        if self.settings.count_every_s.is_some() && self.interval_start.is_some() {
            self.emit_counts(seq, time_s, &mut events);
        }
        events
    }

    fn observe(
        &mut self,
        g: &Geometry,
        at: (u64, f64),
        id: u64,
        d: &Detection,
        events: &mut Vec<Event>,
    ) {
        let (nl, nz) = (self.settings.lines.len(), self.settings.zones.len());
        let mut t = self.tracks.remove(&id).unwrap_or_else(|| TrackState {
            hits: 0,
            last_seq: at.0,
            sides: vec![None; nl],
            zones: vec![ZoneState::default(); nz],
        });
        t.hits = t.hits.saturating_add(1);
        t.last_seq = at.0;
        let confirmed = t.hits >= self.settings.min_hits;
        for (li, line) in self.settings.lines.iter().enumerate() {
            if !wants(&line.classes, d.class_id) {
                continue;
            }
            let p = anchor_of(d, line.anchor);
            if let Some(dir) = step_line(&mut t.sides[li], &g.lines[li], line.hysteresis, p)
                && confirmed
            {
                let name = if dir {
                    &line.left_to_right
                } else {
                    &line.right_to_left
                };
                self.line_totals[li][usize::from(!dir)] += 1;
                let mut e = track_event(EventKind::Cross, at, &line.name, id, d);
                e.direction = Some(name.clone());
                events.push(e);
                *self.line_tally[li]
                    .counts
                    .entry(format!("{name}/{}", d.class_id))
                    .or_insert(0) += 1;
            }
        }
        for zi in 0..self.settings.zones.len() {
            let zone = &self.settings.zones[zi];
            if !wants(&zone.classes, d.class_id) {
                continue;
            }
            let inside = geometry::inside(&g.zones[zi], anchor_of(d, zone.anchor));
            let z = &mut t.zones[zi];
            step_zone(z, inside, zone.inertia, at.1);
            if confirmed {
                self.report_zone(zi, at, id, d, events, z);
            }
        }
        self.tracks.insert(id, t);
    }

    /// Events of one track's zone state after a frame: `enter`/`exit` when the state changed
    /// since last reported, `dwell` once per visit.
    fn report_zone(
        &mut self,
        zi: usize,
        at: (u64, f64),
        id: u64,
        d: &Detection,
        events: &mut Vec<Event>,
        z: &mut ZoneState,
    ) {
        let zone = &self.settings.zones[zi];
        if z.inside && !z.reported {
            z.reported = true;
            z.class_id = d.class_id;
            events.push(track_event(EventKind::Enter, at, &zone.name, id, d));
            *self.zone_tally[zi]
                .counts
                .entry(format!("enter/{}", d.class_id))
                .or_insert(0) += 1;
        } else if !z.inside && z.reported {
            z.reported = false;
            let mut e = track_event(EventKind::Exit, at, &zone.name, id, d);
            e.class_id = Some(z.class_id);
            e.dwell_s = Some(at.1 - z.since_s);
            events.push(e);
        }
        if let Some(min) = zone.min_dwell_s
            && z.inside
            && z.reported
            && !z.dwell_reported
            && at.1 - z.since_s >= min
        {
            z.dwell_reported = true;
            let mut e = track_event(EventKind::Dwell, at, &zone.name, id, d);
            e.dwell_s = Some(at.1 - z.since_s);
            events.push(e);
        }
    }

    fn forget_lost(&mut self, seq: u64, time_s: f64, events: &mut Vec<Event>) {
        let after = self.settings.forget_after;
        let gone: Vec<u64> = self
            .tracks
            .iter()
            .filter(|(_, t)| seq.saturating_sub(t.last_seq) > after)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.drop_track(id, (seq, time_s), events);
        }
    }

    /// Forget a track; zones it was reported in get an `exit` marked `lost`.
    fn drop_track(&mut self, id: u64, at: (u64, f64), events: &mut Vec<Event>) {
        let Some(t) = self.tracks.remove(&id) else {
            return;
        };
        for (zi, z) in t.zones.iter().enumerate() {
            if z.inside && z.reported {
                let mut e = Event::new(EventKind::Exit, at.0, at.1, &self.settings.zones[zi].name);
                e.track_id = Some(id);
                e.class_id = Some(z.class_id);
                e.dwell_s = Some(at.1 - z.since_s);
                e.lost = true;
                events.push(e);
            }
        }
    }

    fn maybe_count(&mut self, seq: u64, time_s: f64, events: &mut Vec<Event>) {
        let Some(every) = self.settings.count_every_s else {
            return;
        };
        // a live source that reconnected may start its clock again: so does the interval
        let start = match self.interval_start {
            Some(start) if start <= time_s => start,
            _ => *self.interval_start.insert(time_s),
        };
        if time_s - start >= every {
            self.emit_counts(seq, time_s, events);
        }
    }

    /// A `count` event per zone and line for the interval that ends now.
    fn emit_counts(&mut self, seq: u64, time_s: f64, events: &mut Vec<Event>) {
        let since = self.interval_start.unwrap_or(time_s);
        let occupancy = self.occupancy();
        for (zi, zone) in self.settings.zones.iter().enumerate() {
            let mut e = Event::new(EventKind::Count, seq, time_s, &zone.name);
            e.counts = std::mem::take(&mut self.zone_tally[zi].counts);
            e.occupancy = occupancy[zi]
                .iter()
                .map(|(class, n)| (class.to_string(), *n))
                .collect();
            e.since_s = Some(since);
            events.push(e);
        }
        for (li, line) in self.settings.lines.iter().enumerate() {
            let mut e = Event::new(EventKind::Count, seq, time_s, &line.name);
            e.counts = std::mem::take(&mut self.line_tally[li].counts);
            e.since_s = Some(since);
            events.push(e);
        }
        self.interval_start = Some(time_s);
    }
}

/// One observation of a track against a line. Returns the direction of a crossing (`true`: to
/// the right-hand side) when the anchor commits to the other side and the way from where it was
/// last committed crossed the line.
fn step_line(side: &mut Option<(bool, Pt)>, line: &[Pt], hysteresis: f64, p: Pt) -> Option<bool> {
    let d = geometry::signed_distance(line, p);
    if d == 0.0 || d.abs() < hysteresis {
        return None;
    }
    let right = d > 0.0;
    let crossed = match *side {
        Some((was_right, from)) if was_right != right => {
            geometry::crossing(line, from, p).map(|_| right)
        }
        _ => None,
    };
    *side = Some((right, p));
    crossed
}

/// One observation of a track against a zone: the state flips after `inertia` frames in a row
/// on the other side.
fn step_zone(z: &mut ZoneState, inside: bool, inertia: u32, time_s: f64) {
    if time_s < z.since_s {
        // the stream's clock started again (a live source reconnected): dwell counts from now
        z.since_s = time_s;
    }
    if inside == z.inside {
        z.against = 0;
        return;
    }
    z.against += 1;
    if z.against >= inertia.max(1) {
        z.inside = inside;
        z.against = 0;
        if inside {
            z.since_s = time_s;
            z.dwell_reported = false;
        }
    }
}
