//! Start and end of tracks as events (`start` the first frame a track id is seen, `end` once it
//! has been missing for a while): what MQTT's `publish: events` adds to the zone and line events.

use std::collections::BTreeMap;

use crate::event::{Event, EventKind};
use crate::frame::Detection;

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
                mask: None,
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
