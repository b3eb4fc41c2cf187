//! Short trails of recent positions per track, for the overlay. Bounded: at most `TRAIL_POINTS`
//! points a track, and a trail is forgotten once its track has not been seen for `TRAIL_POINTS`
//! frames.

use std::collections::{HashMap, VecDeque};

use crate::frame::{Detection, Trail};

/// Points kept per trail (and frames an unseen trail is kept).
pub const TRAIL_POINTS: usize = 30;

#[derive(Debug, Default)]
pub struct Trails {
    by_track: HashMap<u64, (u64, VecDeque<(f32, f32)>)>,
    frame: u64,
}

impl Trails {
    /// Add this frame's tracked detections; returns the trails of the tracks seen in it, by id.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<Trail> {
        self.frame += 1;
        let mut out = Vec::new();
        for d in detections {
            let Some(id) = d.track_id else { continue };
            let b = d.box_in_frame.0;
            let (seen, pts) = self.by_track.entry(id).or_default();
            *seen = self.frame;
            if pts.len() == TRAIL_POINTS {
                pts.pop_front();
            }
            pts.push_back(((b.x1 + b.x2) / 2.0, b.y2));
            out.push(Trail {
                track_id: id,
                points: pts.iter().copied().collect(),
            });
        }
        let frame = self.frame;
        self.by_track
            .retain(|_, (seen, _)| frame - *seen <= TRAIL_POINTS as u64);
        out.sort_by_key(|t| t.track_id);
        out
    }

    pub fn len(&self) -> usize {
        self.by_track.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_track.is_empty()
    }
}
